"""Fixtures every test file shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch as th


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread per test, restored afterwards, so that no test leaves the thread count changed.

    Why one: the suite runs in two workers on two cores, and two workers with two threads each fight over
    them (a test that needs another count sets it inside and is restored here too).
    """
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)
