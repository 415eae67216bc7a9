"""CLI commands for fqi (filled in by its owner)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the fqi commands to the CLI."""
