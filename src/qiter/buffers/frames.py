"""A replay memory for image observations: each frame stored once, as uint8, stacks rebuilt at sampling.

An Atari observation is a stack of the last ``k = 4`` frames; two consecutive observations share ``k - 1`` of
them, and a transition holds two. Storing each observation whole, twice per transition, takes
``2 * 4 * 84 * 84`` bytes per transition, 56 GB for a million (Stable-Baselines3 without
``optimize_memory_usage``). :class:`FrameReplayBuffer` stores each frame once, the model being Dopamine's
circular buffer, adapted to ``n_envs`` copies and to exact episode starts:

- each env copy has its own ring of frames; a transition's row (the usual flat layout of
  :class:`~qiter.buffers.replay.ReplayBuffer`, row ``i`` following row ``i - n_envs`` in the same copy)
  keeps ``frame_pos``, the absolute position of its observation's newest frame, and ``depth``, how many
  earlier frames of the same episode the stack shows (at most ``k - 1``);
- :meth:`add` writes the next observation's newest frame after it (so the next observation of row ``i``
  always ends at ``frame_pos[i] + 1``, a final observation included), and, at an episode's first
  transition, the first observation's frame before it: an episode of ``L`` transitions takes ``L + 1``
  frames;
- a stack is rebuilt as the environment showed it: ``gymnasium.wrappers.FrameStackObservation`` (padding
  ``"reset"``) repeats an episode's first frame in the slots before it, so slot ``j`` of a stack whose
  newest frame is at ``p`` holds the frame at ``p - min(k - 1 - j, depth)``; no stack reaches into another
  episode.

Frames outnumber transitions by the number of episodes, so each ring holds ``frame_slack`` (5%) more frames
than its copy's transitions. When episodes are shorter on average than ``1 / frame_slack`` steps, the oldest
rows can lose their first frames before they are overwritten: such rows are never sampled (a draw that
lands on one is drawn again).

An observation of shape ``(k * c, h, w)`` is a stack of ``k`` frames of shape ``(c, h, w)``: Atari's
``(4, 84, 84)`` is 4 frames of ``(1, 84, 84)``; MinAtar's ``(c, 10, 10)`` is one frame (``k = 1``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

from qiter.buffers.prioritized import PrioritizedReplayBuffer
from qiter.buffers.replay import ReplayBuffer
from qiter.errors import QiterError

__all__ = ["FrameReplayBuffer", "PrioritizedFrameReplayBuffer", "available_memory", "check_fits_memory"]

# The transition arrays saved with the frames (observations live in the frame rings).
_ROW_STORAGE = ("actions", "rewards", "terminateds", "dones", "frame_pos", "depth")
# Extra frames per ring, as a fraction of its transitions: one per episode of 20 steps or more.
DEFAULT_FRAME_SLACK = 0.05


class FrameReplayBuffer(ReplayBuffer):
    """Replay memory that stores each frame of stacked image observations once (see the module docstring).

    Takes the options of :class:`~qiter.buffers.replay.ReplayBuffer` (n-step returns, ``n_envs`` copies,
    a random generator) and:

    :param stack_size: ``k``, the frames in one observation (its first axis is ``k * channels``).
    :param frame_slack: Extra frames per ring, as a fraction of the transitions it serves.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Box,
        action_space: spaces.Discrete | spaces.Box,
        *,
        stack_size: int = 1,
        frame_slack: float = DEFAULT_FRAME_SLACK,
        **kwargs: Any,
    ) -> None:
        shape = observation_space.shape
        if len(shape) < 2 or stack_size < 1 or shape[0] % stack_size:
            raise ValueError(f"an observation of shape {shape} is not a stack of {stack_size} frames")
        self.stack_size = stack_size
        self.frame_shape = (shape[0] // stack_size, *shape[1:])
        self.frame_slack = frame_slack
        super().__init__(buffer_size, observation_space, action_space, **kwargs)

    @staticmethod
    def frames_per_ring(buffer_size: int, n_envs: int, stack_size: int, frame_slack: float) -> int:
        """Frames in each copy's ring for a buffer of ``buffer_size`` transitions."""
        per_env = buffer_size // n_envs
        return per_env + math.ceil(per_env * frame_slack) + stack_size

    @classmethod
    def bytes_needed(
        cls,
        buffer_size: int,
        observation_shape: tuple[int, ...],
        stack_size: int,
        n_envs: int = 1,
        frame_slack: float = DEFAULT_FRAME_SLACK,
    ) -> int:
        """Bytes a buffer of these sizes allocates (for the memory check made before allocating it)."""
        buffer_size -= buffer_size % n_envs
        frame_bytes = int(np.prod(observation_shape)) // stack_size
        frames = n_envs * cls.frames_per_ring(buffer_size, n_envs, stack_size, frame_slack)
        # actions (int64), rewards (float32), terminateds and dones (bool), frame_pos (int64), depth (uint8)
        return frames * frame_bytes + buffer_size * (8 + 4 + 1 + 1 + 8 + 1)

    def _allocate_observations(self, buffer_size: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.n_frames_ring = self.frames_per_ring(buffer_size, self.n_envs, self.stack_size, self.frame_slack)
        self.frames = np.zeros((self.n_envs, self.n_frames_ring, *self.frame_shape), dtype=np.uint8)
        self.frame_pos = np.zeros(buffer_size, dtype=np.int64)
        self.depth = np.zeros(buffer_size, dtype=np.uint8)
        # Per copy: frames written so far (absolute positions), whether the next transition starts an
        # episode, and the depth of the last stored observation.
        self.frames_written = np.zeros(self.n_envs, dtype=np.int64)
        self.episode_starts = np.ones(self.n_envs, dtype=bool)
        self.last_depth = np.zeros(self.n_envs, dtype=np.int64)
        self._obs_shape = shape
        # Slot j of a stack shows the frame (k - 1 - j) steps back, or the episode's first one.
        self._back = np.arange(self.stack_size - 1, -1, -1)

    @property
    def nbytes(self) -> int:
        arrays = (self.frames, self.frame_pos, self.depth, self.actions, self.rewards)
        return sum(a.nbytes for a in arrays) + self.terminateds.nbytes + self.dones.nbytes

    # -- storing ---------------------------------------------------------------------------------------

    def _newest_frame(self, obs: np.ndarray) -> np.ndarray:
        return obs.reshape(self.stack_size, *self.frame_shape)[-1]

    def _write_frame(self, env: int, frame: np.ndarray) -> int:
        """Write one frame into copy ``env``'s ring; return its absolute position."""
        pos = int(self.frames_written[env])
        self.frames[env, pos % self.n_frames_ring] = frame
        self.frames_written[env] = pos + 1
        return pos

    def store_transition(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: int,
        reward: float,
        terminated: bool,
        truncated: bool = False,
    ) -> None:
        """Store one transition (one env copy only)."""
        if self.n_envs != 1:
            raise ValueError("store_transition stores one copy's transition; use add with n_envs copies")
        self.add(
            obs[np.newaxis], next_obs[np.newaxis], np.asarray([action]), np.asarray([reward]),
            np.asarray([terminated]), np.asarray([truncated]),
        )  # fmt: skip

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminateds: np.ndarray,
        truncateds: np.ndarray,
    ) -> None:
        """Store one transition per env copy (see :meth:`ReplayBuffer.add`): one new frame each, two at an
        episode's first transition."""
        start = self.current_idx
        last_slot = self.stack_size - 1
        for env in range(self.n_envs):
            row = start + env
            if self.episode_starts[env]:
                pos, depth = self._write_frame(env, self._newest_frame(obs[env])), 0
            else:
                pos, depth = int(self.frames_written[env]) - 1, min(int(self.last_depth[env]) + 1, last_slot)
            self._write_frame(env, self._newest_frame(next_obs[env]))
            self.frame_pos[row], self.depth[row] = pos, depth
            self.last_depth[env] = depth
        end = start + self.n_envs
        self.actions[start:end] = np.asarray(actions).reshape(self.actions[start:end].shape)
        self.rewards[start:end] = rewards
        self.terminateds[start:end] = terminateds
        dones = np.logical_or(terminateds, truncateds)
        self.dones[start:end] = dones
        self.episode_starts[:] = dones
        self.current_idx = end
        if self.current_idx == self.buffer_size:
            self.current_idx = 0
            self.is_full = True

    # -- sampling --------------------------------------------------------------------------------------

    def _stacks(self, indices: np.ndarray, offset: int) -> np.ndarray:
        """The stacks ending ``offset`` frames after each row's observation (0: it, 1: the next one)."""
        indices = np.asarray(indices)
        envs = indices % self.n_envs
        newest = self.frame_pos[indices] + offset
        depth = np.minimum(self.depth[indices].astype(np.int64) + offset, self.stack_size - 1)
        positions = newest[:, None] - np.minimum(self._back[None, :], depth[:, None])
        frames = self.frames[envs[:, None], positions % self.n_frames_ring]
        return frames.reshape(len(indices), *self._obs_shape)

    def observations_at(self, indices: np.ndarray) -> np.ndarray:
        return self._stacks(indices, 0)

    def next_observations_at(self, indices: np.ndarray) -> np.ndarray:
        return self._stacks(indices, 1)

    def valid(self, indices: np.ndarray) -> np.ndarray:
        """Whether each row still has every frame its two stacks need (see the module docstring)."""
        oldest = self.frame_pos[indices] - self.depth[indices]
        return self.frames_written[indices % self.n_envs] - oldest <= self.n_frames_ring

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Uniform rows among those whose frames are all still stored (others are redrawn)."""
        indices = super().sample_indices(batch_size)
        bad = ~self.valid(indices)
        while bad.any():
            indices[bad] = super().sample_indices(int(bad.sum()))
            bad = ~self.valid(indices)
        return indices

    # -- saving ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The frame rings, the stored transitions and the positions, for checkpoints."""
        n = len(self)
        state: dict[str, Any] = {name: getattr(self, name)[:n].copy() for name in _ROW_STORAGE}
        written = int(self.frames_written.max())
        state.update(
            frames=self.frames[:, : min(written, self.n_frames_ring)].copy(),
            frames_written=self.frames_written.copy(),
            last_depth=self.last_depth.copy(),
            current_idx=self.current_idx,
            is_full=self.is_full,
            buffer_size=self.buffer_size,
            n_frames_ring=self.n_frames_ring,
        )
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved into a buffer of the same sizes.

        The environments start new episodes after a resume, so each copy's last stored transition is
        marked as the end of its episode (an n-step return or a stack never runs into the new one).
        """
        if int(state["buffer_size"]) != self.buffer_size or int(state["n_frames_ring"]) != self.n_frames_ring:
            raise QiterError(
                f"the saved replay buffer holds {int(state['buffer_size'])} transitions, this one "
                f"{self.buffer_size}: resume with the same replay_buffer_size and n_envs"
            )
        frames = np.asarray(state["frames"])
        if frames.shape[2:] != self.frames.shape[2:]:
            raise QiterError(
                f"the saved replay buffer's frames have shape {frames.shape[2:]}, not {self.frame_shape}"
            )
        self.frames[:, : frames.shape[1]] = frames
        for name in _ROW_STORAGE:
            saved = np.asarray(state[name])
            getattr(self, name)[: len(saved)] = saved
        self.frames_written[:] = np.asarray(state["frames_written"])
        self.last_depth[:] = np.asarray(state["last_depth"])
        self.current_idx, self.is_full = int(state["current_idx"]), bool(state["is_full"])
        if len(self):
            newest = (self.current_idx - self.n_envs + np.arange(self.n_envs)) % self.buffer_size
            self.dones[newest] = True
        self.episode_starts[:] = True


class PrioritizedFrameReplayBuffer(PrioritizedReplayBuffer, FrameReplayBuffer):
    """Prioritized replay (:class:`~qiter.buffers.prioritized.PrioritizedReplayBuffer`) over the frame
    memory of :class:`FrameReplayBuffer`."""

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminateds: np.ndarray,
        truncateds: np.ndarray,
    ) -> None:
        """Store one transition per copy with the maximal priority."""
        start = self.current_idx
        # The frame memory's add (which never goes through store_transition, even for one copy), then the
        # priorities.
        FrameReplayBuffer.add(self, obs, next_obs, actions, rewards, terminateds, truncateds)
        self.prioritize_new_rows(start)

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """Proportional draws; a row that lost its frames is drawn again (its priority stays: a zero would
        make the min tree, and so every importance weight, zero)."""
        indices = PrioritizedReplayBuffer.sample_indices(self, batch_size)
        bad = ~self.valid(indices)
        while bad.any():
            indices[bad] = PrioritizedReplayBuffer.sample_indices(self, int(bad.sum()))
            bad = ~self.valid(indices)
        return indices


def gigabytes(nbytes: int) -> str:
    """A memory size for the start-of-run line: one decimal from 1 GB (``7.4 GB``), two significant
    digits below (``0.044 GB`` for MinAtar's 100k transitions, which one decimal showed as 0.0)."""
    gb = nbytes / 1e9
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb:.2g} GB"


def available_memory() -> int | None:
    """Bytes of memory the system can give without swapping (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_memory(buffer_size: int, nbytes: int, available: int | None = None) -> None:
    """Refuse, before anything is allocated, a buffer larger than the memory available.

    :param buffer_size: Transitions asked for.
    :param nbytes: Bytes the buffer would allocate.
    :param available: Bytes available (default: :func:`available_memory`).
    :raises QiterError: Saying how many transitions would fit.
    """
    available = available_memory() if available is None else available
    if available is None or nbytes <= available:
        return
    fit = int(buffer_size * available / nbytes)
    raise QiterError(
        f"a replay buffer of {buffer_size} transitions needs {nbytes / 1e9:.1f} GB but {available / 1e9:.1f} GB "
        f"of memory is available: at most about {fit} transitions fit (set replay_buffer_size)"
    )
