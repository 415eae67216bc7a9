"""Continuous actions in one place: scaling between the networks' [-1, 1] and a Box's bounds, and a wrapper
that turns a Box action space into a Discrete set of bins (so DQN and FQI run on continuous-control tasks).
"""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qiter.errors import QiterError

__all__ = ["ActionScaler", "DiscretizeActions", "require_bounded_box"]

# Above this many joint actions, the product of bins gives way to one dimension at a time.
MAX_PRODUCT_ACTIONS = 256


def require_bounded_box(space: spaces.Space, what: str) -> spaces.Box:
    """Return ``space`` if it is a Box with finite bounds, else raise one clear line.

    :param space: An action space.
    :param what: Who needs it (an algorithm's name, "--discretize"), for the message.
    :raises QiterError: Not a Box, or a Box with an infinite bound.
    """
    if not isinstance(space, spaces.Box):
        raise QiterError(f"{what} needs a Box action space, got {space}")
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise QiterError(
            f"{what} needs a bounded Box action space (finite low and high), got {space}: "
            "wrap the environment with gymnasium.wrappers.ClipAction or rescale its actions first"
        )
    return space


class ActionScaler:
    """Affine map between the networks' action range [-1, 1] and a bounded Box's [low, high].

    Networks act in [-1, 1] (a tanh output, noise clipped there), so learning rates and noise scales mean
    the same on every task; the environment sees its own units.

    :param space: A bounded Box action space.
    """

    def __init__(self, space: spaces.Box) -> None:
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.center = (high + low) / 2
        self.half_range = (high - low) / 2
        self.dtype = space.dtype

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """[-1, 1] -> [low, high] (clipped first, so noise never leaves the bounds)."""
        clipped = np.clip(actions, -1.0, 1.0)
        return (self.center + self.half_range * clipped).astype(self.dtype)

    def to_network(self, actions: np.ndarray) -> np.ndarray:
        """[low, high] -> [-1, 1], float32 as stored in the replay buffer."""
        return ((np.asarray(actions, dtype=np.float64) - self.center) / self.half_range).astype(np.float32)


class DiscretizeActions(gym.ActionWrapper):
    """A Box action space as ``Discrete`` bins.

    ``mode="product"``: every combination of ``n_bins`` evenly spaced values per dimension (``n_bins **
    dim`` actions). ``mode="per-dimension"``: ``n_bins`` values for one dimension at a time, the others at
    the middle of their range (``n_bins * dim`` actions), for action spaces where the product explodes.
    ``"auto"`` takes the product up to :data:`MAX_PRODUCT_ACTIONS` actions.

    :param env: An environment with a bounded Box action space.
    :param n_bins: Values per dimension (at least 2: both bounds are always among them).
    :param mode: ``"auto"``, ``"product"`` or ``"per-dimension"``.
    """

    def __init__(self, env: gym.Env, n_bins: int, mode: str = "auto") -> None:
        super().__init__(env)
        box = require_bounded_box(env.action_space, "--discretize")
        if n_bins < 2:
            raise QiterError(f"--discretize needs at least 2 bins per dimension, got {n_bins}")
        if mode not in ("auto", "product", "per-dimension"):
            raise QiterError(f"bad discretization mode {mode!r} (expected auto, product or per-dimension)")
        dim = int(np.prod(box.shape))
        if mode == "auto":
            mode = "product" if n_bins**dim <= MAX_PRODUCT_ACTIONS else "per-dimension"
        low, high = box.low.reshape(-1).astype(np.float64), box.high.reshape(-1).astype(np.float64)
        grid = np.linspace(low, high, n_bins)  # (n_bins, dim): bin j of dimension i is grid[j, i]
        if mode == "product":
            table = np.array([[grid[j, i] for i, j in enumerate(idx)] for idx in itertools.product(
                range(n_bins), repeat=dim)])  # fmt: skip
        else:
            table = np.tile((low + high) / 2, (n_bins * dim, 1))
            for i in range(dim):
                table[i * n_bins : (i + 1) * n_bins, i] = grid[:, i]
        self.mode = mode
        self.n_bins = n_bins
        #: Row ``k``: the Box action of discrete action ``k``.
        self.table = table.reshape(len(table), *box.shape).astype(box.dtype)
        self.action_space = spaces.Discrete(len(table))

    def action(self, action: int | np.integer) -> np.ndarray:
        """The Box action of discrete action ``action``."""
        return self.table[int(action)]
