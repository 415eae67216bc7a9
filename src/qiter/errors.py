"""The one exception type that qiter raises for bad input, and its warning.

The CLI catches :class:`QiterError` and prints its message with a non-zero exit code, so a user never sees
a traceback from deep inside numpy, torch or gymnasium for a mistake of theirs. :class:`QiterWarning`s are
shown as one line, ``qiter: warning: ...``, in any process that calls :func:`one_line_warnings` (the CLI
and the worker processes it starts).
"""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

__all__ = ["QiterError", "QiterWarning", "RunInterrupted", "one_line_warnings"]


class QiterError(ValueError):
    """Bad input: an unknown environment, an unsupported space, a corrupt file, a wrong config key..."""


class QiterWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""


class RunInterrupted(QiterError):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after finishing its step and saving ``latest.pt``.

    The CLI prints the message (which names the command that continues the run) and exits with
    ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).

    :param run_dir: The run folder, whose ``checkpoints/latest.pt`` holds the run at ``step``.
    :param signum: The signal's number.
    :param step: The step the run was saved at.
    :param command: The command that continues the run (``qiter train --resume DIR``).
    """

    def __init__(self, run_dir: Path, signum: int, step: int, command: str) -> None:
        self.run_dir, self.signum, self.step, self.command = Path(run_dir), signum, step, command
        name = signal.Signals(signum).name
        super().__init__(
            f"interrupted by {name} at step {step}; saved {self.run_dir / 'checkpoints' / 'latest.pt'}; "
            f"continue with: {command}"
        )

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: ``128 + signum``."""
        return 128 + self.signum


def one_line_warnings() -> None:
    """Show :class:`QiterWarning`s as ``qiter: warning: MESSAGE`` on stderr from now on, in this process.

    Python's own format adds the file, line number and source line of the ``warnings.warn`` call, which says
    nothing to a user. Other warnings keep Python's format. Calling this twice changes nothing.
    """
    show = warnings.showwarning
    if getattr(show, "_qiter_one_line", False):
        return

    def show_warning(
        message: Any,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, QiterWarning):
            print(f"qiter: warning: {message}", file=file if file is not None else sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    show_warning._qiter_one_line = True  # type: ignore[attr-defined]
    warnings.showwarning = show_warning
