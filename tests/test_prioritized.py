"""Prioritized replay: the sum/min tree against brute force, sampling frequencies, IS weights, priorities."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.buffers.prioritized import PrioritizedReplayBuffer, SumTree

OBS_SPACE = spaces.Box(low=-np.inf, high=np.inf, shape=(1,), dtype=np.float32)
ACTION_SPACE = spaces.Discrete(2)


def make_buffer(size: int, **kwargs: object) -> PrioritizedReplayBuffer:
    return PrioritizedReplayBuffer(size, OBS_SPACE, ACTION_SPACE, **kwargs)  # type: ignore[arg-type]


def fill(buffer: PrioritizedReplayBuffer, n: int) -> None:
    """Store transitions whose observation is their insertion number (so a sample tells its index)."""
    for t in range(n):
        buffer.store_transition(np.array([t]), np.array([t + 1]), t % 2, float(t), False)


def test_capacity_rounded_to_power_of_two() -> None:
    assert SumTree(1).capacity == 1
    assert SumTree(5).capacity == 8
    assert SumTree(8).capacity == 8
    assert SumTree(1000).capacity == 1024


@pytest.mark.parametrize("capacity", [1, 7, 64, 1000])
def test_sum_tree_matches_brute_force(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    leaves = np.zeros(capacity)
    for _ in range(5):
        # Batched writes, with repeated indices (the last write must win) ...
        idx = rng.integers(0, capacity, size=20)
        vals = rng.random(20) * 10
        tree.update(idx, vals)
        for i, v in zip(idx, vals):
            leaves[i] = v
        # ... and queued single writes.
        for i in rng.integers(0, capacity, size=3):
            v = float(rng.random())
            tree.set_pending(int(i), v)
            leaves[i] = v
        assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)
        assert tree.min == pytest.approx(leaves[leaves > 0].min())
        np.testing.assert_allclose(tree.values(np.arange(capacity)), leaves)
        # Prefix search: the first leaf whose cumulative sum exceeds u (brute force: searchsorted).
        u = rng.random(200) * leaves.sum()
        expected = np.searchsorted(np.cumsum(leaves), u, side="right")
        np.testing.assert_array_equal(tree.find_prefixsum(u), expected)


def test_prefix_search_never_returns_empty_leaf() -> None:
    tree = SumTree(8)
    tree.update(np.arange(5), np.array([0.1, 0.2, 0.3, 0.0, 0.7]))
    total = tree.total
    # At and just below the total (rounding of the last stratum): the last non-empty leaf, not 5, 6, 7 or 3.
    found = tree.find_prefixsum(np.array([total, np.nextafter(total, 0), 0.0, 0.3 + 1e-12]))
    np.testing.assert_array_equal(found, [4, 4, 0, 2])


def test_queued_writes_are_older_than_batch_updates() -> None:
    tree = SumTree(4)
    tree.set_pending(2, 1.0)
    tree.update(np.array([2]), np.array([5.0]))
    assert tree.values(np.array([2]))[0] == 5.0
    assert tree.total == 5.0


def test_hand_built_tree() -> None:
    tree = SumTree(4)
    tree.update(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
    # Cumulative sums 1, 3, 6, 10.
    np.testing.assert_array_equal(
        tree.find_prefixsum(np.array([0.0, 0.99, 1.0, 2.5, 3.0, 5.99, 6.0, 9.99])), [0, 0, 1, 1, 2, 2, 3, 3]
    )
    assert tree.total == 10.0
    assert tree.min == 1.0
    tree.update(np.array([0]), np.array([5.0]))
    assert tree.total == 14.0
    assert tree.min == 2.0


def test_new_transitions_get_max_priority() -> None:
    buffer = make_buffer(8, alpha=0.5, eps=0.0)
    fill(buffer, 4)
    # Before any TD error: all at the initial max priority 1.
    np.testing.assert_array_equal(buffer.tree.values(np.arange(4)), [1.0, 1.0, 1.0, 1.0])
    buffer.update_priorities(np.array([0, 1]), np.array([16.0, -0.25]))
    # (|delta| + eps)^alpha = 4 and 0.5.
    np.testing.assert_allclose(buffer.tree.values(np.arange(4)), [4.0, 0.5, 1.0, 1.0])
    assert buffer.max_priority == 4.0
    fill(buffer, 1)
    assert buffer.tree.values(np.array([4]))[0] == 4.0
    # A smaller later error does not lower the max seen so far; tensors are accepted (the torch learner).
    buffer.update_priorities(th.tensor([0]), th.tensor([1.0]))
    fill(buffer, 1)
    assert buffer.tree.values(np.array([5]))[0] == 4.0


def test_sampling_frequencies_proportional_to_priorities() -> None:
    n, batch, rounds = 8, 16, 2000
    buffer = make_buffer(n, alpha=1.0, eps=0.0, rng=np.random.default_rng(0))
    fill(buffer, n)
    priorities = np.arange(1.0, n + 1)
    buffer.update_priorities(np.arange(n), priorities)
    counts = np.zeros(n)
    for _ in range(rounds):
        samples = buffer.sample(batch)
        # Observations are the insertion numbers, so samples are what the indices say.
        np.testing.assert_array_equal(samples.observations[:, 0], samples.indices)
        counts += np.bincount(samples.indices, minlength=n)
    expected = rounds * batch * priorities / priorities.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 7 degrees of freedom: P(chi2 > 24.3) = 0.001 for independent draws; stratified draws vary less.
    assert chi2 < 24.3, (counts, expected)


def test_stratified_sampling_one_per_segment() -> None:
    # Equal priorities and batch = N: each stratum holds exactly one transition, so each is drawn once.
    buffer = make_buffer(16, rng=np.random.default_rng(1))
    fill(buffer, 16)
    np.testing.assert_array_equal(np.sort(buffer.sample(16).indices), np.arange(16))


def test_only_stored_transitions_are_sampled() -> None:
    buffer = make_buffer(100, rng=np.random.default_rng(2))
    fill(buffer, 3)
    assert set(buffer.sample(500).indices.tolist()) <= {0, 1, 2}


def test_importance_sampling_weights() -> None:
    buffer = make_buffer(4, alpha=1.0, eps=0.0, rng=np.random.default_rng(3))
    fill(buffer, 4)
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    buffer.beta = 0.5
    # P = p / 10, w = (N P)^-beta / max w, and the max weight is that of the smallest priority.
    probabilities = np.array([1.0, 2.0, 3.0, 4.0]) / 10
    raw = (4 * probabilities) ** -0.5
    np.testing.assert_allclose(buffer.importance_weights(np.arange(4)), raw / raw.max(), rtol=1e-6)
    samples = buffer.sample(32)
    np.testing.assert_allclose(samples.weights, (raw / raw.max())[samples.indices], rtol=1e-6)
    assert samples.weights.dtype == np.float32
    # beta = 0: no correction; uniform priorities: all weights 1.
    buffer.beta = 0.0
    np.testing.assert_allclose(buffer.importance_weights(np.arange(4)), 1.0)


def test_n_step_samples_through_prioritized_buffer() -> None:
    buffer = make_buffer(8, n_steps=3, gamma=0.5, rng=np.random.default_rng(4))
    fill(buffer, 6)
    buffer.update_priorities(np.arange(6), np.array([0, 0, 0, 0, 0, 5.0]))
    buffer.update_priorities(np.array([1]), np.array([1e6]))
    samples = buffer.sample(4)
    # Index 1 holds almost all the mass: rewards 1 + 0.5 * 2 + 0.25 * 3 from the uniform buffer's n-step code.
    assert np.all(samples.indices == 1)
    np.testing.assert_allclose(samples.rewards, 1 + 0.5 * 2 + 0.25 * 3)
    np.testing.assert_allclose(samples.discounts, 0.125)


def test_state_dict_round_trip() -> None:
    buffer = make_buffer(8)
    fill(buffer, 5)
    buffer.update_priorities(np.array([0, 3]), np.array([2.0, 0.5]))
    buffer.beta = 0.7
    state = buffer.state_dict()
    other = make_buffer(8)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.observations, buffer.observations)
    assert other.current_idx == buffer.current_idx
    np.testing.assert_array_equal(other.tree.values(np.arange(8)), buffer.tree.values(np.arange(8)))
    assert other.tree.min == buffer.tree.min
    assert other.max_priority == buffer.max_priority
    assert other.beta == 0.7
