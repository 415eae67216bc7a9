"""CLI commands for dqn (filled in by its owner)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the dqn commands to the CLI."""
