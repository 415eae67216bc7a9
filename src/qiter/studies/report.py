"""Runs grouped by setting, and the statistics of a fair comparison: rliable's interquartile mean (IQM) with
stratified-bootstrap confidence intervals, mean and std, the fraction of seeds above a threshold.

Runs are read from their folders (``config.yaml``, ``eval.csv``, ``eval.json``), so any run folder, a sweep's
folder or a tuning study's counts, of any algorithm. Two runs share a setting when they are of the same
algorithm and their configs differ only in the seed; a setting is labelled by the keys in which the
settings differ (``algo`` among them when algorithms differ).

A run's learning curve is its periodic evaluations (``eval.csv``) ending with its final evaluation
(``eval.json``, at the step it was made), so the last point of a curve is the number the report gives,
from the same evaluation episodes; a run shorter than its evaluation interval has that point only.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qiter import runs
from qiter.errors import QiterError
from qiter.run_config import q_value_bound

__all__ = ["METRICS", "Group", "RunRecord", "SettingSummary", "group_runs", "iqm_curve", "iqm_interval",
           "load_runs", "markdown_table", "q_bound", "summarize"]  # fmt: skip

# Config keys that say how a run was done, not what was run: not part of a setting.
NOT_SETTING = ("seed", "device")
# Bootstrap resamples: the intervals' third digit is stable from here on, and a report takes a second.
REPS = 5000


@dataclass
class RunRecord:
    """What a comparison needs of one run folder."""

    path: Path
    config: dict[str, Any]
    eval_steps: np.ndarray
    eval_returns: np.ndarray
    final_return: float | None  # eval.json's greedy evaluation (None: the run has not finished)
    wall_time: float | None
    q_steps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # train.csv's steps with a mean_q
    mean_q: np.ndarray = field(default_factory=lambda: np.zeros(0))  # train.csv's mean_q at those steps
    algo: str | None = None  # the agent (eval.json's, or the latest checkpoint's); None: not recorded
    final_step: float | None = None  # the step of the final evaluation (eval.json's "steps")

    def return_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The run's evaluation returns by step: the periodic ones, then the final evaluation at its step
        (in place of a periodic one at that step: the same network, the episodes the report counts)."""
        if self.final_return is None or self.final_step is None:
            return self.eval_steps, self.eval_returns
        before = self.eval_steps < self.final_step
        steps = np.append(self.eval_steps[before], self.final_step)
        return steps, np.append(self.eval_returns[before], self.final_return)

    @property
    def peak_mean_q(self) -> float | None:
        """The largest mean Q-value the run logged (a critic that runs away shows here first)."""
        return float(self.mean_q.max()) if len(self.mean_q) else None


@dataclass
class Group:
    """The runs of one setting."""

    label: str
    runs: list[RunRecord] = field(default_factory=list)


def _run_folders(path: Path) -> list[Path]:
    if (path / runs.CONFIG_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise QiterError(f"{path} does not exist" if not path.exists() else f"{path} is not a run folder")
    found = sorted(p.parent for p in path.rglob(runs.CONFIG_FILE))
    if not found:
        raise QiterError(f"{path} is not a qiter run or sweep folder (no {runs.CONFIG_FILE} in it)")
    return found


def _load_run(path: Path) -> RunRecord:
    config = runs.load_run_config(path)
    if not (path / "eval.csv").is_file() and not (path / runs.EVAL_FILE).is_file():
        raise QiterError(f"{path} holds no evaluation yet (no eval.csv or {runs.EVAL_FILE})")
    steps, returns = np.zeros(0), np.zeros(0)
    if (path / "eval.csv").is_file():
        columns = runs.read_csv(path, "eval")
        if "step" not in columns or "mean_return" not in columns:
            raise QiterError(f"{path / 'eval.csv'} lacks the step or mean_return column")
        steps, returns = columns["step"], columns["mean_return"]
    final, wall, final_step, algo = None, None, None, None
    if (path / runs.EVAL_FILE).is_file():
        import json

        try:
            result = json.loads((path / runs.EVAL_FILE).read_text(encoding="utf-8"))
            final, wall = float(result["mean_return"]), result.get("wall_time_s")
            final_step = None if result.get("steps") is None else float(result["steps"])
            algo = result.get("algo")
        except (ValueError, KeyError, TypeError) as exc:
            raise QiterError(f"{path / runs.EVAL_FILE} is not a qiter evaluation ({exc})") from exc
    if algo is None and runs.latest_checkpoint(path) is not None:  # a run still going: its checkpoint's
        from qiter.resolve import run_algo

        algo = run_algo(path)
    q_steps, mean_q = _mean_q(path)
    return RunRecord(
        path, config, steps, returns, final, None if wall is None else float(wall), q_steps, mean_q,
        None if algo is None else str(algo), final_step,
    )  # fmt: skip


def _mean_q(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The steps and mean Q-values of a run's ``train.csv`` (empty when it logged none)."""
    if not (path / "train.csv").is_file():
        return np.zeros(0), np.zeros(0)
    columns = runs.read_csv(path, "train")
    if "mean_q" not in columns or "step" not in columns:
        return np.zeros(0), np.zeros(0)
    keep = ~np.isnan(columns["mean_q"])
    return columns["step"][keep], columns["mean_q"][keep]


def load_runs(paths: Sequence[str | Path], algo: str | None = None) -> list[RunRecord]:
    """Every run in ``paths`` (run folders, or folders holding them at any depth: sweeps, studies).

    :param paths: The folders.
    :param algo: Only the runs of this algorithm (a key of :data:`qiter.agent.ALGORITHMS`).
    :raises QiterError: A path that does not exist or holds no qiter run, a run without evaluations, no run
        of ``algo``.
    """
    if not paths:
        raise QiterError("give at least one run or sweep folder")
    folders: list[Path] = []
    for path in paths:
        folders.extend(f for f in _run_folders(Path(path)) if f not in folders)
    records = [_load_run(f) for f in folders]
    if algo is None:
        return records
    kept = [r for r in records if r.algo == algo]
    if not kept:
        found = sorted({r.algo or "unrecorded" for r in records})
        raise QiterError(f"no {algo} run in {', '.join(map(str, paths))}: its runs are {', '.join(found)}")
    return kept


def _setting(record: RunRecord) -> tuple[tuple[str, str], ...]:
    values = {"algo": record.algo, **record.config}
    return tuple(sorted((k, repr(v)) for k, v in values.items() if k not in NOT_SETTING))


def group_runs(records: Sequence[RunRecord], labels: Sequence[str] | None = None) -> list[Group]:
    """Runs grouped by setting (configs equal but for the seed), in order of first appearance; each group
    labelled by its values of the keys in which settings differ, or by ``labels``, one per setting.

    :raises QiterError: ``labels`` whose number is not the number of settings.
    """
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for record in records:
        groups.setdefault(_setting(record), Group("")).runs.append(record)
    keys = list(groups)
    differing = sorted({k for key in keys for k, _ in key if len({dict(o).get(k) for o in keys}) > 1})
    # The algorithm first: it says more than any of its settings.
    differing.sort(key=lambda k: k != "algo")
    for _key, group in groups.items():
        first = group.runs[0]
        values = {"algo": first.algo, **first.config}
        if differing:
            group.label = ", ".join(f"{k}={_short(values.get(k))}" for k in differing)
        else:
            env_id = str(first.config.get("env_id", "runs"))
            group.label = env_id if first.algo in (None, "dqn") else f"{first.algo} {env_id}"
    if labels is not None:
        if len(labels) != len(groups):
            raise QiterError(f"{len(labels)} labels for {len(groups)} settings: give one label per setting")
        for group, label in zip(groups.values(), labels):
            group.label = label
    return list(groups.values())


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _iqm(scores: np.ndarray) -> np.ndarray:
    """IQM over runs (axis 0) of ``(runs, tasks, points)`` scores: one value per point."""
    from scipy.stats import trim_mean

    return np.asarray(trim_mean(scores.reshape(scores.shape[0], -1), 0.25, axis=0))


def _interval(scores: np.ndarray, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM and 95% stratified-bootstrap interval (rliable) of ``(runs, points)`` scores."""
    from rliable import library as rly

    data = {"x": scores[:, np.newaxis, :]}  # one task: the stratified bootstrap resamples runs
    # rliable's stratified bootstrap draws from numpy's global generator (its random_state is not used for
    # the resampling): seed that, and give the caller's state back afterwards.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # rliable passes arch a RandomState, which arch (7.x) deprecates: nothing a user can act on.
            warnings.simplefilter("ignore", FutureWarning)
            points, intervals = rly.get_interval_estimates(
                data, _iqm, reps=reps, random_state=np.random.RandomState(seed)
            )
    finally:
        np.random.set_state(saved)
    return points["x"], intervals["x"][0], intervals["x"][1]


def iqm_interval(
    scores: Sequence[float] | np.ndarray, reps: int = REPS, seed: int = 0
) -> tuple[float, float, float]:
    """IQM of final scores across runs, with its 95% stratified-bootstrap confidence interval.

    :param scores: One score per run.
    :param reps: Bootstrap resamples.
    :param seed: Seed of the resampling (the same data gives the same interval).
    :return: ``(iqm, low, high)``.
    """
    array = np.asarray(scores, dtype=np.float64)[:, np.newaxis]
    point, low, high = _interval(array, reps, seed)
    return float(point[0]), float(low[0]), float(high[0])


#: What a learning curve can show: the evaluation return (eval.csv) or the critic's mean Q (train.csv).
METRICS = ("return", "mean_q")


def iqm_curve(
    group: Group, reps: int = 2000, seed: int = 0, metric: str = "return"
) -> tuple[np.ndarray, ...]:
    """The learning curve of a setting: IQM across runs at each step, with its 95% stratified-bootstrap
    band, of the evaluation return or of the mean Q-value of the minibatches (``metric="mean_q"``).

    A run's returns end with its final evaluation (:meth:`RunRecord.return_curve`), so the last point is the
    report's number. Runs are put on the union of their steps; a run that stopped early
    (``stop_at_return``) keeps its last value, and steps before every run's first value are dropped.

    :return: ``(steps, iqm, low, high)``.
    """
    if metric not in METRICS:
        raise QiterError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    series = [r.return_curve() if metric == "return" else (r.q_steps, r.mean_q) for r in group.runs]
    steps = np.unique(np.concatenate([s for s, _ in series]))
    table = np.full((len(group.runs), len(steps)), math.nan)
    for i, (run_steps, values) in enumerate(series):
        if len(run_steps) == 0:
            continue
        where = np.searchsorted(run_steps, steps, side="right") - 1
        table[i] = np.where(where >= 0, values[np.maximum(where, 0)], math.nan)
    keep = ~np.isnan(table).any(axis=0)
    if not keep.any():
        raise QiterError(f"setting {group.label}: its runs have no {metric} step in common")
    steps, table = steps[keep], table[:, keep]
    point, low, high = _interval(table, reps, seed)
    return steps, point, low, high


@dataclass
class SettingSummary:
    """One row of a report."""

    label: str
    n_runs: int
    iqm: float
    low: float
    high: float
    mean: float
    std: float
    above: float | None  # fraction of runs whose final return reaches the threshold
    time_per_run: float | None
    peak_mean_q: float | None = None  # the largest mean Q-value any of its runs logged
    q_bound: float | None = None  # max_reward / (1 - gamma), when the config declares max_reward


def summarize(
    groups: Sequence[Group], threshold: float | None = None, reps: int = REPS
) -> list[SettingSummary]:
    """Final-return statistics of each setting (runs that have not finished are left out).

    :param groups: The settings (:func:`group_runs`).
    :param threshold: Also give the fraction of runs whose final return is at least this.
    :param reps: Bootstrap resamples.
    :raises QiterError: A setting none of whose runs has finished.
    """
    rows = []
    for group in groups:
        finished = [r for r in group.runs if r.final_return is not None]
        if not finished:
            raise QiterError(f"setting {group.label}: no run has finished (no {runs.EVAL_FILE})")
        # Sorted: the bootstrap then gives the same interval whatever order the folders were read in.
        finals = np.sort(np.array([r.final_return for r in finished], dtype=np.float64))
        iqm, low, high = iqm_interval(finals, reps)
        times = [r.wall_time for r in finished if r.wall_time is not None]
        peaks = [r.peak_mean_q for r in finished if r.peak_mean_q is not None]
        rows.append(
            SettingSummary(
                group.label, len(finished), iqm, low, high, float(finals.mean()), float(finals.std()),
                None if threshold is None else float(np.mean(finals >= threshold)),
                float(np.mean(times)) if times else None,
                max(peaks) if peaks else None, q_bound(finished[0].config),
            )
        )  # fmt: skip
    return rows


def q_bound(config: dict[str, Any]) -> float | None:
    """The bound on Q-values of a run's config (:func:`~qiter.run_config.q_value_bound`)."""
    max_reward, gamma = config.get("max_reward"), config.get("gamma")
    return None if gamma is None else q_value_bound(max_reward, float(gamma))


def markdown_table(rows: Sequence[SettingSummary], threshold: float | None = None) -> str:
    """The report as a markdown table."""
    header = ["setting", "runs", "final return IQM [95% CI]", "mean ± std"]
    if threshold is not None:
        header.append(f"seeds ≥ {threshold:g}")
    show_q = any(row.peak_mean_q is not None for row in rows)
    if show_q:
        header.append("peak mean Q (bound)")
    header.append("time per run (s)")
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: | --- | --- |" + " ---: |" * (len(header) - 4)]
    for row in rows:
        cells = [row.label, str(row.n_runs), f"{row.iqm:.1f} [{row.low:.1f}, {row.high:.1f}]",
                 f"{row.mean:.1f} ± {row.std:.1f}"]  # fmt: skip
        if threshold is not None:
            cells.append(f"{row.above:.0%}" if row.above is not None else "")
        if show_q:
            peak = f"{row.peak_mean_q:.4g}" if row.peak_mean_q is not None else ""
            cells.append(peak + (f" ({row.q_bound:.4g})" if row.q_bound is not None else ""))
        cells.append(f"{row.time_per_run:.1f}" if row.time_per_run is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
