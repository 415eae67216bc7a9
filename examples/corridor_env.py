"""A user's own environment for qiter: a corridor to walk to its end, registered as ``Corridor-v0``.

gymnasium's ``module:id`` form makes qiter import this module (which registers the id) before it makes
the environment, from the installed packages or the current folder::

    cd examples
    qiter train corridor_env:Corridor-v0 --steps 5000 --set learning_starts=500
    qiter train corridor_env:Corridor-v0 --env-kwargs length=20 --steps 20000
    qiter eval runs/corridor_env_Corridor-v0/dqn-...

The run's config keeps the id with its module, so ``--resume``, ``qiter eval`` and ``qiter.load_agent``
import it again. Keyword arguments of the constructor (``length``) come from ``--env-kwargs``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CorridorEnv(gym.Env[np.ndarray, int]):
    """Start at cell 0 of ``length`` cells; action 1 steps right, action 0 steps left; the episode ends at
    the last cell. Each step costs -1, so the best return is ``-(length - 1)``.

    :param length: Number of cells (at least 2).
    :param render_mode: ``None`` or ``"rgb_array"`` (a strip of cells, the agent in red).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, length: int = 10, render_mode: str | None = None) -> None:
        if length < 2:
            raise ValueError(f"length must be at least 2, got {length}")
        self.length = length
        self.render_mode = render_mode
        # The position as a fraction of the corridor: the same network fits any length.
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.position = 0

    def _observation(self) -> np.ndarray:
        return np.array([self.position / (self.length - 1)], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.position = min(max(self.position + (1 if action == 1 else -1), 0), self.length - 1)
        terminated = self.position == self.length - 1
        return self._observation(), -1.0, terminated, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((16, 16 * self.length, 3), 255, dtype=np.uint8)
        frame[:, 16 * (self.length - 1) :] = (0, 160, 0)  # the goal
        frame[4:12, 16 * self.position + 4 : 16 * self.position + 12] = (200, 0, 0)
        return frame


# Registered when the module is imported: `qiter train corridor_env:Corridor-v0` imports it.
gym.register(id="Corridor-v0", entry_point=CorridorEnv, max_episode_steps=100)
