"""Hyperparameters of the continuous-action agents, one dataclass per algorithm over a shared base.

:class:`ContinuousConfig` holds what every agent with a replay buffer, target networks and exploration
noise shares; each algorithm adds its own fields. Defaults follow Stable-Baselines3's TD3/DDPG defaults
(Adam at 1e-3, tau 0.005, batch 256, Gaussian noise 0.1 in the [-1, 1] action range), so a field means the
same in every algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qiter.config import checker
from qiter.run_config import RunConfig

__all__ = ["ActorCriticConfig", "CEMConfig", "ContinuousConfig", "DDPGConfig", "NAFConfig", "TD3Config"]


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """``"400,300"`` -> ``(400, 300)``; an empty tuple if the text is not a list of positive integers."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        return ()
    return sizes if sizes and all(s > 0 for s in sizes) else ()


@dataclass
class ContinuousConfig(RunConfig):
    """What every continuous-action agent has: buffer, networks, optimizer, targets, noise."""

    env_id: str = "Pendulum-v1"
    # Replay buffer and update schedule
    replay_buffer_size: int = 1_000_000
    batch_size: int = 256
    learning_starts: int = 100  # uniform random actions until then (as SB3), then learning
    update_interval: int = 1  # environment steps (or episodes, see update_unit) between updates
    update_unit: Literal["steps", "episodes"] = "steps"  # what update_interval counts (SB3's train_freq unit)
    gradient_steps: int = 1  # gradient steps per update; -1: as many as environment steps since the last
    # Networks: hidden layer sizes, comma-separated (SB3's TD3 default is 400,300)
    hidden_sizes: str = "400,300"
    learning_rate: float = 1e-3
    tau: float = 0.005  # Polyak averaging coefficient of the target networks
    # Exploration noise, added to the greedy action in [-1, 1]
    exploration_noise: Literal["normal", "ornstein-uhlenbeck", "none"] = "normal"
    exploration_noise_std: float = 0.1
    ou_theta: float = 0.15

    def validate(self) -> None:
        super().validate()
        need = checker(self)
        need(self.replay_buffer_size >= self.n_envs, "replay_buffer_size", "at least n_envs")
        need(self.batch_size >= 1, "batch_size", "at least 1")
        need(self.learning_starts >= 0, "learning_starts", "at least 0")
        need(self.update_interval >= 1, "update_interval", "at least 1")
        need(self.update_unit in ("steps", "episodes"), "update_unit", "steps or episodes")
        need(self.gradient_steps >= 1 or self.gradient_steps == -1, "gradient_steps", "at least 1, or -1")
        need(bool(parse_hidden_sizes(self.hidden_sizes)), "hidden_sizes", "positive integers, e.g. 400,300")
        need(self.learning_rate > 0, "learning_rate", "positive")
        need(0 < self.tau <= 1, "tau", "in (0, 1]")
        need(self.exploration_noise_std >= 0, "exploration_noise_std", "at least 0")
        need(0 <= self.ou_theta <= 1, "ou_theta", "in [0, 1]")


@dataclass
class ActorCriticConfig(ContinuousConfig):
    """DDPG and TD3: TD3 is DDPG with its three changes turned on (Fujimoto et al., 2018)."""

    n_critics: int = 1  # 2: twin critics, the min of the two in the TD target (clipped double Q)
    policy_delay: int = 1  # critic updates per actor and target update
    target_policy_noise: float = 0.0  # std of the noise on the target action (target policy smoothing)
    target_noise_clip: float = 0.5  # the target noise is clipped to [-c, c]

    def validate(self) -> None:
        super().validate()
        need = checker(self)
        need(self.n_critics in (1, 2), "n_critics", "1 or 2")
        need(self.policy_delay >= 1, "policy_delay", "at least 1")
        need(self.target_policy_noise >= 0, "target_policy_noise", "at least 0")
        need(self.target_noise_clip >= 0, "target_noise_clip", "at least 0")


@dataclass
class DDPGConfig(ActorCriticConfig):
    """DDPG (Lillicrap et al., 2016): one critic, actor updated at every critic update."""


@dataclass
class TD3Config(ActorCriticConfig):
    """TD3 (Fujimoto et al., 2018): twin critics, delayed actor, target policy smoothing."""

    n_critics: int = 2
    policy_delay: int = 2
    target_policy_noise: float = 0.2


@dataclass
class NAFConfig(ContinuousConfig):
    """NAF (Gu et al., 2016): Q(s, a) = V(s) - 1/2 (a - mu(s))^T P(s) (a - mu(s)), max at mu(s)."""

    hidden_sizes: str = "256,256"


@dataclass
class CEMConfig(ContinuousConfig):
    """Q-learning with a sampled max (QT-Opt, Kalashnikov et al., 2018): the best of ``cem_samples``
    uniform actions, refined by ``cem_iterations`` cross-entropy rounds keeping ``cem_elites``."""

    hidden_sizes: str = "256,256"
    cem_samples: int = 64
    cem_elites: int = 6
    cem_iterations: int = 2  # 0: the best of the uniform samples only
    n_critics: int = 1  # 2: clipped double Q (the min of two target critics)

    def validate(self) -> None:
        super().validate()
        need = checker(self)
        need(self.cem_samples >= 1, "cem_samples", "at least 1")
        need(1 <= self.cem_elites <= self.cem_samples, "cem_elites", "in [1, cem_samples]")
        need(self.cem_iterations >= 0, "cem_iterations", "at least 0")
        need(self.n_critics in (1, 2), "n_critics", "1 or 2")
