"""The replay buffer: preallocated numpy arrays used as a ring, no Python object per transition.

:class:`ReplayBuffer` keeps the seed's API (``store_transition``, ``sample``, ``current_idx``,
``is_full``) and adds, as keyword-only options, n-step returns computed at sampling time and an explicit
random generator for reproducible runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch as th
from gymnasium import spaces


@dataclass
class TorchReplayBufferSamples:
    """A minibatch as PyTorch tensors (see :class:`ReplayBufferSamples`)."""

    observations: th.Tensor
    next_observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    terminateds: th.Tensor
    discounts: th.Tensor | None = None
    weights: th.Tensor | None = None
    indices: th.Tensor | None = None


@dataclass
class ReplayBufferSamples:
    """
    A dataclass containing transitions from the replay buffer.

    ``discounts`` (the bootstrap discount gamma^k of an n-step return), ``weights`` (importance-sampling
    weights of prioritized replay) and ``indices`` are ``None`` for the seed's plain 1-step uniform sampling.
    """

    observations: np.ndarray  # same as states in the theory
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminateds: np.ndarray
    discounts: np.ndarray | None = None
    weights: np.ndarray | None = None
    indices: np.ndarray | None = None

    def to_torch(self, device: th.device | str = "cpu") -> TorchReplayBufferSamples:
        """Convert the samples to PyTorch tensors (zero-copy on the CPU).

        :param device: PyTorch device.
        :return: The same samples as tensors; ``actions`` is an int64 tensor of shape (batch, 1) usable as
            a ``th.gather`` index.
        """
        # fields() rather than astuple(), which would deep-copy every array first.
        values = (getattr(self, f.name) for f in fields(self))
        return TorchReplayBufferSamples(
            *(None if x is None else th.as_tensor(x, device=device) for x in values)  # type: ignore[arg-type]
        )


class ReplayBuffer:
    """
    A simple replay buffer class to store and sample transitions.

    :param buffer_size: Max number of transitions to store
    :param observation_space: Observation space of the env,
        contains information about the observation type and shape.
    :param action_space: Action space of the env,
        contains information about the number of actions.
    :param n_steps: Return n-step discounted rewards at sampling time (1: the seed's 1-step transitions).
    :param gamma: Discount used for n-step returns.
    :param rng: Random generator for sampling; ``None`` uses numpy's global one, as the seed does.
    :param observation_dtype: Store observations with this dtype instead of the space's.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        *,
        n_steps: int = 1,
        gamma: float = 0.99,
        rng: np.random.Generator | None = None,
        observation_dtype: np.dtype | type | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be positive, got {buffer_size}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        # Current position in the ring buffer
        self.current_idx = 0
        self.buffer_size = buffer_size
        # Boolean flag to know when the buffer has reached its maximal capacity
        self.is_full = False
        self.observation_space = observation_space
        self.action_space = action_space
        self.n_steps = n_steps
        self.gamma = gamma
        self.rng = rng
        obs_dtype = observation_dtype if observation_dtype is not None else observation_space.dtype
        obs_shape = observation_space.shape
        self.observations = np.zeros((buffer_size, *obs_shape), dtype=obs_dtype)
        self.next_observations = np.zeros((buffer_size, *obs_shape), dtype=obs_dtype)
        # The action is an integer (int64, so that it can be a `th.gather` index)
        self.actions = np.zeros((buffer_size, 1), dtype=action_space.dtype)
        self.rewards = np.zeros((buffer_size,), dtype=np.float32)
        self.terminateds = np.zeros((buffer_size,), dtype=bool)
        # End of episode for any reason (termination or truncation): n-step returns must not cross it.
        self.dones = np.zeros((buffer_size,), dtype=bool)

    def __len__(self) -> int:
        return self.buffer_size if self.is_full else self.current_idx

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        arrays = (self.observations, self.next_observations, self.actions, self.rewards)
        return sum(a.nbytes for a in arrays) + self.terminateds.nbytes + self.dones.nbytes

    def store_transition(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool = False,
    ) -> None:
        """
        Store one transition in the buffer.

        :param obs: Current observation
        :param next_obs: Next observation
        :param action: Action taken for the current observation
        :param reward: Reward received after taking the action
        :param terminated: Whether it is the end of an episode or not
            (discarding episode truncation like timeout)
        :param truncated: Whether the episode was cut (time limit); only n-step returns use it.
        """
        idx = self.current_idx
        self.observations[idx] = obs
        self.next_observations[idx] = next_obs
        self.actions[idx] = action
        self.rewards[idx] = reward
        self.terminateds[idx] = terminated
        self.dones[idx] = terminated or truncated
        self.current_idx += 1
        # A ring buffer: start from zero again once the end is reached.
        if self.current_idx == self.buffer_size:
            self.current_idx = 0
            self.is_full = True

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Sample ``batch_size`` indices with replacement among the stored transitions."""
        upper_bound = self.buffer_size if self.is_full else self.current_idx
        if upper_bound == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if self.rng is None:
            return np.random.randint(0, upper_bound, batch_size)
        # floor(U * n) for U uniform in [0, 1): uniform indices, in half the time of Generator.integers,
        # whose argument handling costs more than the draw for a batch this small.
        return (self.rng.random(batch_size) * upper_bound).astype(np.int64)

    def sample(
        self,
        batch_size: int,
        greedy_policy: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ReplayBufferSamples:
        """
        Sample with replacement `batch_size` transitions from the buffer.

        :param batch_size: How many transitions to sample.
        :param greedy_policy: With n-step returns, cut each trace at the first stored action that differs
            from this policy's (batched observations -> actions), which removes the off-policy bias.
        :return: Samples from the replay buffer
        """
        return self.get_samples(self.sample_indices(batch_size), greedy_policy)

    def get_samples(
        self,
        batch_indices: np.ndarray,
        greedy_policy: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ReplayBufferSamples:
        """The transitions (1-step, or n-step when the buffer was built with ``n_steps > 1``) at these indices."""
        if self.n_steps == 1:
            return ReplayBufferSamples(
                self.observations[batch_indices],
                self.next_observations[batch_indices],
                self.actions[batch_indices],
                self.rewards[batch_indices],
                self.terminateds[batch_indices],
                indices=batch_indices,
            )
        return self._n_step_samples(batch_indices, greedy_policy)

    def _n_step_samples(
        self,
        batch_indices: np.ndarray,
        greedy_policy: Callable[[np.ndarray], np.ndarray] | None,
    ) -> ReplayBufferSamples:
        n = self.n_steps
        # (batch, n) ring positions of the transitions that follow each sampled one.
        trace = (batch_indices[:, None] + np.arange(n)) % self.buffer_size
        # Transitions written after each sampled one: the trace may not run past the newest transition.
        newest = (self.current_idx - 1) % self.buffer_size
        n_after = (newest - batch_indices) % self.buffer_size
        valid = np.arange(n)[None, :] <= n_after[:, None]
        # Step k is part of the return only if no earlier step of the trace ended the episode.
        ended_before = np.zeros_like(valid)
        ended_before[:, 1:] = np.cumsum(self.dones[trace[:, :-1]], axis=1) > 0
        valid &= ~ended_before
        if greedy_policy is not None:
            # Cut where the behaviour action differs from the current greedy one (from step 1 on: the first
            # action is the one being evaluated, so it needs no correction).
            later = trace[:, 1:]
            greedy = greedy_policy(self.observations[later.ravel()]).reshape(later.shape)
            agrees = greedy == self.actions[later, 0]
            valid[:, 1:] &= np.cumprod(agrees, axis=1).astype(bool)
        # Every step before the last valid one is valid, so the count of valid steps gives the last one.
        n_valid = valid.sum(axis=1)
        last = trace[np.arange(len(batch_indices)), n_valid - 1]
        discounts_k = self.gamma ** np.arange(n, dtype=np.float64)
        rewards = (self.rewards[trace] * valid * discounts_k).sum(axis=1).astype(np.float32)
        return ReplayBufferSamples(
            self.observations[batch_indices],
            self.next_observations[last],
            self.actions[batch_indices],
            rewards,
            self.terminateds[last],
            discounts=(self.gamma**n_valid).astype(np.float32),
            indices=batch_indices,
        )
