"""What a population's training returns, and the interquartile mean its reports use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qiter.dqn.config import DQNConfig


@dataclass
class PopulationResult:
    """What :func:`qiter.population.train.train` returns."""

    configs: list[DQNConfig]  # one per agent (its seed and swept values)
    final_returns: np.ndarray  # (N,) mean return of the final greedy evaluation
    eval_steps: list[int]
    eval_returns: list[np.ndarray]  # one (N,) array per periodic evaluation, the final one last
    log_steps: list[int]
    train_returns: list[np.ndarray]  # one (N,) array per log interval: mean return of the episodes ended
    wall_time: float
    agent_steps_per_second: float
    # Per layer: W (N, in, out), b (N, out), then a hidden layer's layer-norm scale and shift (N, units).
    layers: list[tuple[np.ndarray, ...]] = field(repr=False)
    backend: str = "numpy"
    workers: int = 1
    run_dir: str | None = None
    stopped_early: bool = False

    @property
    def best_agent(self) -> int:
        """The agent with the best final evaluation (the lowest index among ties)."""
        return int(np.argmax(self.final_returns))

    def agent_layers(self, agent: int) -> list[tuple[np.ndarray, ...]]:
        """Agent ``agent``'s layers ``(W (in, out), b (out,)[, scale, shift])``."""
        return [tuple(t[agent] for t in layer) for layer in self.layers]


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al., 2021), NaNs ignored."""
    x = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if len(x) == 0:
        return math.nan
    cut = math.floor(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean()) if len(x) - 2 * cut > 0 else float(x.mean())
