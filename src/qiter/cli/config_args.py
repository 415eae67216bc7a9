"""The command-line flags that say where a run's config comes from, shared by every training command.

They are the layers of :func:`qiter.resolve.resolve_config`: the preset named like the env (or
``--preset``), then ``--config``, then each ``--set key=value``.
"""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--preset``, ``--config`` and ``--set KEY=VALUE`` (repeatable, into ``args.overrides``)."""
    parser.add_argument(
        "--preset", help="preset name (see `qiter presets`); default: the env id's preset if it exists"
    )
    parser.add_argument("--config", help="YAML file of config values")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one value"
    )
