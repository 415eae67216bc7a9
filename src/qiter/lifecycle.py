"""The lifecycle of a training run: everything around the steps, shared by every loop that trains.

A run, one agent (:func:`qiter.run_loop.train`) or a population (:func:`qiter.population.train.train`),
goes through the same stages; :class:`RunLifecycle` holds them, so the loops only step::

    life = RunLifecycle(run_dir, events=..., tensorboard=..., verbose=...)
    life.claim(resume, overwrite)          # the run folder is refused if taken (runs.claim_run_dir)
    state = life.load_latest()             # on resume: the latest checkpoint, checked by the caller
    life.open(config_dict, resume_step)    # config.yaml, CSV + TensorBoard logger (logs cut on resume)
    with life.guard_signals():             # SIGINT / SIGTERM end the step, then the loop saves and stops
        ... the loop: life.log(...), life.episode(...), check_finite(...), life.watch_q(...),
            life.checkpoint("latest.pt", step, make_state) when :class:`Every` says it is due ...
    life.close()
    life.checkpoint("latest.pt", ...); life.write_eval({...})   # final checkpoint and eval.json
    life.raise_if_interrupted(step, command)                    # RunInterrupted after the save

It knows nothing about agents or environments: what goes into a checkpoint is the caller's (a function
that builds the state, called only when a checkpoint is written), and so are the rows of the logs.
"""

from __future__ import annotations

import math
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from qiter import runs
from qiter.errors import QiterError, QiterWarning, RunInterrupted

__all__ = ["DivergenceError", "Every", "QValueWatch", "RunEvents", "RunLifecycle", "check_finite"]


class DivergenceError(QiterError):
    """The loss or the Q-values became NaN or infinite."""


class RunEvents:
    """Callbacks of a run: subclass, override what you need, and pass instances to a training function.

    An exception raised in a callback ends the run (logs are closed, the last checkpoint is kept): an Optuna
    pruner raises ``optuna.TrialPruned`` from :meth:`on_evaluation`.
    """

    def on_episode(self, step: int, episode_return: float, episode_length: int) -> None:
        """After each finished episode of any environment copy."""

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: Any) -> bool | None:
        """After each periodic evaluation; return ``True`` to stop the run there."""
        return None

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Before a checkpoint is written to ``path``."""

    def on_log(self, kind: str, step: int, row: Mapping[str, float]) -> None:
        """After each row of the logs (``kind``: ``episodes``, ``train``, ``eval``...), with or without a run
        folder: what an experiment tracker sends on."""


def check_finite(
    step: int, metrics: Mapping[str, float], who: str = "", run_path: Path | None = None
) -> None:
    """Raise :class:`DivergenceError` if a training metric is NaN or infinite.

    :param step: The step the metrics belong to (named in the message).
    :param metrics: Metric name -> value.
    :param who: Whose metrics (``"agent 3: "``), for a population.
    :param run_path: The run folder, whose latest checkpoint (if any) the message names.
    """
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise DivergenceError(
                f"training diverged at step {step}: {who}{key} is {value}. {_kept(run_path)}"
            )


def _kept(run_path: Path | None) -> str:
    """What a diverged run leaves to continue from, and what to change."""
    advice = "a smaller learning rate, the huber loss or gradient clipping (max_grad_norm)"
    checkpoint = runs.latest_checkpoint(run_path) if run_path is not None else None
    if checkpoint is None:
        return f"No checkpoint was written before it; start again with {advice}."
    return (
        f"The last good checkpoint, {checkpoint}, is kept: `qiter train --resume {run_path} --set KEY=VALUE` "
        f"continues from it; try {advice}."
    )


class QValueWatch:
    """Warns once when the mean Q-value goes far above what any return can be worth.

    With rewards at most ``max_reward`` and discount ``gamma``, no Q-value can exceed
    ``bound = max_reward / (1 - gamma)`` (:func:`~qiter.run_config.q_value_bound`). A mean Q well above
    it is not a number to hide: the critic is diverging, whatever the returns say.

    :param bound: The config's :meth:`~qiter.run_config.RunConfig.q_value_bound`.
    :param margin: How far above the bound warns, as a fraction of ``|bound|`` (at least 1 in absolute
        value, so a bound of 0 is not warned about for noise).
    """

    def __init__(self, bound: float, margin: float = 0.5) -> None:
        self.bound = bound
        self.limit = bound + margin * max(abs(bound), 1.0)
        self.warned = False

    def check(self, step: int, mean_q: float | None, who: str = "") -> None:
        """Warn (once per run) if ``mean_q`` exceeds the limit at ``step``.

        :param who: Whose Q-values (``"agent 3's "``), for a population.
        """
        if self.warned or mean_q is None or mean_q <= self.limit:
            return
        self.warned = True
        warnings.warn(
            f"at step {step} {who or 'the '}mean Q-value is {mean_q:.4g}, while no return can exceed "
            f"{self.bound:.4g} (max_reward / (1 - gamma)): the critic is overestimating, usually because the "
            "target network is updated too often, the learning rate is too high, or the max over noisy "
            "estimates compounds (see docs/stability.md)",
            QiterWarning,
            stacklevel=2,
        )


class Every:
    """A schedule of points every ``interval`` steps, as a loop that advances by whole steps meets them.

    :param interval: Steps between points; 0 or less: never.
    :param step: The steps done so far (the next point is the first multiple of ``interval`` above it).
    """

    def __init__(self, interval: int, step: int = 0) -> None:
        self.interval = interval
        self.next: float = (step // interval + 1) * interval if interval > 0 else math.inf

    def due(self, step: int) -> bool:
        """Whether ``step`` reached the next point (then the point after it becomes the next)."""
        if step < self.next:
            return False
        self.next += self.interval
        return True


class SignalGuard:
    """SIGINT and SIGTERM, while active, only record the signal: the loop finishes its step, saves and
    stops. A second signal interrupts at once (``KeyboardInterrupt``), for a save that hangs."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def install(self) -> None:
        # Python lets only the main thread set handlers; elsewhere signals keep their default behaviour.
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class RunLifecycle:
    """The run folder, logs, events, checks and checkpoints of one training run (see the module docstring).

    With ``run_dir=None`` nothing is written, and signals keep their default behaviour.

    :param run_dir: The run folder, or ``None``.
    :param events: Callbacks after episodes and evaluations and before checkpoints.
    :param tensorboard: Also write TensorBoard scalars.
    :param verbose: 1: the loop prints its lines (the lifecycle keeps the setting for it), 0: nothing.
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        events: Sequence[RunEvents] = (),
        tensorboard: bool = True,
        verbose: int = 1,
    ) -> None:
        self.run_path = Path(run_dir) if run_dir is not None else None
        self.events = tuple(events)
        self.tensorboard = tensorboard
        self.verbose = verbose
        self.logger: runs.RunLogger | None = None
        self.signals = SignalGuard()
        self.bar: Any = None

    # -- the folder ---------------------------------------------------------------------------------------

    def claim(self, resume: bool, overwrite: bool) -> None:
        """Take the run folder for a new run (refused if another run is there, unless ``overwrite``); a
        resumed run keeps its folder.

        :raises QiterError: Resuming without a folder, or a folder that holds another run.
        """
        if self.run_path is None:
            if resume:
                raise QiterError("resume needs the run folder to resume")
            return
        if not resume:
            runs.claim_run_dir(self.run_path, overwrite)

    def load_latest(self) -> tuple[Path, dict[str, Any]]:
        """The run's latest checkpoint: its path and state (checked by the caller).

        :raises QiterError: No checkpoint in the run folder, or an unreadable one.
        """
        assert self.run_path is not None
        path = runs.latest_checkpoint(self.run_path)
        if path is None:
            raise QiterError(f"no checkpoint to resume from in {self.run_path / runs.CHECKPOINT_DIR}")
        return path, runs.load_checkpoint(path)

    @staticmethod
    def check_fixed_keys(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str]) -> None:
        """Refuse a resume that changes a key fixing the shape of the saved state, naming the key."""
        for key in keys:
            if saved.get(key) != current.get(key):
                raise QiterError(
                    f"cannot change {key} when resuming ({saved.get(key)!r} -> {current.get(key)!r}): it "
                    "fixes the shape of the saved networks or buffer; start a new run instead"
                )

    def open(self, config_dict: Mapping[str, Any], resume_step: int | None = None) -> None:
        """Write ``config.yaml`` and open the logs; on resume (``resume_step``), cut the logs at that step
        first and hide TensorBoard's later points."""
        if self.run_path is None:
            return
        if resume_step is not None:
            runs.truncate_logs(self.run_path, resume_step)
        runs.save_config(self.run_path, config_dict)
        self.logger = runs.RunLogger(
            self.run_path,
            tensorboard=self.tensorboard,
            purge_step=resume_step + 1 if resume_step is not None else None,
        )

    # -- during the run -----------------------------------------------------------------------------------

    def log(
        self, kind: str, step: int, row: Mapping[str, float], tensorboard: bool = True, keep_open: bool = True
    ) -> None:
        """One row of ``<kind>.csv`` (and TensorBoard unless ``tensorboard=False``; the file closed after it
        with ``keep_open=False``; nothing written without a folder), then told to the events."""
        if self.logger is not None:
            self.logger.log(kind, step, row, tensorboard=tensorboard, keep_open=keep_open)
        for event in self.events:
            event.on_log(kind, step, row)

    def episode(self, step: int, episode_return: float, episode_length: int) -> None:
        """Tell the events about a finished episode."""
        for event in self.events:
            event.on_episode(step, episode_return, episode_length)

    def evaluation(self, step: int, mean: float, std: float, agent: Any) -> bool:
        """Tell the events about an evaluation; whether one of them asks to stop."""
        stop = False
        for event in self.events:
            stop = bool(event.on_evaluation(step, mean, std, agent)) or stop
        return stop

    def checkpoint(self, name: str, step: int, state: Callable[[], Mapping[str, Any]]) -> None:
        """Write ``checkpoints/<name>`` atomically (nothing without a folder), after telling the events.

        :param state: Builds the checkpoint's state (called only when one is written).
        """
        if self.run_path is None:
            return
        path = self.run_path / runs.CHECKPOINT_DIR / name
        for event in self.events:
            event.on_checkpoint(step, path)
        runs.save_checkpoint(path, state())

    def start_bar(self, total: int, initial: int, desc: str, unit: str = "step") -> None:
        """A progress bar from ``initial`` to ``total``."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True, desc=desc)

    def say(self, message: str) -> None:
        """Print a line (above the progress bar, if any)."""
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message)

    @contextmanager
    def guard_signals(self) -> Iterator[SignalGuard]:
        """While inside, SIGINT and SIGTERM are recorded in the guard's ``signum`` for the loop to stop on
        (only with a run folder, where there is something to save)."""
        if self.run_path is not None:
            self.signals.install()
        try:
            yield self.signals
        finally:
            self.signals.restore()

    @property
    def interrupted(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signals.signum is not None

    def raise_if_interrupted(self, step: int, command: str) -> None:
        """After the last checkpoint of an interrupted run: raise :class:`RunInterrupted`.

        :param command: The command that continues it (``qiter train --resume DIR``).
        """
        if self.signals.signum is None:
            return
        assert self.run_path is not None
        raise RunInterrupted(self.run_path, self.signals.signum, step, command)

    def close(self, step: int | None = None) -> None:
        """Close the progress bar (at ``step``) and the logs."""
        if self.bar is not None:
            if step is not None:
                self.bar.update(step - self.bar.n)
            self.bar.close()
            self.bar = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None

    def write_eval(self, result: Mapping[str, Any]) -> None:
        """Write ``eval.json`` (nothing without a folder)."""
        if self.run_path is not None:
            runs.write_eval(self.run_path, result)
