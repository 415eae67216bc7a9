"""Small helper commands: ``qiter envs``."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the helper commands to the CLI."""
    p = subparsers.add_parser("envs", help="list the registered gymnasium environment ids")
    p.add_argument("--filter", default="", help="only ids that contain this text (case-insensitive)")
    p.set_defaults(func=_envs)


def _envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    found = [env_id for env_id in sorted(gym.registry.keys()) if args.filter.lower() in env_id.lower()]
    for env_id in found:
        print(env_id)
    if not found:  # as grep does: a message and exit code 1, not silence
        print(f"qiter: no registered environment id contains {args.filter!r}", file=sys.stderr)
        return 1
    return 0
