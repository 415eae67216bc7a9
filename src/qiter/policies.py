"""Acting from values: epsilon-greedy and greedy action selection, written once for every algorithm.

Epsilon-greedy takes a random action with probability epsilon (``exploration_rate``), else the greedy one.
The greedy action is passed as a function so that it is only computed when it is used: with epsilon near
1 early in training, most steps never run the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

A = TypeVar("A")


def epsilon_greedy(
    greedy_action: Callable[[], A],
    random_action: Callable[[], A],
    exploration_rate: float,
    uniform: Callable[[], float],
) -> A:
    """One epsilon-greedy choice.

    :param greedy_action: Computes the greedy action (called only when it is taken).
    :param random_action: Draws a uniformly random action.
    :param exploration_rate: Probability of the random action (epsilon).
    :param uniform: Draws a number in [0, 1) (the run's generator, or numpy's global one as in the seed).
    :return: The action.
    """
    if uniform() < exploration_rate:
        return random_action()
    return greedy_action()


def epsilon_greedy_batch(
    greedy_actions: Callable[[np.ndarray], np.ndarray],
    observations: np.ndarray,
    exploration_rate: float,
    n_actions: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Epsilon-greedy actions for a batch of observations (one per environment copy).

    :param greedy_actions: Batched observations -> greedy actions.
    :param observations: Shape ``(n_envs, *obs_shape)``.
    :param exploration_rate: Probability of a random action, drawn independently per row.
    :param n_actions: Size of the Discrete action space.
    :param rng: Random generator.
    :return: int64 actions, shape ``(n_envs,)``.
    """
    explore = rng.random(len(observations)) < exploration_rate
    actions = rng.integers(n_actions, size=len(observations))
    if not explore.all():
        keep = ~explore
        actions[keep] = greedy_actions(observations[keep])
    return actions


def greedy_action_random_ties(q_values: np.ndarray, rng: np.random.Generator) -> int:
    """``argmax_a Q(s, a)`` of one row of Q-values, ties broken uniformly at random.

    Tabular Q-learning needs it: its table starts at zeros, where ``argmax`` (the first action on ties)
    would always pick action 0 and explore only through epsilon.

    :param q_values: Shape ``(n_actions,)``.
    :param rng: Random generator (one draw per call, even without a tie).
    """
    return int(rng.choice(np.flatnonzero(q_values == q_values.max())))
