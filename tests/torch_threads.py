"""An autouse fixture for test files that train torch networks: one torch thread per test worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch as th


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread per test worker: two workers with two threads each fight over two cores."""
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)
