"""Per-agent random streams: uniform, independent, and the same for one agent whatever the others are."""

from __future__ import annotations

import numpy as np
import pytest

from qiter.core.arrays import NumpyOps, TorchOps
from qiter.population.streams import EXPLORE, RESET, SAMPLE, Streams, mix32


def test_mix32_is_a_bijection_on_a_sample_of_inputs() -> None:
    x = np.arange(1 << 16, dtype=np.int64) * 65_537
    assert len(np.unique(mix32(x))) == len(x) and int(mix32(x).max()) < 2**32


def test_uniform_draws_are_uniform() -> None:
    """A chi-squared test over 100 bins of 10^6 draws, and the moments of U(0, 1)."""
    u = Streams(NumpyOps(), [7]).uniform(SAMPLE, 3, (1_000_000,), "float64")[0]
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.002 and abs(u.var() - 1 / 12) < 0.001
    counts = np.bincount((u * 100).astype(int), minlength=100)
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert chi2 < 150  # 99 degrees of freedom: p < 0.001 above 148


def test_streams_are_uncorrelated_across_keys_counters_and_purposes() -> None:
    streams = Streams(NumpyOps(), [0, 1])
    draws = np.stack([streams.uniform(EXPLORE, c) for c in range(20_000)])  # (counter, key)
    reset = np.stack([streams.uniform(RESET, c) for c in range(20_000)])
    bound = 4 / np.sqrt(20_000)  # four standard errors of a correlation of independent draws
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < bound  # two agents, same steps
    assert abs(np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1]) < bound  # one agent, consecutive steps
    assert abs(np.corrcoef(draws[:, 0], reset[:, 0])[0, 1]) < bound  # one agent, two purposes


def test_an_agent_draws_the_same_alone_or_among_others_on_both_backends() -> None:
    among = Streams(NumpyOps(), [3, 4, 5, 6]).uniform(SAMPLE, 12, (64,))
    alone = Streams(NumpyOps(), [5]).uniform(SAMPLE, 12, (64,))
    on_torch = Streams(TorchOps("cpu"), [5]).uniform(SAMPLE, 12, (64,)).numpy()
    np.testing.assert_array_equal(among[2], alone[0])
    np.testing.assert_array_equal(alone, on_torch)
    assert not np.array_equal(among[0], among[1])


@pytest.mark.parametrize("high", [2, 3, 100_000])
def test_integers_cover_the_range(high: int) -> None:
    draws = Streams(NumpyOps(), [1]).integers(SAMPLE, 0, high, (200_000,))[0]
    assert draws.min() == 0 and draws.max() == high - 1
    if high <= 3:
        assert np.all(np.abs(np.bincount(draws) / len(draws) - 1 / high) < 0.005)


def test_children_depend_on_their_parent_and_index_only() -> None:
    few = Streams(NumpyOps(), [5]).children(RESET, 1000, 2)
    many = Streams(NumpyOps(), [4, 5]).children(RESET, 1000, 5)
    assert few.seeds == many.seeds[5:7]
    assert len(set(many.seeds)) == 10
    assert Streams(NumpyOps(), [5]).children(RESET, 2000, 2).seeds != few.seeds


def test_per_step_draws_are_blocks_of_64_steps() -> None:
    streams = Streams(NumpyOps(), [3, 4])
    for step in (0, 63, 64, 200):
        block = streams.bits(EXPLORE, step // 64, (64, 2))
        np.testing.assert_array_equal(streams.per_step(EXPLORE, step, (2,)), block[:, step % 64])
    u = streams.per_step(RESET, 5, (4,), "float64")
    assert u.shape == (2, 4) and u.dtype == np.float64 and np.all((u >= 0) & (u < 1))


def test_device_counters_draw_what_host_counters_draw() -> None:
    """Counters held in 0-d tensors (a CUDA graph's) give the host path's numbers: a whole draw, one row of
    it, and the per-step draws (one row of a block, computed alone)."""
    import torch as th

    ops = TorchOps("cpu")
    streams, fresh = Streams(ops, [3, 9, 27]), Streams(ops, [3, 9, 27])
    whole = streams.bits(SAMPLE, 70, (64, 5))
    np.testing.assert_array_equal(fresh.bits(SAMPLE, th.tensor(70), (64, 5)), whole)
    np.testing.assert_array_equal(fresh.bits(SAMPLE, 70, (64, 5), row=th.tensor(17)), whole[:, 17])
    for step in (0, 63, 64, 200):
        for dtype in ("bits", "float64"):
            np.testing.assert_array_equal(
                fresh.per_step(RESET, th.tensor(step), (4,), dtype),
                streams.per_step(RESET, step, (4,), dtype),
            )
