"""The replay buffer: preallocated numpy arrays used as a ring, no Python object per transition.

:class:`ReplayBuffer` keeps the seed's API (``store_transition``, ``sample``, ``current_idx``,
``is_full``) and adds, as keyword-only options, n-step returns computed at sampling time, an explicit
random generator for reproducible runs, any action space (Discrete or Box) and an env axis.

The env axis: with ``n_envs`` copies of the environment stepped together, :meth:`ReplayBuffer.add` writes
one transition per copy in consecutive rows, so row ``i`` follows row ``i - n_envs`` in the same copy. The
arrays keep the seed's flat shape ``(buffer_size, ...)``, and ``n_envs = 1`` is exactly the seed's buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from qiter.errors import QiterError

# The arrays a buffer's state is made of (see ReplayBuffer.state_dict).
STORAGE = ("observations", "next_observations", "actions", "rewards", "terminateds", "dones")


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
    :param n_envs: Copies of the environment whose transitions :meth:`add` stores together; the capacity is
        rounded down to a multiple of it.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Discrete | spaces.Box,
        *,
        n_steps: int = 1,
        gamma: float = 0.99,
        rng: np.random.Generator | None = None,
        observation_dtype: np.dtype | type | None = None,
        n_envs: int = 1,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be positive, got {n_envs}")
        if buffer_size < n_envs:
            raise ValueError(f"buffer_size must be at least n_envs ({n_envs}), got {buffer_size}")
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        # Whole rows of n_envs transitions, so that a copy's transitions stay n_envs rows apart across the wrap.
        buffer_size -= buffer_size % n_envs
        self.n_envs = n_envs
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
        self._allocate_observations(buffer_size, observation_space.shape, np.dtype(obs_dtype))
        if isinstance(action_space, spaces.Discrete):
            # The action is an integer (int64, so that it can be a `th.gather` index)
            self.actions = np.zeros((buffer_size, 1), dtype=action_space.dtype)
        else:
            self.actions = np.zeros((buffer_size, *action_space.shape), dtype=np.float32)
        self.rewards = np.zeros((buffer_size,), dtype=np.float32)
        self.terminateds = np.zeros((buffer_size,), dtype=bool)
        # End of episode for any reason (termination or truncation): n-step returns must not cross it.
        self.dones = np.zeros((buffer_size,), dtype=bool)

    def _allocate_observations(self, buffer_size: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Allocate the observation storage (two arrays here; one frame per row in the frame buffer)."""
        self.observations = np.zeros((buffer_size, *shape), dtype=dtype)
        self.next_observations = np.zeros((buffer_size, *shape), dtype=dtype)

    def observations_at(self, indices: np.ndarray) -> np.ndarray:
        """The observations of the transitions at these rows."""
        return self.observations[indices]

    def next_observations_at(self, indices: np.ndarray) -> np.ndarray:
        """The observations that followed the transitions at these rows."""
        return self.next_observations[indices]

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

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminateds: np.ndarray,
        truncateds: np.ndarray,
    ) -> None:
        """Store one transition per environment copy (arrays with a leading axis of ``n_envs``).

        :param obs: Observations, shape ``(n_envs, *obs_shape)``.
        :param next_obs: The observations that followed (the final ones at an episode's end).
        :param actions: Actions, shape ``(n_envs,)`` (Discrete) or ``(n_envs, *action_shape)`` (Box).
        :param rewards: Rewards, shape ``(n_envs,)``.
        :param terminateds: Episode ends that cut the bootstrap.
        :param truncateds: Time-limit cuts (the bootstrap goes on; n-step returns stop there).
        """
        if self.n_envs == 1:
            # Scalar writes cost a third of slice writes: this is once per environment step.
            self.store_transition(obs[0], next_obs[0], actions[0], rewards[0], terminateds[0], truncateds[0])
            return
        start = self.current_idx
        end = start + self.n_envs
        self.observations[start:end] = obs
        self.next_observations[start:end] = next_obs
        self.actions[start:end] = actions.reshape(self.actions[start:end].shape)
        self.rewards[start:end] = rewards
        self.terminateds[start:end] = terminateds
        self.dones[start:end] = np.logical_or(terminateds, truncateds)
        self.current_idx = end
        if self.current_idx == self.buffer_size:
            self.current_idx = 0
            self.is_full = True

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions and the ring's position, for checkpoints (numpy arrays and numbers)."""
        state: dict[str, Any] = {name: getattr(self, name)[: len(self)].copy() for name in STORAGE}
        state.update(current_idx=self.current_idx, is_full=self.is_full, buffer_size=self.buffer_size)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, into a buffer built with the same sizes.

        :raises QiterError: The saved buffer has another capacity or other shapes.
        """
        if int(state["buffer_size"]) != self.buffer_size:
            raise QiterError(
                f"the saved replay buffer holds {int(state['buffer_size'])} transitions, this one "
                f"{self.buffer_size}: resume with the same replay_buffer_size and n_envs"
            )
        for name in STORAGE:
            saved = np.asarray(state[name])
            target = getattr(self, name)
            if saved.shape[1:] != target.shape[1:]:
                raise QiterError(
                    f"the saved replay buffer's {name} have shape {saved.shape[1:]}, not {target.shape[1:]}"
                )
            target[: len(saved)] = saved
        self.current_idx, self.is_full = int(state["current_idx"]), bool(state["is_full"])

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
                self.observations_at(batch_indices),
                self.next_observations_at(batch_indices),
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
        n, n_envs = self.n_steps, self.n_envs
        # (batch, n) ring positions of the transitions that follow each sampled one in the same env copy.
        trace = (batch_indices[:, None] + np.arange(n) * n_envs) % self.buffer_size
        # Transitions of that copy written after each sampled one: the trace may not run past the newest.
        newest = (self.current_idx - n_envs + batch_indices % n_envs) % self.buffer_size
        n_after = (newest - batch_indices) % self.buffer_size // n_envs
        valid = np.arange(n)[None, :] <= n_after[:, None]
        # Step k is part of the return only if no earlier step of the trace ended the episode.
        ended_before = np.zeros_like(valid)
        ended_before[:, 1:] = np.cumsum(self.dones[trace[:, :-1]], axis=1) > 0
        valid &= ~ended_before
        if greedy_policy is not None:
            # Cut where the behaviour action differs from the current greedy one (from step 1 on: the first
            # action is the one being evaluated, so it needs no correction).
            later = trace[:, 1:]
            greedy = greedy_policy(self.observations_at(later.ravel())).reshape(later.shape)
            agrees = greedy == self.actions[later, 0]
            valid[:, 1:] &= np.cumprod(agrees, axis=1).astype(bool)
        # Every step before the last valid one is valid, so the count of valid steps gives the last one.
        n_valid = valid.sum(axis=1)
        last = trace[np.arange(len(batch_indices)), n_valid - 1]
        discounts_k = self.gamma ** np.arange(n, dtype=np.float64)
        rewards = (self.rewards[trace] * valid * discounts_k).sum(axis=1).astype(np.float32)
        return ReplayBufferSamples(
            self.observations_at(batch_indices),
            self.next_observations_at(last),
            self.actions[batch_indices],
            rewards,
            self.terminateds[last],
            discounts=(self.gamma**n_valid).astype(np.float32),
            indices=batch_indices,
        )
