"""The ``qiter`` command line: one entry point, one subcommand per task, each a thin call into the API.

Each command group lives in its own module with a ``register(subparsers)`` function; this module only
assembles them and turns a :class:`~qiter.errors.QiterError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence

from qiter import __version__
from qiter.errors import QiterError, RunInterrupted, one_line_warnings


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
        description="Value-based reinforcement learning: tabular Q-learning, Fitted Q Iteration, DQN and its "
        "variants, and Q-learning with continuous actions (CEM, NAF, DDPG, TD3).",
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
    # The CLI's warnings read like its errors: one line (also in the worker processes it starts).
    show_warning = warnings.showwarning
    one_line_warnings()
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a reader that has gone is met inside this try, not at exit
    except RunInterrupted as exc:  # saved: the message says how to continue
        print(f"qiter: {exc}", file=sys.stderr)
        return exc.exit_code
    except QiterError as exc:
        print(f"qiter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qiter: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output left (`qiter envs | head`): not an error of ours, and no traceback. Later
        # writes (Python's own flush at exit) go nowhere instead of failing again.
        with contextlib.suppress(OSError, ValueError):  # a stdout without a file descriptor: nothing to do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.showwarning = show_warning
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
