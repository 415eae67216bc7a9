"""Hyperparameter tuning with Optuna: a study in a database (an SQLite file, or a server shared by machines).

Each trial is an ordinary run (``OUT/trials/trial-<n>/``) of the algorithm with values drawn from its search
space (declared next to its config: :mod:`qiter.dqn.search_space`, :mod:`qiter.continuous.search_space`),
any algorithm of :data:`qiter.agent.ALGORITHMS` that has one. The run loop's evaluations are reported
to Optuna through a :class:`~qiter.run_loop.RunEvents` and the pruner (median by default, successive
halving on request) stops hopeless trials early; the objective is the final greedy evaluation. Running
trials send a heartbeat, so a worker that dies (even by SIGKILL) leaves a failed trial, not a running one
forever. Every process or machine that runs the same command works on the same study, until it holds
``n_trials`` trials.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from qiter.errors import QiterError, RunInterrupted, one_line_warnings
from qiter.run_loop import RunEvents
from qiter.search_space import SearchSpace, draw
from qiter.studies.workers import StopSignals, StudyInterrupted, command_line, die_with_parent

if TYPE_CHECKING:
    import optuna

__all__ = [
    "SEARCH_SPACES",
    "TuneSettings",
    "create_study",
    "export_best",
    "save_study_plots",
    "search_space",
    "tune",
]

# Algorithm -> its search space (a qiter.search_space.SearchSpace), imported only when used.
SEARCH_SPACES: dict[str, str] = {
    "dqn": "qiter.dqn.search_space:SEARCH_SPACE",
    "dqn-discretized": "qiter.dqn.search_space:SEARCH_SPACE",
    "td3": "qiter.continuous.search_space:TD3_SEARCH_SPACE",
    "ddpg": "qiter.continuous.search_space:DDPG_SEARCH_SPACE",
    "naf": "qiter.continuous.search_space:NAF_SEARCH_SPACE",
    "cem": "qiter.continuous.search_space:CEM_SEARCH_SPACE",
}
PRUNERS = ("median", "halving", "none")
# Config keys that decide when the first gradient step comes.
SCHEDULE_KEYS = {"learning_starts", "update_interval", "update_unit", "gradient_steps"}


@dataclass
class TuneSettings:
    """What ``qiter tune`` was asked for (plain values: it is sent to worker processes)."""

    env_id: str
    out: str
    n_trials: int = 20
    algo: str = "dqn"  # the agent: a key of qiter.agent.ALGORITHMS ("dqn-discretized" for --discretize)
    budget: int | None = None  # n_timesteps of each trial; default: the config's
    preset: str | None = None
    config_file: str | None = None
    overrides: list[str] = field(default_factory=list)
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of gymnasium.make
    seed: int | None = None
    storage: str | None = None  # default: OUT/study.db
    study: str | None = None  # default: "<algo>-<env_id>"
    pruner: str = "median"
    heartbeat: int = 30
    tensorboard: bool = False
    lone: bool = True  # the only worker of the study: its sampler follows the seed exactly

    @property
    def storage_url(self) -> str:
        from qiter.studies.storage import default_url

        return self.storage or default_url(self.out)

    @property
    def study_name(self) -> str:
        return self.study or f"{self.algo}-{self.env_id}"


def search_space(algo: str) -> SearchSpace:
    """The search space of an algorithm.

    :raises QiterError: An algorithm without one (the message lists those that have one).
    """
    if algo not in SEARCH_SPACES:
        raise QiterError(f"no search space for algorithm {algo!r}: tunable are {', '.join(SEARCH_SPACES)}")
    module, _, name = SEARCH_SPACES[algo].partition(":")
    space: SearchSpace = getattr(importlib.import_module(module), name)
    return space


def _base_overrides(settings: TuneSettings) -> list[str]:
    extra = [] if settings.budget is None else [f"n_timesteps={settings.budget}"]
    return [*settings.overrides, *extra]


def check_settings(settings: TuneSettings) -> None:
    """Raise one line now for a bad setting (algorithm, pruner, config, budget), before any study exists."""
    from qiter.agent import agent_class, check_budget
    from qiter.resolve import resolve_config, with_env_kwargs

    search_space(settings.algo)
    if settings.pruner not in PRUNERS:
        raise QiterError(f"unknown pruner {settings.pruner!r}: use {', '.join(PRUNERS)}")
    if settings.n_trials < 1:
        raise QiterError(f"--trials must be at least 1, not {settings.n_trials}")
    if settings.heartbeat < 1:
        raise QiterError(f"--heartbeat must be at least 1 second, not {settings.heartbeat}")
    config = resolve_config(
        settings.env_id, settings.preset, settings.config_file, _base_overrides(settings), settings.seed,
        algo=settings.algo,
    )  # fmt: skip
    config = with_env_kwargs(config, settings.env_kwargs)
    if not set(search_space(settings.algo)) & SCHEDULE_KEYS:
        # The space leaves when learning starts to the config: a budget in which it learns nothing would
        # fail every trial, so it is refused now (where the space draws the schedule, a trial whose draw
        # learns nothing fails with its reason).
        check_budget(agent_class(settings.algo), config, budget_flag="--budget")


def _pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        # No pruning before a trial's second evaluation, nor before 3 trials have finished to compare with.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1, interval_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def create_study(settings: TuneSettings) -> optuna.Study:
    """Create (or join) the study: tables first, in this process, before workers race to create them.

    :raises QiterError: A bad or unreachable storage, or a study of that name that minimizes.
    """
    import optuna

    from qiter.studies.storage import open_optuna_storage

    storage = open_optuna_storage(settings.storage_url, settings.heartbeat)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = settings.seed
    if seed is not None and not (settings.lone and settings.storage is None):
        # Workers seeded alike would draw the same values for the trials they start at the same moment.
        seed = (seed * 1_000_003 + os.getpid()) % 2**32
    sampler = optuna.samplers.TPESampler(seed=seed)
    for attempt in range(3):
        try:
            study = optuna.create_study(
                storage=storage, study_name=settings.study_name, direction="maximize",
                sampler=sampler, pruner=_pruner(settings.pruner), load_if_exists=True,
            )  # fmt: skip
            break
        except optuna.exceptions.DuplicatedStudyError:  # created by another worker meanwhile
            if attempt == 2:
                raise
    if len(study.directions) != 1 or study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise QiterError(
            f"study {settings.study_name!r} already exists in {_safe(settings.storage_url)} with direction "
            f"{', '.join(d.name.lower() for d in study.directions)}; qiter maximizes the return: pick another --study"
        )
    return study


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class TrialFailed(Exception):
    """A trial whose values could not run (a divergence, a budget too short for them): failed, the study
    goes on (the reason is printed as the trial's one line)."""


class _QuietFailures(logging.Filter):
    """Drops Optuna's log of a failed trial (a traceback): qiter prints the trial's reason in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno == logging.WARNING and message.startswith("Trial ") and " failed" in message
        )


class _Pruning(RunEvents):
    """Reports each periodic evaluation to the trial, and ends a trial the pruner gives up on."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: object) -> bool | None:
        import optuna

        self.trial.report(mean_return, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (return {mean_return:.1f})")
        return None


def _objective(settings: TuneSettings) -> Callable[[optuna.Trial], float]:
    import optuna

    from qiter.agent import agent_class
    from qiter.config import config_to_dict
    from qiter.resolve import resolve_config, with_env_kwargs
    from qiter.run_loop import train

    space = search_space(settings.algo)
    agent_cls = agent_class(settings.algo)

    def objective(trial: optuna.Trial) -> float:
        if trial.number >= settings.n_trials:
            # Workers started trials at the same moment: this one is over the study's size. Trial numbers
            # are given out atomically, so exactly the trials 0..n_trials-1 run.
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("over the study's number of trials")
        values = draw(trial, space)
        overrides = [*_base_overrides(settings), *(f"{k}={v}" for k, v in values.items())]
        trial.set_user_attr("algo", settings.algo)
        run_dir = Path(settings.out) / "trials" / f"trial-{trial.number}"
        print(f"trial {trial.number} started: {_describe(values)}", flush=True)
        try:
            config = resolve_config(
                settings.env_id, settings.preset, settings.config_file, overrides, settings.seed,
                algo=settings.algo,
            )  # fmt: skip
            config = with_env_kwargs(config, settings.env_kwargs)
            trial.set_user_attr("config", config_to_dict(config))
            result = train(
                agent_cls, config, run_dir, overwrite=True, progress=False, verbose=0,
                tensorboard=settings.tensorboard, events=[_Pruning(trial)],
            )  # fmt: skip
        except (RunInterrupted, KeyboardInterrupt):
            # Stopped by a signal: Optuna marks the trial failed (not left running) and raises it on.
            trial.set_user_attr("interrupted", True)
            raise
        except QiterError as exc:
            # These values cannot run (they diverged, or the budget is too short for them): the trial fails,
            # with its reason, and the study goes on.
            trial.set_user_attr("failure", str(exc))
            raise TrialFailed(str(exc)) from None
        assert result.final_evaluation is not None
        return result.final_evaluation.mean_return

    return objective


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("surplus"):
        return
    value = "" if trial.value is None else f": return {trial.value:.1f}"
    if trial.user_attrs.get("failure"):
        value = f": {trial.user_attrs['failure']}"
    if trial.intermediate_values and trial.state.name == "PRUNED":
        step = max(trial.intermediate_values)
        value = f" at step {step} (return {trial.intermediate_values[step]:.1f})"
    best = ""
    with contextlib.suppress(ValueError):
        best = f" (best so far: trial {study.best_trial.number}, {study.best_value:.1f})"
    print(f"trial {trial.number} {trial.state.name.lower()}{value}{best}", flush=True)


def _counted(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus"))


def run_worker(settings: TuneSettings) -> None:
    """Run trials of the study until it holds ``n_trials`` trials (a worker process's whole work).

    :raises ~qiter.studies.workers.StudyInterrupted: SIGINT or SIGTERM stopped it; the trial it was running
        is marked failed (its run saved its ``latest.pt`` first when the signal came while it stepped).
    """
    import optuna
    import torch

    torch.set_num_threads(1)  # the study's workers share the cores
    study = create_study(settings)
    if _counted(study) >= settings.n_trials:
        return

    def enough(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _report(study, trial)
        if _counted(study) >= settings.n_trials:
            study.stop()

    # A signal between two runs interrupts at once (Optuna then fails the trial it is in, if any); while a
    # run steps, the run's own guard takes it and the run saves first.
    quiet, optimize_log = _QuietFailures(), logging.getLogger("optuna.study._optimize")
    optimize_log.addFilter(quiet)
    with warnings.catch_warnings(), StopSignals(interrupt=True) as signals:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study.optimize(
                _objective(settings), callbacks=[enough], catch=(TrialFailed,), gc_after_trial=False
            )
        except (RunInterrupted, KeyboardInterrupt) as exc:
            signum = exc.signum if isinstance(exc, RunInterrupted) else signals.signum or signal.SIGINT
            stopped = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("interrupted")]
            state = trials_table(study) + (f"; trial {stopped[-1]} marked failed" if stopped else "")
            raise StudyInterrupted(signum, f"study {study.study_name}", state, command_line()) from None
        finally:
            optimize_log.removeFilter(quiet)


def _worker_main(values: dict[str, Any], parent_pid: int) -> None:
    """A tuning worker process: signals from the tuning process only, death with it."""
    os.setpgrp()  # a Ctrl-C reaches the tuning process, which passes it on once
    die_with_parent(parent_pid)
    one_line_warnings()  # a trial's QiterWarning reads as in the tuning process
    try:
        run_worker(TuneSettings(**values))
    except StudyInterrupted as exc:
        sys.exit(exc.exit_code)


def tune(settings: TuneSettings, jobs: int = 1) -> optuna.Study:
    """Run (or join) a tuning study with ``jobs`` worker processes on this machine.

    :param settings: The study.
    :param jobs: Worker processes (1: trials run in this process).
    :return: The study, once it holds ``n_trials`` trials (or, with other machines, once this one's
        workers have nothing left to start).
    :raises QiterError: Bad settings or storage, or a worker that failed.
    """
    import optuna

    from qiter.runs import check_writable

    if jobs < 1:
        raise QiterError(f"--jobs must be at least 1, not {jobs}")
    check_settings(settings)
    check_writable(settings.out, f"--out {settings.out}")
    Path(settings.out).mkdir(parents=True, exist_ok=True)
    study = create_study(settings)
    if jobs == 1:
        run_worker(settings)
    else:
        context = mp.get_context("spawn")
        values = {**asdict(settings), "lone": False}
        workers = [context.Process(target=_worker_main, args=(values, os.getpid())) for _ in range(jobs)]
        for worker in workers:
            worker.start()
        pids = [w.pid for w in workers if w.pid is not None]
        try:
            with StopSignals(lambda: pids) as signals:  # passed on to the workers, whose trials stop
                for worker in workers:
                    worker.join()
        except BaseException:
            for worker in workers:
                worker.terminate()
            raise
        if signals.signum is not None:
            state = f"{trials_table(study)}; its workers' running trials marked failed"
            raise StudyInterrupted(signals.signum, f"study {study.study_name}", state, command_line())
        failed = [w.exitcode for w in workers if w.exitcode != 0]
        if failed:
            raise QiterError(f"{len(failed)} of {jobs} tuning workers failed (exit codes {failed})")
    # A trial of a worker that died is failed now if its heartbeat is overdue; later runs catch the rest.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


def trials_table(study: optuna.Study) -> str:
    """A one-line-per-state count of the study's trials."""
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        if not trial.user_attrs.get("surplus"):
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials"


def train_command(algo: str, config: dict[str, Any]) -> str:
    """The ``qiter train`` command that trains ``algo`` on the config's environment (without ``--config``)."""
    flags = {"dqn": "", "dqn-discretized": f" --discretize {config.get('discretize')}"}
    return f"qiter train {config.get('env_id')}" + flags.get(algo, f" --algo {algo}")


def export_best(study: optuna.Study, path: str | Path) -> Path:
    """Write the best trial's config as a YAML preset that ``qiter train [--algo X] --config FILE`` reads
    (the header names the command).

    :raises QiterError: No trial has completed.
    """
    completed = [
        t for t in study.get_trials(deepcopy=False) if t.value is not None and math.isfinite(t.value)
    ]
    if not completed:
        raise QiterError(f"study {study.study_name!r} has no completed trial to export")
    best = study.best_trial
    config = dict(best.user_attrs["config"])
    header = (
        f"# Best trial {best.number} of study {study.study_name} (final return {best.value:.1f}).\n"
        f"# Tuned: {', '.join(sorted(best.params))}.\n"
        f"# Use with `{train_command(best.user_attrs.get('algo', 'dqn'), config)} --config FILE`.\n"
    )
    from qiter.runs import _atomic_write_text

    out = Path(path)
    if not out.parent.is_dir():
        raise QiterError(f"folder {out.parent} does not exist")
    _atomic_write_text(out, header + yaml.safe_dump(config, sort_keys=False))
    return out


def save_study_plots(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """Save the optimization history and the parameter importances as PNGs (those that can be drawn).

    :return: The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    written = []
    makers: Sequence[tuple[str, Callable[..., Any]]] = [
        ("optimization_history.png", ovm.plot_optimization_history),
        ("param_importances.png", ovm.plot_param_importances),
    ]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    for name, make in makers:
        if name == "param_importances.png" and len(complete) < 2:
            continue  # importances need two completed trials
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = make(study)
            except (ValueError, RuntimeError) as exc:
                print(f"qiter: warning: {name} not drawn ({exc})", file=sys.stderr)
                continue
        if name == "optimization_history.png":
            ax.set_ylabel("final greedy return")
        fig = ax.figure
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
        path = Path(out_dir) / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
