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
import os
import queue
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from qiter import runs
from qiter.errors import QiterError, RunInterrupted
from qiter.run_loop import RunEvents
from qiter.studies.workers import StopSignals, StudyInterrupted, command_line, parent_alive

__all__ = [
    "SweepRun",
    "parse_grid",
    "parse_seeds",
    "plan_sweep",
    "run_sweep",
    "sweep_name",
]

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
    algo: str = "dqn"  # the agent (a key of qiter.agent.ALGORITHMS)


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
    algo: str = "dqn",
    preset: str | None = None,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    env_kwargs: Mapping[str, Any] | None = None,
) -> list[SweepRun]:
    """Every (setting, seed) run of a sweep, with its config resolved and validated.

    :param env_id: The environment.
    :param seeds: The seeds.
    :param grid: Config key -> values to try (every combination is a setting).
    :param out: The sweep's folder.
    :param algo: The agent (a key of :data:`qiter.agent.ALGORITHMS`); its config class and presets are used.
    :param preset: A preset of ``algo``; default: the env id's, if any.
    :param config_file: A YAML file of config values.
    :param overrides: ``key=value`` strings applied to every run.
    :param env_kwargs: Keyword arguments of ``gymnasium.make`` for every run (over the config's
        ``env_kwargs``).
    :raises QiterError: An unknown algorithm or key, a value of the wrong type, an invalid config, no seeds.
    """
    from qiter.config import config_to_dict
    from qiter.resolve import resolve_config, with_env_kwargs

    if not seeds:
        raise QiterError("a sweep needs at least one seed")
    planned: list[SweepRun] = []
    combos = list(itertools.product(*[[(k, v) for v in vs] for k, vs in grid.items()]))
    for assignment in combos:
        setting = _setting_name(assignment)
        extra = [f"{key}={value}" for key, value in assignment]
        for seed in seeds:
            try:
                config = resolve_config(env_id, preset, config_file, [*overrides, *extra], seed, algo=algo)
                config = with_env_kwargs(config, env_kwargs or {})
            except QiterError as exc:
                raise QiterError(f"setting {setting}: {exc}") from exc
            key = f"{_folder_name(setting)}/seed-{seed}"
            planned.append(SweepRun(key, setting, seed, Path(out) / key, config_to_dict(config), algo))
    return planned


def sweep_name(planned: Sequence[SweepRun]) -> str:
    """A name for the sweep in a shared database, the same for the same command on every machine."""
    # A DQN sweep keeps the name it had before sweeps took other algorithms.
    runs_ = [(r.key, r.config) if r.algo == "dqn" else (r.key, r.config, r.algo) for r in planned]
    text = json.dumps(runs_, sort_keys=True, default=str)
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
# A worker process's queue of (run key, step) for the sweep's progress bar (set by _init_worker).
_WORKER_PROGRESS: Any = None
# A worker's sweep process (0: the runs go in the sweep's own process).
_PARENT_PID = 0
# The signal that stopped this process's runs: no run starts after it.
_STOP: int | None = None


def _counts(results: Iterable[dict[str, Any]]) -> str:
    """``"2 done, 1 interrupted"``: how many runs of each status."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _stopped(signum: int) -> None:
    """A signal stopped this process's runs: start no other; an orphaned worker leaves at once."""
    global _STOP
    _STOP = signum
    if _PARENT_PID and not parent_alive(_PARENT_PID):
        os._exit(128 + signum)  # its sweep is gone: nobody reads its results (the run saved first)


class _Follow(RunEvents):
    """Reports a run's steps to the sweep's progress display, and its heartbeat to the shared table.

    The display counts the steps trained in this sweep: a resumed run starts fresh episodes at its
    checkpoint's step, so its first episode tells where it started (``step - length * n_envs``).
    """

    def __init__(self, key: str, progress: Any, table: Any, n_envs: int = 1) -> None:
        self.key, self.progress, self.table, self.n_envs = key, progress, table, n_envs
        self.last_beat = time.monotonic()
        self.start: int | None = None

    def on_episode(self, step: int, episode_return: float, episode_length: int) -> None:
        if self.progress is not None:
            if self.start is None:
                self.start = max(step - episode_length * self.n_envs, 0)
            self.progress.put((self.key, step - self.start, self.start))
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


def _elsewhere(table: Any, key: str) -> dict[str, Any]:
    """The summary of a run another worker holds: done, or running, elsewhere."""
    status = table.statuses().get(key, ("running", None))[0]
    return {"key": key, "status": "done elsewhere" if status == "done" else "running elsewhere"}


def _run_one(
    run: SweepRun, storage: str | None, name: str, tensorboard: bool, progress: Any = None
) -> dict[str, Any]:
    """Run (or skip, or resume) one run of the sweep; nothing is written for a run another worker holds."""
    from qiter.agent import agent_class
    from qiter.config import config_from_dict
    from qiter.run_loop import train

    if progress is None:
        progress = _WORKER_PROGRESS
    table = _table(storage, name)
    state = run_state(run.run_dir)
    if state == "done":
        if table is not None and table.claim(run.key):  # finished here before the table knew of it
            table.finish(run.key)
        return _summary(run, "skipped")
    if table is not None and not table.claim(run.key):
        return _elsewhere(table, run.key)
    if _STOP is not None:
        if table is not None:
            table.release(run.key)
        return {"key": run.key, "status": "not started"}
    agent_cls = agent_class(run.algo)
    try:
        train(
            agent_cls,
            config_from_dict(agent_cls.config_class, run.config),
            run.run_dir,
            resume=state == "resumable",
            overwrite=state == "new",
            progress=False,
            verbose=0,
            tensorboard=tensorboard,
            events=[_Follow(run.key, progress, table, int(run.config.get("n_envs", 1)))],
        )
    except RunInterrupted as exc:  # saved at its step: the sweep started again resumes it
        if table is not None:
            table.release(run.key)
        _stopped(exc.signum)
        return {"key": run.key, "status": "interrupted", "step": exc.step, "signum": exc.signum}
    except BaseException:
        if table is not None:
            table.release(run.key)
        raise
    if table is not None:
        table.finish(run.key)
    return _summary(run, "resumed" if state == "resumable" else "done")


def _init_worker(parent_pid: int, progress: Any) -> None:
    """A worker's start: signals from the sweep's process only, death with it, one torch thread, the
    progress queue."""
    import torch

    from qiter.errors import one_line_warnings
    from qiter.studies.workers import die_with_parent

    global _WORKER_PROGRESS, _PARENT_PID
    _PARENT_PID = parent_pid
    # Its own process group: a Ctrl-C in the terminal reaches the sweep's process, which passes it on once
    # (a second SIGINT would stop a run before it saved).
    os.setpgrp()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _worker_signal)
    die_with_parent(parent_pid)
    one_line_warnings()  # a run's QiterWarning reads as in the sweep's own process
    torch.set_num_threads(1)  # the sweep's processes share the cores
    if progress is not None:
        progress.cancel_join_thread()  # never wait at exit on a parent that no longer reads
    _WORKER_PROGRESS = progress


def _worker_signal(signum: int, frame: FrameType | None) -> None:
    """A worker's SIGINT or SIGTERM outside a run's steps (which save and stop on their own)."""
    _stopped(signum)


class _Tally:
    """The sweep's progress bar: the steps its runs train here, out of the steps they have left.

    Its ``put`` takes ``(run key, steps trained, step it started at)`` (from a worker's queue, or directly
    for runs in this process); a resumed run's earlier steps leave the total, so the rate is true.
    """

    def __init__(self, bar: Any) -> None:
        self.bar = bar
        self.trained: dict[str, int] = {}
        self.starts: dict[str, int] = {}

    def put(self, item: tuple[str, int, int]) -> None:
        key, trained, start = item
        if key not in self.starts:
            self.starts[key] = start
            self.bar.total = (self.bar.total or 0) - start
        self.trained[key] = max(self.trained.get(key, 0), trained)
        self.refresh()

    def finish(self, run: SweepRun) -> None:
        """A run trained here ended: all its steps are done."""
        self.trained[run.key] = int(run.config["n_timesteps"]) - self.starts.get(run.key, 0)
        self.refresh()

    def drop(self, run: SweepRun) -> None:
        """A run not trained here (done or running elsewhere, not started): its steps leave the total."""
        self.bar.total = (self.bar.total or 0) - (
            int(run.config["n_timesteps"]) - self.starts.pop(run.key, 0)
        )
        self.trained.pop(run.key, None)
        self.refresh()

    def refresh(self) -> None:
        self.bar.update(sum(self.trained.values()) - self.bar.n)


def run_sweep(
    planned: Sequence[SweepRun],
    *,
    jobs: int = 1,
    storage: str | None = None,
    name: str | None = None,
    tensorboard: bool = True,
    progress: bool = True,
    command: str | None = None,
) -> list[dict[str, Any]]:
    """Run a planned sweep in ``jobs`` processes, skipping finished runs and resuming interrupted ones.

    Runs finished here are skipped, and with ``storage``, runs the shared table gives as done by another
    machine too, before any worker starts; a run another worker holds is left to it. Only the runs this
    process trains get a folder and count in the progress bar.

    :param planned: The runs (:func:`plan_sweep`).
    :param jobs: Worker processes (1: the runs go one after the other in this process). Workers die with
        this process, even when it is killed by SIGKILL (:mod:`qiter.studies.workers`).
    :param storage: A database URL whose table lists the sweep's runs for every machine; ``None``: this
        machine alone, the run folders say what is done.
    :param name: The sweep's name in the database; default :func:`sweep_name`.
    :param tensorboard: Also write TensorBoard logs.
    :param progress: One progress bar for the whole sweep (steps over every run it trains).
    :param command: The command that runs this sweep, for the message of an interruption.
    :return: One summary per run: ``key``, ``status`` (done, resumed, skipped, done elsewhere, running
        elsewhere) and ``eval.json``'s values.
    :raises ~qiter.studies.workers.StudyInterrupted: SIGINT or SIGTERM stopped the sweep: its runs
        finished their step and saved (the workers are passed the signal), no other run started.
    """
    global _STOP
    if jobs < 1:
        raise QiterError(f"--jobs must be at least 1, not {jobs}")
    _STOP = None
    name = name or sweep_name(planned)
    results: list[dict[str, Any]] = []
    todo: list[SweepRun] = []
    table = None
    if storage is not None:
        table = _table(storage, name)  # a bad URL is reported here, before any worker starts
        table.add([r.key for r in planned])
    shared = table.statuses() if table is not None else {}
    for run in planned:
        if run_state(run.run_dir) == "done":
            results.append(_run_one(run, storage, name, tensorboard))  # skipped (and recorded as done)
        elif shared.get(run.key, ("", None))[0] == "done":
            results.append({"key": run.key, "status": "done elsewhere"})
        else:
            todo.append(run)
    signum = _run_todo(todo, jobs, storage, name, tensorboard, progress, results) if todo else None
    order = {r.key: i for i, r in enumerate(planned)}
    results.sort(key=lambda r: order[r["key"]])
    if signum is not None:
        state = _counts(results)
        if any(r["status"] == "interrupted" for r in results):
            state += "; each interrupted run saved its latest.pt"
        raise StudyInterrupted(signum, "sweep", state, command or command_line())
    return results


def _run_todo(
    todo: Sequence[SweepRun],
    jobs: int,
    storage: str | None,
    name: str,
    tensorboard: bool,
    progress: bool,
    results: list[dict[str, Any]],
) -> int | None:
    """Train the runs left to do, with one progress bar over their steps; append their summaries.

    :return: The signal that stopped the sweep, if one did.
    """
    from tqdm.auto import tqdm

    total = sum(int(r.config["n_timesteps"]) for r in todo)
    bar = tqdm(total=total, unit="step", desc=f"sweep ({len(todo)} runs)", disable=not progress)
    tally = _Tally(bar)
    finished: list[str] = []

    def record(run: SweepRun, result: dict[str, Any]) -> None:
        results.append(result)
        finished.append(run.key)
        status = result["status"]
        if status in ("done", "resumed"):
            if status == "resumed" and run.key not in tally.starts:
                tally.drop(run)  # resumed within its last episode: its start (a few steps) is not known
            else:
                tally.finish(run)
            bar.write(f"{run.key}: return {result.get('mean_return', float('nan')):.1f}")
        elif status != "interrupted":  # done or running elsewhere, not started: no steps of this process
            tally.drop(run)
        bar.set_postfix(runs=f"{len(finished)}/{len(todo)}", refresh=False)

    try:
        if jobs == 1:
            # In this process: no worker start-up, which costs seconds of imports. A run's own guard takes
            # the signals while it steps; between runs they land here.
            local = tally if progress else None
            with StopSignals() as signals:
                for run in todo:
                    if signals.signum is not None:
                        _stopped(signals.signum)
                    record(run, _run_one(run, storage, name, tensorboard, local))
            signum = signals.signum
        else:
            signum = _run_in_pool(todo, jobs, storage, name, tensorboard, progress, record, tally)
    finally:
        bar.close()
    stopped = [r["signum"] for r in results if r.get("signum") is not None]
    return signum if signum is not None else (stopped[0] if stopped else None)


def _run_in_pool(
    planned: Sequence[SweepRun],
    jobs: int,
    storage: str | None,
    name: str,
    tensorboard: bool,
    progress: bool,
    record: Callable[[SweepRun, dict[str, Any]], None],
    tally: _Tally,
) -> int | None:
    """Run the sweep in ``jobs`` worker processes; ``record`` each result as it comes, and ``tally`` the
    steps the workers report.

    :return: The signal (SIGINT, SIGTERM) that stopped it: passed on to the workers, whose runs save and
        stop; runs not yet started are cancelled.
    """
    context = mp.get_context("spawn")  # no fork of a process that holds threads and open databases
    # A plain queue handed to the workers as they start (no manager process, which would outlive a killed
    # sweep as the workers did).
    steps_queue = context.Queue() if progress else None
    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(planned)), mp_context=context, initializer=_init_worker,
        initargs=(os.getpid(), steps_queue),
    )  # fmt: skip
    with pool, StopSignals(lambda: list(pool._processes or {})) as signals:
        pending: dict[Future[dict[str, Any]], SweepRun] = {
            pool.submit(_run_one, run, storage, name, tensorboard): run for run in planned
        }
        try:
            while pending:
                finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(steps_queue, tally)
                if signals.signum is not None:
                    for future in pending:
                        future.cancel()  # those a worker has not taken; the others start nothing
                for future in finished:
                    run = pending.pop(future)
                    record(run, _outcome(run, future, signals.signum))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if steps_queue is not None:
        steps_queue.close()
    return signals.signum


def _outcome(run: SweepRun, future: Future[dict[str, Any]], signum: int | None) -> dict[str, Any]:
    """The summary of a run a worker had, cancelled, or lost with a worker the signal ended as it started."""
    if future.cancelled():
        return {"key": run.key, "status": "not started"}
    if signum is not None and isinstance(future.exception(), BrokenProcessPool):
        # The signal ended a worker as it started, and the pool with it.
        return {"key": run.key, "status": "stopped" if run.run_dir.exists() else "not started"}
    return future.result()


def _drain(steps_queue: Any, tally: _Tally) -> None:
    if steps_queue is None:
        return
    while True:
        try:
            tally.put(steps_queue.get_nowait())
        except queue.Empty:
            return
