"""Small helper commands: ``qiter envs``."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the helper commands to the CLI."""
    p = subparsers.add_parser("envs", help="list the registered gymnasium environment ids")
    p.add_argument("--filter", default="", help="only ids that contain this text (case-insensitive)")
    p.set_defaults(func=_envs)


def _envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    for env_id in sorted(gym.registry.keys()):
        if args.filter.lower() in env_id.lower():
            print(env_id)
    return 0
