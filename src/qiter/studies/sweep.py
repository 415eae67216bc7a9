"""Sweeps: every (setting, seed) pair of a grid as an ordinary run folder, run in parallel processes.

A sweep is planned in full before anything runs (:func:`plan_sweep`: every config resolved and validated,
so a bad ``--grid`` key or value is one line and no folder), then each run goes to a worker process
(:func:`run_sweep`). Runs live in ``OUT/<setting>/seed-<n>/``; a sweep started again skips the runs that
finished (``eval.json`` written) and resumes the others from their latest checkpoint. With a storage URL,
the list of runs is kept in a database table (:class:`~qiter.studies.storage.RunTable`): the same command
on several machines shares the work, each run done once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing as mp
import queue
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qiter import runs
from qiter.errors import QiterError
from qiter.run_loop import RunEvents

__all__ = ["SweepRun", "parse_grid", "parse_seeds", "plan_sweep", "run_sweep", "sweep_name"]

# Seconds between a sweep run's heartbeats in the shared table (a run's evaluations come more often).
BEAT_EVERY = 10.0


@dataclass(frozen=True)
class SweepRun:
    """One (setting, seed) pair of a sweep."""

    key: str  # "<setting>/seed-<n>": the run's name in the shared table and its folder under OUT
    setting: str
    seed: int
    run_dir: Path
    config: dict[str, Any]  # the resolved config, as plain values


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``"0-9"``, ``"0,3,7"`` or a mix (``"0-2,10"``).

    :raises QiterError: Anything else, or a range that goes down.
    """
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise QiterError(f"--seeds {text!r}: expected seeds like 0-9 or 0,3,7")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise QiterError(f"--seeds {text!r}: the range {part.strip()} goes down")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise QiterError(f"--seeds {text!r} names a seed twice")
    return seeds


def parse_grid(items: Iterable[str]) -> dict[str, list[str]]:
    """``key=v1,v2`` strings to ``{key: [v1, v2]}`` (values are checked against the config in
    :func:`plan_sweep`).

    :raises QiterError: A string without ``=``, a key given twice, or an empty value list.
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise QiterError(f"--grid {item!r}: expected KEY=VALUE1,VALUE2,...")
        if key in grid:
            raise QiterError(f"--grid names {key!r} twice")
        choices = [v.strip() for v in values.split(",")]
        if not all(choices):
            raise QiterError(f"--grid {item!r}: empty value")
        grid[key] = choices
    return grid


def _setting_name(assignment: Sequence[tuple[str, str]]) -> str:
    if not assignment:
        return "default"
    return ",".join(f"{key}={value}" for key, value in assignment)


def _folder_name(setting: str) -> str:
    return re.sub(r"[^A-Za-z0-9._,=+-]+", "_", setting)


def plan_sweep(
    env_id: str,
    seeds: Sequence[int],
    grid: dict[str, list[str]],
    out: str | Path,
    *,
    preset: str | None = None,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
) -> list[SweepRun]:
    """Every (setting, seed) run of a sweep, with its config resolved and validated.

    :param env_id: The environment.
    :param seeds: The seeds.
    :param grid: Config key -> values to try (every combination is a setting).
    :param out: The sweep's folder.
    :param preset: A preset; default: the env id's, if any.
    :param config_file: A YAML file of config values.
    :param overrides: ``key=value`` strings applied to every run.
    :raises QiterError: An unknown key, a value of the wrong type, an invalid config, no seeds.
    """
    from qiter.config import config_to_dict
    from qiter.resolve import resolve_config

    if not seeds:
        raise QiterError("a sweep needs at least one seed")
    planned: list[SweepRun] = []
    combos = list(itertools.product(*[[(k, v) for v in vs] for k, vs in grid.items()]))
    for assignment in combos:
        setting = _setting_name(assignment)
        extra = [f"{key}={value}" for key, value in assignment]
        for seed in seeds:
            try:
                config = resolve_config(env_id, preset, config_file, [*overrides, *extra], seed)
            except QiterError as exc:
                raise QiterError(f"setting {setting}: {exc}") from exc
            key = f"{_folder_name(setting)}/seed-{seed}"
            planned.append(SweepRun(key, setting, seed, Path(out) / key, config_to_dict(config)))
    return planned


def sweep_name(planned: Sequence[SweepRun]) -> str:
    """A name for the sweep in a shared database, the same for the same command on every machine."""
    text = json.dumps([(r.key, r.config) for r in planned], sort_keys=True, default=str)
    return "sweep-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def run_state(run_dir: Path) -> str:
    """``"done"`` (``eval.json`` written), ``"resumable"`` (a checkpoint) or ``"new"``."""
    if (run_dir / runs.EVAL_FILE).is_file():
        return "done"
    if runs.latest_checkpoint(run_dir) is not None:
        return "resumable"
    return "new"


# ---------------------------------------------------------------------------------------------------------
# Worker processes
# ---------------------------------------------------------------------------------------------------------

_TABLES: dict[tuple[str, str], Any] = {}


class _Follow(RunEvents):
    """Reports a run's steps to the sweep's progress display, and its heartbeat to the shared table."""

    def __init__(self, key: str, progress: Any, table: Any) -> None:
        self.key, self.progress, self.table = key, progress, table
        self.last_beat = time.monotonic()

    def on_episode(self, step: int, episode_return: float, episode_length: int) -> None:
        if self.progress is not None:
            self.progress.put((self.key, step))
        if self.table is not None and time.monotonic() - self.last_beat > BEAT_EVERY:
            self.last_beat = time.monotonic()
            self.table.beat(self.key)


def _table(storage: str | None, name: str) -> Any:
    if storage is None:
        return None
    from qiter.studies.storage import RunTable

    if (storage, name) not in _TABLES:
        _TABLES[(storage, name)] = RunTable(storage, name, grace=3 * BEAT_EVERY)
    return _TABLES[(storage, name)]


def _summary(run: SweepRun, status: str) -> dict[str, Any]:
    result: dict[str, Any] = {"key": run.key, "status": status}
    path = run.run_dir / runs.EVAL_FILE
    if path.is_file():
        result.update(json.loads(path.read_text(encoding="utf-8")))
    return result


def _run_one(
    run: SweepRun, storage: str | None, name: str, tensorboard: bool, progress: Any
) -> dict[str, Any]:
    """Run (or skip, or resume) one run of the sweep."""
    from qiter.config import config_from_dict
    from qiter.dqn.config import DQNConfig
    from qiter.dqn.trainer import train

    table = _table(storage, name)
    state = run_state(run.run_dir)
    if state == "done":
        if table is not None and table.claim(run.key):  # finished here before the table knew of it
            table.finish(run.key)
        return _summary(run, "skipped")
    if table is not None and not table.claim(run.key):
        return {"key": run.key, "status": "elsewhere"}
    try:
        train(
            config_from_dict(DQNConfig, run.config),
            run.run_dir,
            resume=state == "resumable",
            overwrite=state == "new",
            progress=False,
            verbose=0,
            tensorboard=tensorboard,
            events=[_Follow(run.key, progress, table)],
        )
    except BaseException:
        if table is not None:
            table.release(run.key)
        raise
    if table is not None:
        table.finish(run.key)
    return _summary(run, "resumed" if state == "resumable" else "done")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # the sweep's processes share the cores


class _LocalProgress:
    """The progress queue's ``put`` for runs in this process: the bar follows each episode directly."""

    def __init__(self, bar: Any, done_steps: dict[str, int]) -> None:
        self.bar, self.done_steps = bar, done_steps

    def put(self, item: tuple[str, int]) -> None:
        key, step = item
        self.done_steps[key] = max(self.done_steps.get(key, 0), step)
        self.bar.update(sum(self.done_steps.values()) - self.bar.n)


def run_sweep(
    planned: Sequence[SweepRun],
    *,
    jobs: int = 1,
    storage: str | None = None,
    name: str | None = None,
    tensorboard: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run a planned sweep in ``jobs`` processes, skipping finished runs and resuming interrupted ones.

    :param planned: The runs (:func:`plan_sweep`).
    :param jobs: Worker processes (1: the runs go one after the other in this process).
    :param storage: A database URL whose table lists the sweep's runs for every machine; ``None``: this
        machine alone, the run folders say what is done.
    :param name: The sweep's name in the database; default :func:`sweep_name`.
    :param tensorboard: Also write TensorBoard logs.
    :param progress: One progress bar for the whole sweep (steps over every run).
    :return: One summary per run: ``key``, ``status`` (done, resumed, skipped, elsewhere) and ``eval.json``.
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise QiterError(f"--jobs must be at least 1, not {jobs}")
    name = name or sweep_name(planned)
    if storage is not None:
        table = _table(storage, name)  # a bad URL is reported here, before any worker starts
        table.add([r.key for r in planned])
    for run in planned:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    total = sum(int(r.config["n_timesteps"]) for r in planned)
    bar = tqdm(total=total, unit="step", desc=f"sweep ({len(planned)} runs)", disable=not progress)
    done_steps: dict[str, int] = {}
    results: list[dict[str, Any]] = []

    def record(run: SweepRun, result: dict[str, Any]) -> None:
        results.append(result)
        done_steps[run.key] = int(run.config["n_timesteps"])
        if result["status"] in ("done", "resumed"):
            bar.write(f"{run.key}: return {result.get('mean_return', float('nan')):.1f}")
        bar.update(sum(done_steps.values()) - bar.n)
        bar.set_postfix(runs=f"{len(results)}/{len(planned)}", refresh=False)

    try:
        if jobs == 1:
            # In this process: no worker start-up, which costs seconds of imports.
            local = _LocalProgress(bar, done_steps) if progress else None
            for run in planned:
                record(run, _run_one(run, storage, name, tensorboard, local))
        else:
            _run_in_pool(planned, jobs, storage, name, tensorboard, progress, record, done_steps)
    finally:
        bar.close()
    order = {r.key: i for i, r in enumerate(planned)}
    return sorted(results, key=lambda r: order[r["key"]])


def _run_in_pool(
    planned: Sequence[SweepRun],
    jobs: int,
    storage: str | None,
    name: str,
    tensorboard: bool,
    progress: bool,
    record: Callable[[SweepRun, dict[str, Any]], None],
    done_steps: dict[str, int],
) -> None:
    """Run the sweep in ``jobs`` worker processes; ``record`` each result as it comes."""
    context = mp.get_context("spawn")  # no fork of a process that holds threads and open databases
    manager = context.Manager() if progress else None
    steps_queue = manager.Queue() if manager is not None else None
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker) as pool:
            pending: dict[Future[dict[str, Any]], SweepRun] = {
                pool.submit(_run_one, run, storage, name, tensorboard, steps_queue): run for run in planned
            }
            try:
                while pending:
                    finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    _drain(steps_queue, done_steps)
                    for future in finished:
                        record(pending.pop(future), future.result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        if manager is not None:
            manager.shutdown()


def _drain(steps_queue: Any, done_steps: dict[str, int]) -> None:
    if steps_queue is None:
        return
    while True:
        try:
            key, step = steps_queue.get_nowait()
        except queue.Empty:
            return
        done_steps[key] = max(done_steps.get(key, 0), step)
