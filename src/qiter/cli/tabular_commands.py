"""CLI commands for tabular (filled in by its owner)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add the tabular commands to the CLI."""
