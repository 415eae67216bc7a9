"""The one exception type that qiter raises for bad input.

The CLI catches :class:`QiterError` and prints its message with a non-zero exit code, so a user never sees
a traceback from deep inside numpy, torch or gymnasium for a mistake of theirs.
"""

from __future__ import annotations


class QiterError(ValueError):
    """Bad input: an unknown environment, an unsupported space, a corrupt file, a wrong config key..."""


class QiterWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints it as one line)."""
