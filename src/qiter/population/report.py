"""A population's reports, written once it has finished: a table per agent, a summary, an aggregate plot.

The run folder is the lifecycle's (:mod:`qiter.lifecycle`), filled as the run goes::

    RUN_DIR/config.yaml            the base config, the number of agents and the sweep
    RUN_DIR/agents/agent_0000.csv  per log point: train_return (episodes ended in the last 1000 steps),
                                   eval_return (at evaluation points), loss, mean_q
    RUN_DIR/train.csv, eval.csv    the same over the agents: IQM, min, max (and TensorBoard, tb/)
    RUN_DIR/checkpoints/latest.pt  the whole population (qiter population --resume RUN_DIR)
    RUN_DIR/eval.json              the final evaluation

and at the end, by this module::

    RUN_DIR/agents.csv           one row per agent: seed, swept values, final and best evaluation
    RUN_DIR/summary.md           the table per sweep combination: IQM, mean, fraction at the best return
    RUN_DIR/curves.png           evaluation IQM over agents with a 95% bootstrap band, per combination
                                 (drawn by qiter plot's code)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qiter.config import config_to_dict
from qiter.population.result import PopulationResult
from qiter.studies.report import Group, RunRecord, iqm_interval


def groups(result: PopulationResult, sweep: Mapping[str, Sequence[Any]]) -> dict[str, list[int]]:
    """Agents by sweep combination (label ``key=value, ...``; one group ``all`` without a sweep)."""
    keys = [k for k in sweep if k != "seed"]
    out: dict[str, list[int]] = {}
    for i, cfg in enumerate(result.configs):
        label = ", ".join(f"{k}={getattr(cfg, k)}" for k in keys) or "all"
        out.setdefault(label, []).append(i)
    return out


def write_reports(result: PopulationResult, run_dir: str | Path, sweep: Mapping[str, Sequence[Any]]) -> Path:
    """Write ``agents.csv``, ``summary.md`` and ``curves.png`` (see the module docstring); return the folder."""
    folder = Path(run_dir)
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
    """A markdown table per sweep combination: agents, final IQM [95% CI] (rliable's stratified bootstrap,
    as ``qiter report``), mean, fraction at the top."""
    top = float(np.nanmax(result.final_returns))
    lines = [
        f"| combination | agents | final IQM [95% CI] | final mean | fraction at the best score ({top:.1f}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, members in groups(result, sweep).items():
        x = result.final_returns[members]
        finite = np.sort(x[~np.isnan(x)])
        centre, low, high = iqm_interval(finite) if len(finite) else (math.nan,) * 3
        lines.append(
            f"| {label} | {len(members)} | {centre:.1f} [{low:.1f}, {high:.1f}] | {np.nanmean(x):.1f} | "
            f"{np.mean(x >= top):.2f} |"
        )
    return "\n".join(lines)


def as_groups(result: PopulationResult, sweep: Mapping[str, Sequence[Any]], folder: Path) -> list[Group]:
    """The population as the studies see runs: one :class:`RunRecord` per agent, grouped by combination, so
    that ``qiter plot``'s code draws its curves."""
    steps = np.array(result.eval_steps, dtype=np.float64)
    table = np.stack(result.eval_returns)  # (n_evals, N)
    out = []
    for label, members in groups(result, sweep).items():
        records = [
            RunRecord(
                folder / "agents" / f"agent_{i:04d}.csv",
                config_to_dict(result.configs[i]),
                steps,
                table[:, i],
                float(result.final_returns[i]),
                None,
            )
            for i in members
        ]
        out.append(Group(label, records))
    return out


def plot_curves(result: PopulationResult, sweep: Mapping[str, Sequence[Any]], path: Path) -> None:
    """Evaluation return against steps: IQM over each combination's agents with its 95% stratified-bootstrap
    band, drawn by :func:`qiter.studies.plots.plot_curves` (the code of ``qiter plot``)."""
    from qiter.studies.plots import plot_curves as plot_groups

    title = f"{result.configs[0].env_id}: {len(result.configs)} agents, IQM and 95% stratified-bootstrap CI"
    plot_groups(as_groups(result, sweep, path.parent), path, title)
