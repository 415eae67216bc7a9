"""TD targets and losses in PyTorch: the reference computation of every DQN variant.

The seed's :func:`~qiter.dqn.tutorial.dqn_update` and the autograd learner both call these; the DQN core
(:mod:`qiter.core`, the numpy fast path) is tested against the autograd learner on the same batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch as th
import torch.nn.functional as F

from qiter.buffers.replay import TorchReplayBufferSamples


def next_state_values(
    q_target_net: th.nn.Module,
    next_observations: th.Tensor,
    q_net: th.nn.Module | None = None,
) -> th.Tensor:
    """Value of the next states under the greedy policy.

    DQN: ``max_a Q_target(s', a)``. Double DQN (van Hasselt et al., 2016), when ``q_net`` is given: the
    online network chooses ``a* = argmax_a Q(s', a)`` and the target network values it, ``Q_target(s', a*)``,
    which removes the upward bias of taking a max over noisy estimates.

    :param q_target_net: The target network.
    :param next_observations: Batch of next observations.
    :param q_net: The online network, for Double DQN; ``None`` for plain DQN.
    :return: Shape (batch_size,).
    """
    with th.no_grad():
        next_q_values = q_target_net(next_observations)
        if q_net is None:
            return next_q_values.max(dim=1).values
        next_actions = q_net(next_observations).argmax(dim=1, keepdim=True)
        return th.gather(next_q_values, dim=1, index=next_actions).squeeze(dim=1)


def td_target(
    rewards: th.Tensor,
    terminateds: th.Tensor,
    next_values: th.Tensor,
    gamma: float,
    discounts: th.Tensor | None = None,
) -> th.Tensor:
    """``y = r + gamma^k * (1 - terminated) * V(s')``, with k = 1 for 1-step and the trace length for n-step.

    Truncation (a time limit) is not termination: only true terminal states stop the bootstrap.

    :param rewards: (n-step discounted) rewards, shape (batch_size,).
    :param terminateds: Whether ``s'`` is terminal, shape (batch_size,).
    :param next_values: Value of ``s'``, shape (batch_size,).
    :param gamma: Discount factor, used when ``discounts`` is ``None``.
    :param discounts: Per-sample bootstrap discount gamma^k from an n-step buffer.
    :return: Shape (batch_size,).
    """
    bootstrap = next_values * th.logical_not(terminateds)
    return rewards + (gamma if discounts is None else discounts) * bootstrap


class DQNLoss(NamedTuple):
    """The loss of one minibatch and what the learner reports beside it (all but ``loss`` detached).

    :param loss: The mean loss, differentiable.
    :param td_errors: Q(s, a) - TD target, shape (batch_size,).
    :param current_q: Q(s, a) of the actions taken, shape (batch_size,).
    :param max_q: The largest Q-value over the minibatch's states and every action (a scalar tensor).
    """

    loss: th.Tensor
    td_errors: th.Tensor
    current_q: th.Tensor
    max_q: th.Tensor


def dqn_loss(
    q_net: th.nn.Module,
    q_target_net: th.nn.Module,
    replay_data: TorchReplayBufferSamples,
    gamma: float,
    double_dqn: bool = False,
    loss: str = "mse",
) -> DQNLoss:
    """The DQN loss on one minibatch.

    :param q_net: The online network (gradients flow through it).
    :param q_target_net: The target network.
    :param replay_data: The minibatch, as tensors.
    :param gamma: Discount factor.
    :param double_dqn: Use the Double DQN target.
    :param loss: ``"mse"`` (the seed's) or ``"huber"`` (smooth L1, delta = 1).
    """
    next_values = next_state_values(
        q_target_net, replay_data.next_observations, q_net if double_dqn else None
    )
    target = td_target(
        replay_data.rewards, replay_data.terminateds, next_values, gamma, replay_data.discounts
    )
    # Q-values of the actions that were taken during data collection.
    q_values = q_net(replay_data.observations)
    current_q_values = th.gather(q_values, dim=1, index=replay_data.actions).squeeze(dim=1)
    if loss == "mse":
        elementwise = (current_q_values - target) ** 2
    elif loss == "huber":
        elementwise = F.smooth_l1_loss(current_q_values, target, reduction="none")
    else:
        raise ValueError(f"unknown loss {loss!r}: use 'mse' or 'huber'")
    if replay_data.weights is not None:
        # Prioritized replay: importance-sampling weights correct for the non-uniform sampling.
        elementwise = elementwise * replay_data.weights
    td_errors = (current_q_values - target).detach()
    return DQNLoss(elementwise.mean(), td_errors, current_q_values.detach(), q_values.detach().max())
