"""The population learner: each agent's slice does what the single-agent numpy learner does."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.buffers.replay import ReplayBufferSamples
from qiter.dqn.fast import NumpyLearner
from qiter.dqn.learner import TDSettings
from qiter.dqn.networks import QNetwork
from qiter.population.arrays import NumpyOps, Ops, TorchOps
from qiter.population.learner import AgentSettings, PopulationLearner
from qiter.population.streams import Streams

OBS, ACTIONS, BATCH = 4, 3, 16
LR = [1e-3, 3e-4, 1e-2]
GAMMA = [0.99, 0.9, 0.5]
DOUBLE = [False, True, True]


def _single(agent: int, loss: str, max_grad_norm: float | None) -> NumpyLearner:
    th.manual_seed(agent)
    box = spaces.Box(-1, 1, (OBS,), np.float32)
    q_net = QNetwork(box, spaces.Discrete(ACTIONS), n_hidden_units=8)
    settings = TDSettings(LR[agent], GAMMA[agent], DOUBLE[agent], loss, max_grad_norm)
    return NumpyLearner(q_net, copy.deepcopy(q_net), settings)


def _batches(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    return (
        rng.normal(size=(n, BATCH, OBS)).astype(np.float32),
        rng.integers(0, ACTIONS, (n, BATCH)),
        rng.normal(size=(n, BATCH)).astype(np.float32),
        rng.normal(size=(n, BATCH, OBS)).astype(np.float32),
        rng.random((n, BATCH)) < 0.2,
    )


@pytest.mark.parametrize("ops", [NumpyOps(), TorchOps("cpu")], ids=lambda o: o.name)
@pytest.mark.parametrize(("loss", "max_grad_norm"), [("mse", None), ("huber", 0.5)])
def test_agents_match_single_learners(ops: Ops, loss: str, max_grad_norm: float | None) -> None:
    """Three agents with their own learning rate, gamma and Double DQN flag, 20 updates and a target copy:
    every agent's weights equal a single NumpyLearner's with its settings."""
    n = 3
    singles = [_single(i, loss, max_grad_norm) for i in range(n)]
    settings = AgentSettings(np.array(LR), np.array(GAMMA), np.array(DOUBLE))
    pop = PopulationLearner(ops, n, [OBS, 8, 8, ACTIONS], settings, loss=loss, max_grad_norm=max_grad_norm)
    for i, single in enumerate(singles):  # start from the single learners' weights
        for w, b, sw, sb in zip(pop.weights, pop.biases, single.q.weights, single.q.biases):
            w[i] = ops.asarray(sw.T)
            b[i, 0] = ops.asarray(sb)
    pop.update_target()
    rng = np.random.default_rng(0)
    for k in range(20):
        obs, actions, rewards, next_obs, terms = _batches(rng, n)
        pop.update(ops.asarray(obs), ops.asarray(actions, "int64"), ops.asarray(rewards),
                   ops.asarray(next_obs), ops.asarray(terms, "bool"))  # fmt: skip
        for i, single in enumerate(singles):
            single.update(ReplayBufferSamples(obs[i], next_obs[i], actions[i][:, None], rewards[i], terms[i]))
        if k == 9:
            pop.update_target()
            for single in singles:
                single.update_target()
    layers = pop.layers()
    for i, single in enumerate(singles):
        for (w, b), sw, sb in zip([(w[i], b[i]) for w, b in layers], single.q.weights, single.q.biases):
            np.testing.assert_allclose(w, sw.T, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(b, sb, rtol=1e-4, atol=1e-6)


def test_target_mask_copies_only_the_due_agents() -> None:
    ops = NumpyOps()
    settings = AgentSettings(np.full(2, 1e-3), np.full(2, 0.99), np.zeros(2, bool))
    pop = PopulationLearner(ops, 2, [OBS, 8, ACTIONS], settings)
    pop.initialize(Streams(ops, [0, 1]))
    pop.params += 1.0
    pop.update_target(np.array([True, False]))
    assert np.array_equal(pop.target_weights[0][0], pop.weights[0][0])
    assert not np.array_equal(pop.target_weights[0][1], pop.weights[0][1])
