"""The settings of ``qiter collect`` and ``qiter fqi`` as typed config dataclasses.

The CLI hands the flags the user gave, as strings, to :func:`qiter.config.config_from_dict`, so they get
the same typed conversion and one-line errors as DQN's ``--set`` (``--steps 1e5`` is fine, ``--regressor
knnn`` gets a did-you-mean), and the defaults live here only. This module imports neither scikit-learn nor
gymnasium, so that ``qiter --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from qiter.config import SEED_RANGE, checker, seed_ok

__all__ = ["REGRESSOR_NAMES", "CollectConfig", "FQIConfig", "RegressorName"]

# Kept in sync with qiter.fqi.REGRESSORS (a test checks)
RegressorName = Literal[
    "knn", "linear", "poly", "tree", "extra-trees", "random-forest", "gradient-boosting", "mlp"
]
REGRESSOR_NAMES: tuple[str, ...] = get_args(RegressorName)


@dataclass
class CollectConfig:
    """Random-policy transitions to collect (``qiter collect``); field names are the command's flags."""

    env_id: str
    steps: int = 50_000  # transitions
    seed: int | None = None  # seeds the resets and the random actions, for reproducible data

    def validate(self) -> None:
        """Check what the types cannot say.

        :raises QiterError: Naming the key, its value and what is expected.
        """
        need = checker(self)
        need(bool(self.env_id), "env_id", "a gymnasium environment id")
        need(self.steps >= 1, "steps", "at least 1")
        need(seed_ok(self.seed), "seed", SEED_RANGE)


@dataclass
class FQIConfig:
    """One Fitted Q Iteration run on offline data (``qiter fqi``); field names are the command's flags."""

    regressor: RegressorName = "knn"
    iterations: int = 20  # iterations after the first fit
    gamma: float = 0.99
    eval_freq: int = 5  # evaluate every N iterations; 0: only the final evaluation
    eval_episodes: int = 10
    env: str | None = None  # the environment id; None: the one stored in the data file
    encoding: Literal["auto", "index", "one-hot"] = "auto"  # auto: index for 2 actions, else one-hot
    seed: int | None = None  # seeds the regressor and the evaluations
    fast: bool = True  # the linear-smoother fast path for kNN and least squares

    def validate(self) -> None:
        """Check what the types cannot say.

        :raises QiterError: Naming the key, its value and what is expected.
        """
        need = checker(self)
        need(self.iterations >= 0, "iterations", "at least 0")
        need(0 <= self.gamma <= 1, "gamma", "in [0, 1]")
        need(self.eval_freq >= 0, "eval_freq", "at least 0 (0: only the final evaluation)")
        need(self.eval_episodes >= 1, "eval_episodes", "at least 1")
        need(seed_ok(self.seed), "seed", SEED_RANGE)
