"""The population's replay buffers against the single agent's: the same transitions, the same samples.

Each agent's block of a :class:`~qiter.population.buffer.PopulationBuffer` must give, at any position, what
a :class:`~qiter.buffers.ReplayBuffer` fed the same agent's transitions gives there: one-step transitions,
and n-step returns cut at episode ends (terminated or truncated), at the newest transition, across the
ring's wrap-around, with several environment copies per agent, and at the first non-greedy action.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from qiter.buffers import ReplayBuffer
from qiter.core.arrays import Ops, make_ops
from qiter.population.buffer import PopulationBuffer, buffer_capacity
from qiter.population.streams import Streams

OBS_DIM, N_ACTIONS = 3, 3
GAMMAS = (0.9, 0.99)  # one per agent: n-step discounts are each agent's own


def fill(
    ops: Ops, n_envs: int, n_steps: int, capacity: int, n_writes: int, seed: int = 0
) -> tuple[PopulationBuffer, list[ReplayBuffer]]:
    """A population buffer of two agents and one ReplayBuffer per agent, fed the same random transitions
    (about one in six ends an episode, half of those by truncation; the actions are often greedy)."""
    rng = np.random.default_rng(seed)
    n = len(GAMMAS)
    population = PopulationBuffer(
        ops, Streams(ops, range(n)), capacity, OBS_DIM, n_envs, n_steps, ops.asarray(np.array(GAMMAS))
    )
    space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    singles = [
        ReplayBuffer(capacity, space, spaces.Discrete(N_ACTIONS), n_steps=n_steps, gamma=g, n_envs=n_envs)
        for g in GAMMAS
    ]
    copies = n * n_envs
    for _ in range(n_writes):
        obs = rng.normal(size=(copies, OBS_DIM)).astype(np.float32)
        next_obs = rng.normal(size=(copies, OBS_DIM)).astype(np.float32)
        greedy = obs.argmax(1)
        actions = np.where(rng.random(copies) < 0.7, greedy, rng.integers(N_ACTIONS, size=copies))
        rewards = rng.normal(size=copies)
        ends = rng.random(copies)
        terminateds, truncateds = ends < 0.08, (ends >= 0.08) & (ends < 0.16)
        population.add(
            *(ops.asarray(x, t) for x, t in ((obs, "float32"), (actions, "int64"), (rewards, "float64"))),
            ops.asarray(next_obs, "float32"),
            ops.asarray(terminateds, "bool"),
            ops.asarray(terminateds | truncateds, "bool"),
        )
        for i, single in enumerate(singles):
            part = slice(i * n_envs, (i + 1) * n_envs)
            single.add(
                obs[part], next_obs[part], actions[part], rewards[part], terminateds[part], truncateds[part]
            )
    return population, singles


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(
    ("n_envs", "n_steps", "cut", "n_writes"),
    [
        (1, 1, False, 30),  # one-step transitions, the ring wrapped
        (1, 3, False, 10),  # n-step, the ring not yet full: traces stop at the newest transition
        (1, 3, False, 37),  # n-step across the wrap-around
        (3, 4, False, 23),  # several copies per agent: a trace follows its own copy
        (2, 3, True, 29),  # traces cut at the first action the greedy policy would not take
    ],
)
def test_samples_equal_the_single_agent_buffer(
    backend: str, n_envs: int, n_steps: int, cut: bool, n_writes: int
) -> None:
    ops = make_ops(backend, "cpu")
    capacity = 24 - 24 % n_envs
    population, singles = fill(ops, n_envs, n_steps, capacity, n_writes)
    size = len(singles[0])
    assert int(population.size) == size and int(population.pos) == singles[0].current_idx
    index = np.tile(np.arange(size), (len(GAMMAS), 1))  # every stored position of each agent
    greedy = (lambda x: ops.argmax(x, -1)) if cut else None
    obs, actions, rewards, next_obs, terminateds, discounts = (
        None if x is None else ops.to_numpy(x)
        for x in population.samples_at(ops.asarray(index, "int64"), greedy)
    )
    for i, single in enumerate(singles):
        expected = single.get_samples(index[i], (lambda x: x.argmax(-1)) if cut else None)
        np.testing.assert_array_equal(obs[i], expected.observations)
        np.testing.assert_array_equal(actions[i], expected.actions.reshape(-1))
        np.testing.assert_allclose(rewards[i], expected.rewards, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(next_obs[i], expected.next_observations)
        np.testing.assert_array_equal(terminateds[i], expected.terminateds)
        if n_steps == 1:
            assert discounts is None and expected.discounts is None
        else:
            np.testing.assert_allclose(discounts[i], expected.discounts, rtol=1e-6)
    if n_steps > 1:
        # The cases reach what they are for: traces of every length, cut short and whole.
        lengths = np.round(np.log(discounts) / np.log(np.array(GAMMAS))[:, None]).astype(int)
        assert set(np.unique(lengths)) == set(range(1, n_steps + 1))


def test_capacity_is_whole_steps_of_the_copies() -> None:
    assert buffer_capacity(1000, 50_000, 1) == 1000
    assert buffer_capacity(1000, 500, 1) == 500  # no more than the run stores
    assert buffer_capacity(1000, 50_000, 3) == 999
    assert buffer_capacity(1000, 501, 4) == 504  # the run stores 126 steps of 4 copies
