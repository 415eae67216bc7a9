"""Checks of the messages users read, shared by the test files of several components."""

from __future__ import annotations

from pathlib import Path


def one_line(message: str) -> str:
    """``message``, asserted to be one line (a user error is never a traceback)."""
    assert "\n" not in message.strip(), message
    return message


def assert_damage_message(message: str, path: Path) -> None:
    """A damaged file's message: one line naming the file, with no unsafe unpickling advice."""
    one_line(message)
    assert str(path) in message
    assert "weights_only" not in message and "pickle" not in message.lower()
