"""The ``qiter`` command line: one entry point, one subcommand per task, each a thin call into the API.

Each command group lives in its own module with a ``register(subparsers)`` function; this module only
assembles them and turns a :class:`~qiter.errors.QiterError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from qiter import __version__
from qiter.errors import QiterError, QiterWarning, RunInterrupted


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from qiter.cli import (
        dqn_commands,
        fqi_commands,
        misc_commands,
        population_commands,
        study_commands,
        tabular_commands,
    )

    parser = argparse.ArgumentParser(
        prog="qiter",
        description="Value-based reinforcement learning: tabular Q-learning, Fitted Q Iteration and DQN.",
    )
    parser.add_argument("--version", action="version", version=f"qiter {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        tabular_commands,
        fqi_commands,
        dqn_commands,
        misc_commands,
        study_commands,
        population_commands,
    ):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code.

    :param argv: Arguments (without the program name); ``sys.argv[1:]`` when ``None``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    show_warning = warnings.showwarning

    def one_line_warning(message: Any, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
        # qiter's own warnings read like its errors: one line; others as Python shows them.
        if issubclass(category, QiterWarning):
            print(f"qiter: warning: {message}", file=sys.stderr)
        else:
            show_warning(message, category, *rest, **kwargs)

    warnings.showwarning = one_line_warning
    try:
        code = args.func(args)
    except RunInterrupted as exc:  # saved: the message says how to continue
        print(f"qiter: {exc}", file=sys.stderr)
        return exc.exit_code
    except QiterError as exc:
        print(f"qiter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qiter: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
