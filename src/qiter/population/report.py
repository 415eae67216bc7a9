"""A population's run folder: per-agent learning curves (CSV), a table, an aggregate plot.

Layout::

    RUN_DIR/config.yaml          the base config, the number of agents and the sweep
    RUN_DIR/agents/agent_0000.csv  step, train_return (episodes ended in the last 1000 steps), eval_return
    RUN_DIR/agents.csv           one row per agent: seed, swept values, final and best evaluation
    RUN_DIR/summary.md           the table per sweep combination: IQM, mean, fraction at the best return
    RUN_DIR/curves.png           evaluation IQM over agents with a 95% bootstrap band, per combination
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qiter.config import config_to_dict
from qiter.population.train import PopulationResult, iqm
from qiter.runs import save_config


def bootstrap_iqm_band(values: np.ndarray, n_resamples: int = 500, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM over agents (``values`` (n_agents,))."""
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    stats = [iqm(x[rng.integers(0, len(x), len(x))]) for _ in range(n_resamples)]
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(low), float(high)


def groups(result: PopulationResult, sweep: Mapping[str, Sequence[Any]]) -> dict[str, list[int]]:
    """Agents by sweep combination (label ``key=value, ...``; one group ``all`` without a sweep)."""
    keys = [k for k in sweep if k != "seed"]
    out: dict[str, list[int]] = {}
    for i, cfg in enumerate(result.configs):
        label = ", ".join(f"{k}={getattr(cfg, k)}" for k in keys) or "all"
        out.setdefault(label, []).append(i)
    return out


def write_run(result: PopulationResult, run_dir: str | Path, sweep: Mapping[str, Sequence[Any]]) -> Path:
    """Write the folder described in the module docstring; return it."""
    folder = Path(run_dir)
    (folder / "agents").mkdir(parents=True, exist_ok=True)
    base = config_to_dict(result.configs[0])
    base.pop("seed")
    save_config(folder, {**base, "n_agents": len(result.configs), "seed": result.configs[0].seed,
                         "sweep": {k: [str(v) for v in vs] for k, vs in sweep.items()}})  # fmt: skip
    evals = dict(zip(result.eval_steps, result.eval_returns))
    trains = dict(zip(result.log_steps, result.train_returns))
    steps = sorted(set(evals) | set(trains))
    for i in range(len(result.configs)):
        with open(folder / "agents" / f"agent_{i:04d}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "train_return", "eval_return"])
            for s in steps:
                writer.writerow(
                    [s, _cell(trains[s][i]) if s in trains else "", _cell(evals[s][i]) if s in evals else ""]
                )
    swept = [k for k in sweep if k != "seed"]
    best_evals = np.nanmax(np.stack(result.eval_returns), axis=0)
    with open(folder / "agents.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["agent", "seed", *swept, "final_return", "best_eval_return"])
        for i, cfg in enumerate(result.configs):
            row = [i, cfg.seed, *(getattr(cfg, k) for k in swept)]
            writer.writerow([*row, _cell(result.final_returns[i]), _cell(best_evals[i])])
    (folder / "summary.md").write_text(summary_table(result, sweep) + "\n")
    plot_curves(result, sweep, folder / "curves.png")
    return folder


def _cell(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.2f}"


def summary_table(result: PopulationResult, sweep: Mapping[str, Sequence[Any]]) -> str:
    """A markdown table per sweep combination: agents, final IQM [95% CI], mean, fraction at the top."""
    top = float(np.nanmax(result.final_returns))
    lines = [
        f"| combination | agents | final IQM [95% CI] | final mean | fraction at the best score ({top:.1f}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, members in groups(result, sweep).items():
        x = result.final_returns[members]
        low, high = bootstrap_iqm_band(x)
        lines.append(
            f"| {label} | {len(members)} | {iqm(x):.1f} [{low:.1f}, {high:.1f}] | {np.mean(x):.1f} | "
            f"{np.mean(x >= top):.2f} |"
        )
    return "\n".join(lines)


def plot_curves(result: PopulationResult, sweep: Mapping[str, Sequence[Any]], path: Path) -> None:
    """Evaluation return against steps: IQM over each combination's agents with a bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = np.array(result.eval_steps)
    table = np.stack(result.eval_returns)  # (n_evals, N)
    for label, members in groups(result, sweep).items():
        values = table[:, members]
        centre = np.array([iqm(row) for row in values])
        bands = np.array([bootstrap_iqm_band(row) for row in values])
        ax.plot(steps, centre, label=f"{label} ({len(members)} agents)")
        ax.fill_between(steps, bands[:, 0], bands[:, 1], alpha=0.25)
    ax.set_xlabel("environment steps per agent")
    ax.set_ylabel("evaluation return (IQM over agents)")
    ax.set_title(f"{result.configs[0].env_id}: {len(result.configs)} agents, 95% bootstrap band")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
