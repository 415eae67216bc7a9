"""The settings every training run has, whatever its algorithm: what the run loop reads.

An algorithm's config dataclass inherits :class:`RunConfig` and adds its own hyperparameters
(:class:`~qiter.dqn.config.DQNConfig`), so one typed reader (:mod:`qiter.config`) serves them all and the
run loop (:mod:`qiter.run_loop`) needs to know nothing about the algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from qiter.config import ENV_KWARGS_RULE, SEED_RANGE, checker, env_kwargs_ok, seed_ok
from qiter.devices import check_device


@dataclass
class RunConfig:
    """Environment, budget, evaluation, checkpoints and device of one run."""

    env_id: str = "CartPole-v1"
    # Keyword arguments of gymnasium.make (--env-kwargs key=value), e.g. {enable_wind: true}
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 2023
    n_timesteps: int = 20_000  # environment steps in total, over all copies of the environment
    n_envs: int = 1  # copies of the environment stepped together (a gymnasium vector env when > 1)
    gamma: float = 0.99  # discount factor of every value-based algorithm
    # The largest reward of one step, when known (CartPole: 1): Q-values cannot exceed
    # max_reward / (1 - gamma), and a run whose mean Q goes far above that bound is warned about.
    max_reward: float | None = None
    # Evaluation, early stopping, checkpoints
    n_eval_episodes: int = 10
    evaluation_interval: int = 1000  # 0: no periodic evaluation
    eval_exploration_rate: float = 0.0
    stop_at_return: float | None = None
    checkpoint_interval: int | None = None  # defaults to evaluation_interval
    save_buffer: bool = False
    # Execution
    device: str = "cpu"

    def validate(self) -> None:
        """Check what the types cannot say.

        :raises QiterError: Naming the key, its value and what is expected.
        """
        need = checker(self)
        need(bool(self.env_id), "env_id", "a gymnasium environment id")
        need(env_kwargs_ok(self.env_kwargs), "env_kwargs", ENV_KWARGS_RULE)
        need(seed_ok(self.seed), "seed", SEED_RANGE)
        need(self.n_timesteps >= 1, "n_timesteps", "at least 1")
        need(self.n_envs >= 1, "n_envs", "at least 1")
        need(0 < self.gamma <= 1, "gamma", "in (0, 1]")
        if self.max_reward is not None:
            need(math.isfinite(self.max_reward), "max_reward", "a finite number (or none)")
        need(self.n_eval_episodes >= 1, "n_eval_episodes", "at least 1")
        need(self.evaluation_interval >= 0, "evaluation_interval", "at least 0 (0: no periodic evaluation)")
        need(0 <= self.eval_exploration_rate <= 1, "eval_exploration_rate", "in [0, 1]")
        if self.checkpoint_interval is not None:
            need(
                self.checkpoint_interval >= 1,
                "checkpoint_interval",
                "at least 1 (or none: evaluation_interval)",
            )
        if self.stop_at_return is not None:
            need(not math.isnan(self.stop_at_return), "stop_at_return", "a number (or none)")
        # Last, so a config error is reported before the machine is examined.
        check_device(self.device)

    def q_value_bound(self) -> float | None:
        """The largest value any return can have (:func:`q_value_bound`; ``None`` without ``max_reward``)."""
        return q_value_bound(self.max_reward, self.gamma)


def q_value_bound(max_reward: float | None, gamma: float) -> float | None:
    """An upper bound on every Q-value when no reward exceeds ``max_reward``.

    ``max_reward / (1 - gamma)`` (the reward forever) when ``max_reward >= 0``; when every reward is negative,
    the best return is one reward then the end of the episode, ``max_reward``. ``None`` when ``max_reward``
    is unknown, or when ``gamma = 1`` with a positive reward (no bound without a time limit).
    """
    if max_reward is None:
        return None
    if max_reward <= 0:
        return max_reward
    return max_reward / (1.0 - gamma) if gamma < 1 else None
