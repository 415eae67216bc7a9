"""Worker processes that die with the process that started them, and signals that stop a study cleanly.

A sweep's or a study's workers are separate processes: killed by SIGKILL (or by a crash, or the OOM
killer), their parent cannot stop them, and they would train on, orphaned, holding their runs. Each worker
calls :func:`die_with_parent` first: on Linux the kernel sends it a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere a watchdog thread checks its parent's pid every second. The signal
is SIGTERM, which a run answers as to Ctrl-C (its checkpoint is kept), so a sweep started again resumes the
run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType

from qiter.errors import QiterError, RunInterrupted
from qiter.lifecycle import SignalGuard

__all__ = ["StopSignals", "StudyInterrupted", "command_line", "die_with_parent", "parent_alive"]

# prctl option that asks for a signal when the parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1
WATCH_EVERY = 1.0  # seconds between the watchdog's checks where prctl is not available


def _prctl_pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when the parent dies; ``False`` where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(WATCH_EVERY)
    os.kill(os.getpid(), sig)


def parent_alive(parent_pid: int) -> bool:
    """Whether this process's parent is still ``parent_pid`` (an orphan is adopted by another process)."""
    return os.getppid() == parent_pid


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Make this process receive ``sig`` when process ``parent_pid`` (its parent) dies.

    :param parent_pid: The parent's pid, as the parent saw it before starting this process (a parent that
        died before this call has already left this process to another: it is signalled at once).
    :param sig: The signal.
    """
    if not _prctl_pdeathsig(sig):
        threading.Thread(target=_watch, args=(parent_pid, sig), daemon=True, name="qiter-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the kernel was asked to tell
        os.kill(os.getpid(), sig)


class StopSignals(SignalGuard):
    """SIGINT and SIGTERM of a process that drives a study: the first is recorded in :attr:`signum` and passed
    on to the workers as SIGTERM (their runs save and stop); a second interrupts at once
    (``KeyboardInterrupt``).

    Used as a context manager around the study (handlers are only set in the main thread; elsewhere the
    signals keep their default behaviour). A run trained in this process replaces the handlers while it
    steps (:class:`qiter.lifecycle.SignalGuard`) and gives them back after.

    :param workers: The pids to pass the signal on to, asked when it comes.
    :param interrupt: Also raise ``KeyboardInterrupt`` at the first signal, to stop whatever this process is
        doing (an Optuna study between two runs marks its trial failed).
    """

    def __init__(self, workers: Callable[[], Iterable[int]] = tuple, interrupt: bool = False) -> None:
        super().__init__()
        self.workers, self.interrupt = workers, interrupt

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        super()._handle(signum, frame)  # records the first signal; a second raises KeyboardInterrupt
        for pid in self.workers():
            with contextlib.suppress(ProcessLookupError):
                # SIGTERM whatever came: a run takes both alike, and a worker still importing at that moment
                # ends quietly (SIGINT would print its KeyboardInterrupt's traceback).
                os.kill(pid, signal.SIGTERM)
        if self.interrupt:
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def command_line() -> str:
    """The command this process runs, to repeat it (``qiter ...``), as well as it can be known."""
    if Path(sys.argv[0]).name in ("qiter", "__main__.py"):
        return shlex.join(["qiter", *sys.argv[1:]])
    return "the same command"


class StudyInterrupted(RunInterrupted):
    """A sweep or a tuning study stopped by SIGINT or SIGTERM, after its runs saved (exit code
    ``128 + signum``, as for one run); the same command started again continues it.

    :param signum: The signal.
    :param what: What stopped (``"sweep"``, ``"study dqn-CartPole-v1"``).
    :param state: How it was left (``"2 done, 1 interrupted"``).
    :param command: The command that continues it.
    """

    def __init__(self, signum: int, what: str, state: str, command: str) -> None:
        self.signum, self.command, self.step, self.run_dir = signum, command, 0, Path()
        name = signal.Signals(signum).name
        QiterError.__init__(
            self, f"{what} interrupted by {name} ({state}). Continue with the same command: {command}"
        )
