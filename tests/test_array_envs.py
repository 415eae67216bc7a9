"""The array environments against gymnasium, transition by transition, on both backends."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qiter.core.arrays import NumpyOps, Ops, TorchOps
from qiter.errors import QiterError
from qiter.population.array_envs import ARRAY_ENVS, make_array_env
from qiter.population.streams import Streams

BACKENDS = [NumpyOps(), TorchOps("cpu")]


def _state_of(env: gym.Env) -> np.ndarray:
    return np.array(env.unwrapped.state, dtype=np.float64)


def _action(env: gym.Env, rng: np.random.Generator) -> object:
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(-2.5, 2.5, size=(1,)).astype(np.float32)  # beyond the bounds: the env clips


@pytest.mark.parametrize("ops", BACKENDS, ids=lambda o: o.name)
@pytest.mark.parametrize("env_id", list(ARRAY_ENVS))
def test_transitions_match_gymnasium(env_id: str, ops: Ops) -> None:
    """From gymnasium's own states, with the same actions: same observation, reward, terminated, truncated."""
    env = gym.make(env_id)
    ours = make_array_env(env_id, 1, ops)
    rng = np.random.default_rng(1)
    env.reset(seed=3)
    ours.reset()
    n_terminated = n_truncated = 0
    for _ in range(1500):
        ours.set_state(ops.asarray(_state_of(env)[None], "float64"))
        action = _action(env, rng)
        obs, reward, terminated, truncated, _ = env.step(action)
        # One copy: actions (1,) integers, or (1, 1) torques.
        discrete = np.ndim(action) == 0
        out = ours.step(ops.asarray(np.array([action]), "int64" if discrete else "float32"))
        np.testing.assert_allclose(ops.to_numpy(out.final_observations)[0], obs, rtol=1e-5, atol=1e-6)
        assert float(ops.to_numpy(out.rewards)[0]) == pytest.approx(float(reward), rel=1e-6, abs=1e-6)
        assert bool(ops.to_numpy(out.terminateds)[0]) == terminated
        assert bool(ops.to_numpy(out.truncateds)[0]) == truncated
        n_terminated += terminated
        n_truncated += truncated
        if terminated or truncated:
            env.reset()
            ours.reset()
    # The walk visited both kinds of ends where the env has them (Pendulum never terminates).
    assert n_truncated + n_terminated > 0


@pytest.mark.parametrize("env_id", list(ARRAY_ENVS))
def test_initial_states_and_autoreset(env_id: str) -> None:
    """Initial states lie in gymnasium's reset ranges; finished copies restart with elapsed steps at 0."""
    ops = NumpyOps()
    env = make_array_env(env_id, 256, ops)
    obs = env.reset()
    reference = gym.make(env_id)
    firsts = np.stack([reference.reset(seed=s)[0] for s in range(256)])
    # Same support: every observation within the range gymnasium's own first observations span (+ slack).
    span = firsts.max(0) - firsts.min(0) + 1e-6
    assert np.all(obs >= firsts.min(0) - 0.05 * span) and np.all(obs <= firsts.max(0) + 0.05 * span)
    actions = np.zeros((256, 1), np.float32) if env.n_actions is None else np.zeros(256, np.int64)
    for _ in range(env.max_episode_steps):
        out = env.step(actions)
    assert np.all(out.truncateds | out.terminateds | (env.elapsed > 0))
    assert np.all(env.elapsed < env.max_episode_steps)


def test_unknown_env_lists_the_supported() -> None:
    with pytest.raises(QiterError, match="CartPole-v1, Acrobot-v1, MountainCar-v0, Pendulum-v1"):
        make_array_env("FlappyBird-v0", 4, NumpyOps())


@pytest.mark.parametrize("env_id", list(ARRAY_ENVS))
def test_a_copy_resets_alike_alone_among_others_and_on_a_gpu_schedule(env_id: str) -> None:
    """Copy 2 of 8 (seeds 10-17) and a lone copy seeded 12 see the same episodes under the same actions;
    an env that draws at every step, as on a GPU, makes the same ones as the CPU's skipping draws."""
    ops = NumpyOps()
    many = make_array_env(env_id, 8, ops, Streams(ops, range(10, 18)))
    alone = make_array_env(env_id, 1, ops, Streams(ops, [12]))
    always = make_array_env(env_id, 8, ops, Streams(ops, range(10, 18)))
    always.on_host = False
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(many.reset()[2], alone.reset()[0])
    always.reset()
    for _ in range(600):
        if many.n_actions is None:
            actions = rng.uniform(-2, 2, (8, 1)).astype(np.float32)
        else:
            actions = rng.integers(0, many.n_actions, 8)
        a, b, c = many.step(actions), alone.step(actions[2:3]), always.step(actions)
        np.testing.assert_array_equal(a.observations[2], b.observations[0])
        np.testing.assert_array_equal(a.observations, c.observations)
