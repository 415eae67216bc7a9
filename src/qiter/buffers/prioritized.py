"""Proportional prioritized experience replay (Schaul et al., 2016).

A transition i is sampled with probability ``P(i) = p_i^alpha / sum_k p_k^alpha`` where
``p_i = |delta_i| + eps`` is its last TD error, and its loss is weighted by the importance-sampling weight
``w_i = (N * P(i))^-beta / max_j w_j`` that corrects the bias of the non-uniform sampling (beta is annealed
to 1 by the trainer).

:class:`SumTree` holds the priorities in arrays: a sum tree for prefix-sum sampling and a min tree for the
largest weight. Every operation works on a whole batch, one tree level at a time, so a minibatch costs
``log2(capacity)`` numpy operations rather than a Python loop per sampled item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from qiter.buffers.replay import ReplayBuffer, ReplayBufferSamples


class SumTree:
    """A sum tree and a min tree over ``capacity`` non-negative leaf values, with batched operations.

    Node 1 is the root, node ``k`` has children ``2k`` and ``2k + 1`` and the leaves are nodes
    ``capacity .. 2 * capacity - 1``; ``capacity`` is rounded up to a power of two so that every leaf is at
    the same depth. Leaves that were never set hold 0 (and ``inf`` in the min tree): they are never sampled.

    Single writes (:meth:`set_pending`, one per environment step) are only queued; they are written in one
    vectorized update before the next read.

    :param capacity: Number of leaves needed (rounded up to a power of two).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = 1 << (capacity - 1).bit_length()
        self.depth = self.capacity.bit_length() - 1
        self._sum = np.zeros(2 * self.capacity, dtype=np.float64)
        self._min = np.full(2 * self.capacity, np.inf, dtype=np.float64)
        self._pending_indices: list[int] = []
        self._pending_values: list[float] = []

    def set_pending(self, index: int, value: float) -> None:
        """Queue one leaf write (cheap: the trees are updated at the next read or :meth:`flush`)."""
        self._pending_indices.append(index)
        self._pending_values.append(value)
        # Bound the queue when nothing reads the tree for a long time (e.g. before learning starts).
        if len(self._pending_indices) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        """Write the queued leaf values."""
        if self._pending_indices:
            indices = np.asarray(self._pending_indices, dtype=np.int64)
            values = np.asarray(self._pending_values, dtype=np.float64)
            self._pending_indices, self._pending_values = [], []
            self._write(indices, values)

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set the leaves ``indices`` to ``values`` and recompute their ancestors, level by level.

        :param indices: Leaf indices in ``[0, capacity)``; with repeats, the last value wins.
        :param values: Non-negative values, same length.
        """
        # Queued writes are older: they go first, or they would overwrite these.
        self.flush()
        self._write(np.asarray(indices, dtype=np.int64).ravel(), np.asarray(values, dtype=np.float64).ravel())

    def _write(self, indices: np.ndarray, values: np.ndarray) -> None:
        if indices.size == 0:
            return
        if np.any(values < 0) or not np.all(np.isfinite(values)):
            raise ValueError("sum tree values must be finite and non-negative")
        # Keep the last write of a repeated index (numpy leaves repeated assignments' order unspecified).
        reversed_unique, first = np.unique(indices[::-1], return_index=True)
        values = values[::-1][first]
        nodes = reversed_unique + self.capacity
        self._sum[nodes] = values
        # An empty leaf must not be the minimum: the min tree is for the largest importance weight.
        self._min[nodes] = np.where(values > 0, values, np.inf)
        for _ in range(self.depth):
            # Siblings share a parent: repeated parents get the same value, so duplicates are harmless.
            nodes >>= 1
            left = 2 * nodes
            right = left + 1
            self._sum[nodes] = self._sum.take(left) + self._sum.take(right)
            self._min[nodes] = np.minimum(self._min.take(left), self._min.take(right))

    def values(self, indices: np.ndarray) -> np.ndarray:
        """Leaf values at ``indices``."""
        self.flush()
        return self._sum[np.asarray(indices, dtype=np.int64) + self.capacity]

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        self.flush()
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """Smallest positive leaf (``inf`` when every leaf is empty)."""
        self.flush()
        return float(self._min[1])

    def find_prefixsum(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each ``u``, the smallest leaf ``i`` with ``sum(leaves[: i + 1]) > u`` (batched descent).

        :param prefix_sums: Values in ``[0, total)``.
        :return: Leaf indices, same shape.
        """
        self.flush()
        u = np.array(prefix_sums, dtype=np.float64).ravel()
        nodes = np.ones(u.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sum = self._sum.take(left)
            # Going right needs mass there: rounding (u just below a parent's sum) can never end on an
            # empty leaf this way.
            go_right = (u >= left_sum) & (self._sum.take(left + 1) > 0)
            u -= left_sum * go_right
            nodes = left + go_right
        return nodes - self.capacity


class PrioritizedReplayBuffer(ReplayBuffer):
    """Replay buffer with proportional prioritization (Schaul et al., 2016).

    Same storage and n-step returns as :class:`ReplayBuffer`; only which indices are sampled changes, and
    the samples carry importance-sampling ``weights`` and their ``indices`` (for
    :meth:`update_priorities`).

    :param buffer_size: Max number of transitions to store.
    :param observation_space: Observation space of the env.
    :param action_space: Action space of the env.
    :param alpha: How much prioritization is used (0: uniform).
    :param eps: Added to ``|delta|`` so that no transition has zero probability.
    :param n_steps: n-step returns (see :class:`ReplayBuffer`).
    :param gamma: Discount for n-step returns.
    :param rng: Random generator for sampling; ``None`` uses numpy's global one.
    :param observation_dtype: Store observations with this dtype instead of the space's.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Discrete | spaces.Box,
        *,
        alpha: float = 0.6,
        eps: float = 1e-6,
        n_steps: int = 1,
        gamma: float = 0.99,
        rng: np.random.Generator | None = None,
        observation_dtype: np.dtype | type | None = None,
        n_envs: int = 1,
        **kwargs: Any,
    ) -> None:
        # kwargs: a storage subclass's own options (the frame buffer's stack size), passed along the MRO.
        super().__init__(
            buffer_size, observation_space, action_space, n_steps=n_steps, gamma=gamma, rng=rng,
            observation_dtype=observation_dtype, n_envs=n_envs, **kwargs,
        )  # fmt: skip
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.eps = eps
        # Importance-sampling exponent; the trainer anneals it towards 1 over the run.
        self.beta = 0.4
        self.tree = SumTree(self.buffer_size)
        # Largest p_i^alpha so far: new transitions get it, so each one is replayed at least once soon.
        self.max_priority = 1.0

    def store_transition(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool = False,
    ) -> None:
        """Store one transition (see :meth:`ReplayBuffer.store_transition`) with the maximal priority."""
        idx = self.current_idx
        super().store_transition(obs, next_obs, action, reward, terminated, truncated)
        self.tree.set_pending(idx, self.max_priority)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminateds: np.ndarray,
        truncateds: np.ndarray,
    ) -> None:
        """Store one transition per environment copy (see :meth:`ReplayBuffer.add`) with the maximal priority."""
        if self.n_envs == 1:  # through store_transition, which sets the priority
            super().add(obs, next_obs, actions, rewards, terminateds, truncateds)
            return
        start = self.current_idx
        super().add(obs, next_obs, actions, rewards, terminateds, truncateds)
        self.prioritize_new_rows(start)

    def prioritize_new_rows(self, start: int) -> None:
        """Give the ``n_envs`` rows just written from ``start`` the maximal priority (new transitions are
        replayed at least once, Schaul et al., 2016)."""
        for idx in range(start, start + self.n_envs):
            self.tree.set_pending(idx, self.max_priority)

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Stratified proportional sampling: one index in each of ``batch_size`` equal slices of the mass."""
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        total = self.tree.total
        segment = total / batch_size
        # Without a generator, numpy's global one, as the uniform buffer does (the seed's behaviour).
        uniform = self.rng.random(batch_size) if self.rng is not None else np.random.random(batch_size)
        prefix_sums = (np.arange(batch_size) + uniform) * segment
        # u < total in exact arithmetic; guard the rounding of the last segment's upper end.
        np.minimum(prefix_sums, np.nextafter(total, 0.0), out=prefix_sums)
        return self.tree.find_prefixsum(prefix_sums)

    def importance_weights(self, indices: np.ndarray) -> np.ndarray:
        """``w_i = (N * P(i))^-beta / max_j w_j``; the largest weight is that of the smallest priority.

        :param indices: Buffer indices.
        :return: Weights in ``(0, 1]``, float32.
        """
        total = self.tree.total
        n = len(self)
        probabilities = self.tree.values(indices) / total
        max_weight = (n * self.tree.min / total) ** -self.beta
        return ((n * probabilities) ** -self.beta / max_weight).astype(np.float32)

    def sample(
        self,
        batch_size: int,
        greedy_policy: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ReplayBufferSamples:
        """Sample ``batch_size`` transitions in proportion to their priorities.

        :param batch_size: How many transitions to sample.
        :param greedy_policy: With n-step returns, cut traces where the stored action is not greedy.
        :return: Samples with ``weights`` (importance sampling) and ``indices`` set.
        """
        indices = self.sample_indices(batch_size)
        samples = self.get_samples(indices, greedy_policy)
        samples.weights = self.importance_weights(indices)
        samples.indices = indices
        return samples

    def update_priorities(self, indices: np.ndarray | th.Tensor, td_errors: np.ndarray | th.Tensor) -> None:
        """Set ``p_i^alpha = (|delta_i| + eps)^alpha`` for the sampled transitions after a gradient step.

        :param indices: The ``indices`` of the samples.
        :param td_errors: Their TD errors (numpy array or tensor).
        """
        if isinstance(indices, th.Tensor):
            indices = indices.cpu().numpy()
        if isinstance(td_errors, th.Tensor):
            td_errors = td_errors.detach().cpu().numpy()
        priorities = (np.abs(np.asarray(td_errors, dtype=np.float64)) + self.eps) ** self.alpha
        self.tree.update(np.asarray(indices), priorities)
        self.max_priority = max(self.max_priority, float(priorities.max()))

    def state_dict(self) -> dict[str, Any]:
        """The transitions (see :meth:`ReplayBuffer.state_dict`), their priorities and beta."""
        state = super().state_dict()
        state.update(
            per_priorities=self.tree.values(np.arange(self.buffer_size)).copy(),
            per_max_priority=self.max_priority,
            per_beta=self.beta,
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        super().load_state_dict(state)
        self.tree = SumTree(self.buffer_size)
        self.tree.update(np.arange(self.buffer_size), np.asarray(state["per_priorities"]))
        self.max_priority = float(state["per_max_priority"])
        self.beta = float(state["per_beta"])
