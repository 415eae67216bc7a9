"""TD targets and losses on hand-built networks whose outputs are known."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
import torch.nn as nn
from gymnasium import spaces

from qiter.buffers.replay import TorchReplayBufferSamples
from qiter.dqn.core_learner import CoreLearner, numpy_actor
from qiter.dqn.learner import TDSettings
from qiter.dqn.losses import dqn_loss, next_state_values, td_target
from qiter.dqn.networks import DuelingQNetwork


class TableQ(nn.Module):
    """A "network" that returns row ``int(obs[0])`` of a fixed Q-table: known outputs for hand-built cases."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(th.tensor(table))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.table[observations[:, 0].long()]


# Next states 0 and 1. The online network prefers action 1 in state 0 and action 0 in state 1.
ONLINE = TableQ([[1.0, 3.0], [5.0, 2.0]])
TARGET = TableQ([[10.0, 20.0], [40.0, 30.0]])
NEXT_OBS = th.tensor([[0.0], [1.0]])


def test_dqn_next_values_max_of_target() -> None:
    np.testing.assert_allclose(next_state_values(TARGET, NEXT_OBS).numpy(), [20.0, 40.0])


def test_double_dqn_online_selects_target_evaluates() -> None:
    # argmax of the online net: actions 1 and 0; their values under the target net: 20 and 40.
    np.testing.assert_allclose(next_state_values(TARGET, NEXT_OBS, ONLINE).numpy(), [20.0, 40.0])
    # An online net that disagrees with the target's argmax in state 1 picks the target's lower value.
    online = TableQ([[1.0, 3.0], [0.0, 9.0]])
    np.testing.assert_allclose(next_state_values(TARGET, NEXT_OBS, online).numpy(), [20.0, 30.0])
    # Double DQN's value is never above DQN's: it replaces a max by one of the values it maximizes over.
    assert th.all(next_state_values(TARGET, NEXT_OBS, online) <= next_state_values(TARGET, NEXT_OBS))


def test_td_target_terminal_and_n_step_discounts() -> None:
    rewards = th.tensor([1.0, 2.0, 3.0])
    terminateds = th.tensor([False, True, False])
    next_values = th.tensor([10.0, 10.0, 10.0])
    np.testing.assert_allclose(td_target(rewards, terminateds, next_values, 0.5).numpy(), [6.0, 2.0, 8.0])
    # n-step: each sample has its own gamma^k.
    discounts = th.tensor([0.25, 0.25, 0.125])
    np.testing.assert_allclose(
        td_target(rewards, terminateds, next_values, 0.5, discounts).numpy(), [3.5, 2.0, 4.25]
    )


def batch(weights: th.Tensor | None = None) -> TorchReplayBufferSamples:
    """Two transitions from states 0 and 1 (action 0 and 1) to next states 0 and 1, rewards 1 and 2."""
    return TorchReplayBufferSamples(
        observations=th.tensor([[0.0], [1.0]]),
        next_observations=NEXT_OBS,
        actions=th.tensor([[0], [1]]),
        rewards=th.tensor([1.0, 2.0]),
        terminateds=th.tensor([False, True]),
        weights=weights,
    )


def test_dqn_loss_mse_huber_and_weights() -> None:
    # Q(s, a) from the online table: Q(0, 0) = 1, Q(1, 1) = 2; targets: 1 + 0.1 * 20 = 3 and 2 (terminal).
    loss, td_errors, current_q, max_q = dqn_loss(ONLINE, TARGET, batch(), gamma=0.1)
    np.testing.assert_allclose(current_q.numpy(), [1.0, 2.0])
    # The largest Q over the batch's states and every action, not only the actions taken.
    assert float(max_q) == pytest.approx(float(ONLINE(batch().observations).max()))
    np.testing.assert_allclose(td_errors.numpy(), [-2.0, 0.0])
    assert float(loss.detach()) == pytest.approx((4.0 + 0.0) / 2)
    # Huber (delta = 1): |d| - 0.5 beyond 1, d^2 / 2 within.
    loss, *_ = dqn_loss(ONLINE, TARGET, batch(), gamma=0.1, loss="huber")
    assert float(loss.detach()) == pytest.approx((1.5 + 0.0) / 2)
    online = TableQ([[2.5, 3.0], [5.0, 2.0]])  # td error -0.5: the quadratic part
    loss, *_ = dqn_loss(online, TARGET, batch(), gamma=0.1, loss="huber")
    assert float(loss.detach()) == pytest.approx(0.5 * 0.25 / 2)
    # PER: the importance weights multiply each sample's loss before the mean.
    loss, *_ = dqn_loss(ONLINE, TARGET, batch(th.tensor([0.25, 1.0])), gamma=0.1)
    assert float(loss.detach()) == pytest.approx(0.25 * 4.0 / 2)
    with pytest.raises(ValueError, match="unknown loss"):
        dqn_loss(ONLINE, TARGET, batch(), gamma=0.1, loss="l1")


def test_dqn_loss_double_target() -> None:
    online = TableQ([[1.0, 3.0], [0.0, 9.0]])
    # Sample 0: online picks action 1 in next state 0, target values it 20 (same as max): y = 1 + 0.1 * 20.
    # Use a non-terminal second sample: online picks action 1 in state 1 (target 30), DQN would use 40.
    data = batch()
    data.terminateds = th.tensor([False, False])
    _, td_double, *_ = dqn_loss(online, TARGET, data, gamma=0.1, double_dqn=True)
    _, td_plain, *_ = dqn_loss(online, TARGET, data, gamma=0.1)
    # Q(1, 1) = 9: targets 2 + 0.1 * 30 = 5 (double) and 2 + 0.1 * 40 = 6 (DQN).
    np.testing.assert_allclose(td_double.numpy(), [1.0 - 3.0, 9.0 - 5.0])
    np.testing.assert_allclose(td_plain.numpy(), [1.0 - 3.0, 9.0 - 6.0])


def test_dueling_forward_hand_set_weights() -> None:
    obs_space = spaces.Box(low=-1.0, high=1.0, shape=(2,), dtype=np.float32)
    net = DuelingQNetwork(obs_space, spaces.Discrete(3), n_hidden_layers=0)
    head = net.q_net[-1]
    assert isinstance(head, nn.Linear) and head.out_features == 4
    with th.no_grad():
        # Outputs [V, A_0, A_1, A_2] = W x + b.
        head.weight.copy_(th.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]))
        head.bias.copy_(th.tensor([0.5, 0.0, 0.0, 3.0]))
    x = th.tensor([[1.0, 2.0], [0.0, -1.0]])
    # x0: V = 1.5, A = [2, 2, 3], mean 7/3 -> Q = 1.5 + A - 7/3. x1: V = 0.5, A = [-1, 0, 3], mean 2/3.
    expected = np.array(
        [[1.5 + 2 - 7 / 3, 1.5 + 2 - 7 / 3, 1.5 + 3 - 7 / 3], [0.5 - 1 - 2 / 3, 0.5 - 2 / 3, 0.5 + 3 - 2 / 3]]
    )
    with th.no_grad():
        q = net(x).numpy()
    np.testing.assert_allclose(q, expected, rtol=1e-6)
    # The mean advantage is subtracted: the Q-values average to V.
    np.testing.assert_allclose(q.mean(axis=1), [1.5, 0.5], rtol=1e-6)
    # The numpy fast path computes the same function.
    learner = CoreLearner(net, copy.deepcopy(net), TDSettings(1e-3, 0.99))
    np.testing.assert_allclose(learner.core.q_values(x.numpy()[None])[0], expected, rtol=1e-6)
    actor = numpy_actor(net)
    assert actor is not None and actor(x[1].numpy()) == 2 and learner.act(x[1].numpy()) == 2
