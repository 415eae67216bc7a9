"""The command-line flags that say where a run's config comes from, shared by every training command.

They are the layers of :func:`qiter.resolve.resolve_config`: the preset named like the env (or
``--preset``), then ``--config``, then each ``--set key=value``.
"""

from __future__ import annotations

import argparse
from typing import Any

from qiter.config import parse_int, parse_keyword_arguments


def integer(text: str) -> int:
    """An ``argparse`` type: an integer, also written ``1e5`` or ``100_000`` (as ``--set`` takes them)."""
    return parse_int(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--config`` and ``--set KEY=VALUE`` (repeatable, into ``args.overrides``)."""
    parser.add_argument(
        "--preset", help="preset name (see `qiter presets`); default: the env id's preset if it exists"
    )
    parser.add_argument("--config", help="YAML file of config values")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one value"
    )


def add_env_kwargs_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--env-kwargs KEY=VALUE`` (repeatable, into ``args.env_kwargs``: read it with :func:`env_kwargs`)."""
    parser.add_argument(
        "--env-kwargs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a keyword argument of gymnasium.make, typed as --set types values (true, 3, 0.5, [1, 2], "
        "text), e.g. --env-kwargs enable_wind=true; repeatable",
    )


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--env-kwargs`` of a command, typed (see :func:`qiter.config.parse_keyword_arguments`)."""
    return parse_keyword_arguments(args.env_kwargs)
