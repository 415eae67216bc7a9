"""Environment creation and checks: clear errors, plug-in envs, flattening, every env family DQN supports."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th

from qiter.dqn import DQNConfig, QNetwork, evaluate_policy, run_dqn, train
from qiter.envs import check_env_id, make_env, require_box_observations, require_discrete_actions
from qiter.errors import QiterError


def test_unknown_id_suggests_close_names() -> None:
    with pytest.raises(QiterError, match="Did you mean: CartPole-v1"):
        check_env_id("CartPol-v1")
    with pytest.raises(QiterError, match="qiter envs"):
        check_env_id("NoSuchThingAtAll-v0")


def test_removed_version_names_the_current_one() -> None:
    with pytest.raises(QiterError, match="use one of: Taxi-v4"):
        make_env("Taxi-v3")


def test_flatten_makes_a_flat_box() -> None:
    env = make_env("FrozenLake-v1", flatten=True)  # Discrete stays Discrete: tabular code needs it
    assert isinstance(env.observation_space, gym.spaces.Discrete)
    env = make_env("CartPole-v1", flatten=True)
    assert env.observation_space.shape == (4,)


def test_space_checks_explain_what_is_supported() -> None:
    with pytest.raises(QiterError, match=r"Discrete action space, but Pendulum-v1"):
        require_discrete_actions(make_env("Pendulum-v1"), "DQN")
    with pytest.raises(QiterError, match="tabular"):
        require_box_observations(make_env("FrozenLake-v1"), "DQN")


@pytest.mark.parametrize("env_id", ["FlappyBird-v0", "LunarLander-v3", "MountainCar-v0", "Acrobot-v1"])
def test_dqn_runs_on_the_seed_environments(env_id: str) -> None:
    config = DQNConfig(
        env_id=env_id,
        n_timesteps=400,
        learning_starts=100,
        evaluation_interval=400,
        n_eval_episodes=1,
        seed=0,
    )
    result = train(config, progress=False, verbose=0)
    assert result.steps == 400 and result.final_eval is not None


def test_flappy_bird_float64_observations_as_in_the_seed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The seed trains FlappyBird in float64 and loads its checkpoints into a `.double()` network."""
    q_net = run_dqn(
        env_id="FlappyBird-v0",
        n_timesteps=300,
        learning_starts=100,
        evaluation_interval=300,
        n_eval_episodes=1,
        n_hidden_units=32,
        checkpoint_folder=tmp_path,
        progress=False,
    )
    assert next(q_net.parameters()).dtype == th.float64
    env = make_env("FlappyBird-v0")
    assert env.observation_space.dtype == np.float64
    loaded = QNetwork(env.observation_space, env.action_space, n_hidden_units=32).double()
    loaded.load_state_dict(th.load(tmp_path / "q_net_checkpoint_FlappyBird-v0_300.pth"))
    mean, _ = evaluate_policy(env, loaded, 1)
    assert np.isfinite(mean)
