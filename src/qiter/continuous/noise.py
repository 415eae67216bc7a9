"""Exploration noise added to the greedy action, in the networks' [-1, 1] action range."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ExplorationNoise", "make_noise"]


class ExplorationNoise:
    """Gaussian noise (``theta = 1``: independent draws) or an Ornstein-Uhlenbeck process (``theta < 1``:
    noise correlated in time, which helps on tasks such as MountainCar where one push must last).

    One process per environment copy; :meth:`reset` restarts the copies whose episode ended.

    :param shape: ``(n_envs, action_dim)``.
    :param std: Standard deviation of the stationary noise (of each draw for Gaussian noise).
    :param theta: Mean reversion per step of the OU process; 1: Gaussian noise.
    :param rng: The agent's random generator.
    """

    def __init__(self, shape: tuple[int, int], std: float, theta: float, rng: np.random.Generator) -> None:
        self.std, self.theta, self.rng = std, theta, rng
        # Innovation scale that gives the OU process a stationary std of ``std``.
        self.sigma = std * float(np.sqrt(1 - (1 - theta) ** 2)) if theta < 1 else std
        self.state = np.zeros(shape)

    def __call__(self) -> np.ndarray:
        """The next noise of every copy."""
        innovation = self.rng.standard_normal(self.state.shape) * self.sigma
        if self.theta >= 1:
            return innovation
        self.state = (1 - self.theta) * self.state + innovation
        return self.state

    def reset(self, done: np.ndarray) -> None:
        """Restart the process of the copies where ``done`` is true."""
        self.state[done] = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint holds it as a tensor: np.asarray takes it without the copy keyword that np.array passes
        # (torch's __array__ has none: a DeprecationWarning in numpy 2), then np.array makes our own copy.
        self.state = np.array(np.asarray(state["state"]), dtype=np.float64)


def make_noise(
    kind: str, shape: tuple[int, int], std: float, ou_theta: float, rng: np.random.Generator
) -> ExplorationNoise | None:
    """The noise a config names (``"normal"``, ``"ornstein-uhlenbeck"``), or ``None`` for ``"none"``."""
    if kind == "none" or std == 0:
        return None
    return ExplorationNoise(shape, std, 1.0 if kind == "normal" else ou_theta, rng)
