"""The learner contract: what a DQN gradient-step implementation offers the DQN agent.

Two implementations compute the same update: :class:`~qiter.dqn.core_learner.CoreLearner` (the batched
DQN core of :mod:`qiter.core` with one agent: hand-written numpy forward, backward and Adam on views of the
network's weights, the CPU fast path) and :class:`~qiter.dqn.torch_learner.TorchLearner` (autograd and
fused Adam, on any device, for any network). Both take the
network pair and one :class:`TDSettings`, so the agent never needs to know which one it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from qiter.buffers.replay import ReplayBufferSamples
    from qiter.dqn.config import DQNConfig
    from qiter.dqn.networks import QNetwork


class UpdateResult(NamedTuple):
    """What one gradient step reports.

    :param loss: The minibatch loss.
    :param mean_q: Mean of Q(s, a) over the minibatch's transitions.
    :param max_q: Largest Q-value of the minibatch, over its states and every action: where
        overestimation shows first.
    :param td_errors: Q(s, a) - TD target per transition (prioritized replay's priorities).
    """

    loss: float
    mean_q: float
    max_q: float
    td_errors: np.ndarray


@dataclass(frozen=True)
class TDSettings:
    """The hyperparameters of one DQN gradient step.

    :param learning_rate: Adam's learning rate (the agent may change it over the run).
    :param gamma: Discount factor (n-step samples carry their own discounts).
    :param double_dqn: Double DQN targets: the online network picks the next action, the target network
        values it.
    :param loss: ``"mse"`` or ``"huber"``.
    :param max_grad_norm: Clip the gradient's global norm to this value (``None``: no clipping).
    :param adam_eps: Adam's epsilon.
    """

    learning_rate: float
    gamma: float
    double_dqn: bool = False
    loss: Literal["mse", "huber"] = "mse"
    max_grad_norm: float | None = None
    adam_eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"unknown loss {self.loss!r}: use 'mse' or 'huber'")

    @classmethod
    def from_config(cls, config: DQNConfig) -> TDSettings:
        """The settings of a run's config."""
        return cls(
            config.learning_rate, config.gamma, config.double_dqn, config.loss, config.max_grad_norm,
            config.adam_eps,
        )  # fmt: skip


class Learner(ABC):
    """Gradient steps on a Q-network and its target network.

    :param q_net: The online network.
    :param q_target_net: The target network (same architecture).
    :param settings: The update's hyperparameters.
    """

    def __init__(self, q_net: QNetwork, q_target_net: QNetwork, settings: TDSettings) -> None:
        self.q_net, self.q_target_net = q_net, q_target_net
        self.settings = settings
        self.gamma = settings.gamma
        self.double_dqn = settings.double_dqn
        self.max_grad_norm = settings.max_grad_norm

    @property
    @abstractmethod
    def learning_rate(self) -> float:
        """The optimizer's current learning rate (settable, for learning-rate schedules)."""

    @learning_rate.setter
    @abstractmethod
    def learning_rate(self, value: float) -> None: ...

    @abstractmethod
    def act(self, observation: np.ndarray) -> int:
        """Greedy action of the online network for one observation."""

    @abstractmethod
    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network for a batch of observations."""

    @abstractmethod
    def update(self, samples: ReplayBufferSamples) -> UpdateResult:
        """One gradient step on a minibatch."""

    @abstractmethod
    def update_target(self, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging ``target <- tau * online + (1 - tau) * target``."""

    @abstractmethod
    def optimizer_state(self) -> dict[str, object]:
        """State of the optimizer for checkpoints."""

    @abstractmethod
    def load_optimizer_state(self, state: dict[str, object]) -> None:
        """Restore the optimizer state from a checkpoint."""
