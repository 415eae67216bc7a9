"""The frame replay memory: every sampled stack equals the stack the environment returned.

A small fake image env (6x6 frames that carry a unique number) is stepped through the run loop's own
``SingleEnv``/``VectorEnvs`` and a 4-frame ``FrameStackObservation``; a mirror keeps, for each ring row, the
observation and next observation the loop handed to the buffer. Episodes last 1 to 8 steps, end by
termination or truncation, and the ring wraps several times.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from qiter.agent import Transitions
from qiter.buffers.frames import (
    FrameReplayBuffer,
    PrioritizedFrameReplayBuffer,
    check_fits_memory,
    gigabytes,
)
from qiter.errors import QiterError
from qiter.run_loop import SingleEnv, VectorEnvs

STACK = 4


class NumberedFrames(gym.Env[np.ndarray, int]):
    """Frames of 6x6 uint8 whose first three pixels spell a number unique to the copy and step; episodes of
    random length (1 to 8 steps), ended by termination or truncation at random."""

    def __init__(self, channels: int = 1) -> None:
        self.observation_space = spaces.Box(0, 255, shape=(channels, 6, 6), dtype=np.uint8)
        self.action_space = spaces.Discrete(3)
        self.counter = 0
        self.left = 0
        self.copy_id = 0

    def _frame(self) -> np.ndarray:
        self.counter += 1
        frame = self.np_random.integers(0, 256, size=self.observation_space.shape, dtype=np.uint8)
        frame.flat[:3] = (self.copy_id, self.counter // 256, self.counter % 256)
        return frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.copy_id = seed
        self.left = int(self.np_random.integers(1, 9))
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.left -= 1
        ended = self.left == 0
        cut = ended and bool(self.np_random.random() < 0.5)
        return self._frame(), float(action), ended and not cut, cut, {}


def stacked(channels: int = 1, stack: int = STACK) -> gym.Env:
    env: gym.Env = NumberedFrames(channels)
    return gym.wrappers.FrameStackObservation(env, stack, padding_type="reset") if stack > 1 else env


def flat_space(env: gym.Env) -> spaces.Box:
    """A stack of (k, c, h, w) as the (k * c, h, w) the agents see."""
    shape = env.observation_space.shape
    return spaces.Box(
        0, 255, shape=(shape[0] * shape[1], *shape[2:]) if len(shape) == 4 else shape, dtype=np.uint8
    )


def fill(
    buffer: FrameReplayBuffer, n_envs: int, n_steps: int, seed: int = 0, **env_kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Step ``n_envs`` copies ``n_steps`` times into ``buffer``; return the mirror (obs, next_obs) per row."""
    envs: SingleEnv | VectorEnvs = (
        SingleEnv(stacked(**env_kwargs)) if n_envs == 1 else VectorEnvs(lambda: stacked(**env_kwargs), n_envs)
    )
    envs.reset(seed)
    shape = (buffer.buffer_size, *buffer.observation_space.shape)
    mirror_obs, mirror_next = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        actions = rng.integers(0, 3, size=n_envs)
        transitions, _ = envs.step(actions)
        obs = transitions.observations.reshape(n_envs, *shape[1:])
        next_obs = transitions.next_observations.reshape(n_envs, *shape[1:])
        rows = slice(buffer.current_idx, buffer.current_idx + n_envs)
        mirror_obs[rows], mirror_next[rows] = obs, next_obs
        buffer.add(*Transitions(obs, next_obs, *transitions[2:]))
    envs.close()
    return mirror_obs, mirror_next


@pytest.mark.parametrize("n_envs", [1, 3])
@pytest.mark.parametrize("channels", [1, 2])
def test_stacks_are_the_stacks_the_env_returned(n_envs: int, channels: int) -> None:
    space = flat_space(stacked(channels))
    buffer = FrameReplayBuffer(
        60, space, spaces.Discrete(3), stack_size=STACK, n_envs=n_envs, frame_slack=1.0
    )
    # 250 steps of every copy: the ring of 60 rows wraps a dozen times, through episodes of 1 to 8 steps.
    mirror_obs, mirror_next = fill(buffer, n_envs, 250, channels=channels)
    rows = np.arange(buffer.buffer_size)
    assert buffer.valid(rows).all()  # two frames per transition at most: a slack of 1 keeps every row
    np.testing.assert_array_equal(buffer.observations_at(rows), mirror_obs)
    np.testing.assert_array_equal(buffer.next_observations_at(rows), mirror_next)
    # The test covers what it claims: episode starts (stacks of one repeated frame) and ends.
    assert buffer.dones.any() and (buffer.depth == 0).any() and (buffer.depth == STACK - 1).any()
    assert buffer.frames.nbytes == n_envs * buffer.n_frames_ring * channels * 36


def test_single_frame_observations_and_store_transition() -> None:
    """MinAtar's case: an observation is one frame of several channels (stack_size 1)."""
    env = NumberedFrames(channels=3)
    buffer = FrameReplayBuffer(20, env.observation_space, env.action_space, stack_size=1)
    obs, _ = env.reset(seed=1)
    expected = []
    for _ in range(45):
        next_obs, reward, terminated, truncated, _ = env.step(1)
        buffer.store_transition(obs, next_obs, 1, reward, terminated, truncated)
        expected.append((obs, next_obs))
        obs = env.reset()[0] if terminated or truncated else next_obs
    rows = (np.arange(45)[-20:]) % 20
    valid = buffer.valid(rows)
    assert valid.sum() >= 15
    np.testing.assert_array_equal(
        buffer.observations_at(rows[valid]), np.stack([e[0] for e in expected[-20:]])[valid]
    )
    np.testing.assert_array_equal(
        buffer.next_observations_at(rows[valid]), np.stack([e[1] for e in expected[-20:]])[valid]
    )


@pytest.mark.parametrize("prioritized", [False, True])
def test_short_episodes_with_little_slack_never_sample_lost_frames(prioritized: bool) -> None:
    """Episodes of 4.5 steps on average need 22% more frames than transitions: with 5% of slack the oldest
    rows lose frames; they are never sampled, and what is sampled is exact."""
    space = flat_space(stacked())
    cls = PrioritizedFrameReplayBuffer if prioritized else FrameReplayBuffer
    buffer = cls(
        90, space, spaces.Discrete(3), stack_size=STACK, n_envs=2, rng=np.random.default_rng(0), n_steps=3, gamma=0.5,
    )  # fmt: skip
    mirror_obs, mirror_next = fill(buffer, 2, 200)
    rows = np.arange(buffer.buffer_size)
    valid = buffer.valid(rows)
    assert 0 < (~valid).sum() < 30
    np.testing.assert_array_equal(buffer.observations_at(rows[valid]), mirror_obs[valid])
    for _ in range(20):
        samples = buffer.sample(64)
        assert samples.indices is not None and buffer.valid(samples.indices).all()
        np.testing.assert_array_equal(samples.observations, mirror_obs[samples.indices])
        if prioritized:
            assert samples.weights is not None and np.isfinite(samples.weights).all()
    # n-step: the next observation is the one after the trace's last step, never past an episode's end.
    samples = buffer.sample(256)
    assert samples.indices is not None and samples.discounts is not None
    n_valid = np.round(np.log(samples.discounts) / np.log(0.5)).astype(int)
    last = (samples.indices + (n_valid - 1) * 2) % buffer.buffer_size
    np.testing.assert_array_equal(samples.next_observations, mirror_next[last])
    assert (n_valid < 3).any() and (n_valid == 3).any()


@pytest.mark.parametrize("prioritized", [False, True])
def test_save_and_load(prioritized: bool) -> None:
    space = flat_space(stacked())
    cls = PrioritizedFrameReplayBuffer if prioritized else FrameReplayBuffer
    buffer = cls(40, space, spaces.Discrete(3), stack_size=STACK, n_envs=2, frame_slack=1.0)
    fill(buffer, 2, 70)
    restored = cls(40, space, spaces.Discrete(3), stack_size=STACK, n_envs=2, frame_slack=1.0)
    restored.load_state_dict(buffer.state_dict())
    rows = np.arange(40)
    np.testing.assert_array_equal(restored.observations_at(rows), buffer.observations_at(rows))
    np.testing.assert_array_equal(restored.next_observations_at(rows), buffer.next_observations_at(rows))
    # The environments start new episodes after a resume: the newest row of each copy ends its episode.
    newest = (buffer.current_idx - 2 + np.arange(2)) % 40
    assert restored.dones[newest].all() and restored.episode_starts.all()
    # And the next transitions continue the rings exactly.
    fill(restored, 2, 30, seed=5)
    mirror_obs, _ = fill(restored, 2, 30, seed=6)
    np.testing.assert_array_equal(restored.observations_at(rows), mirror_obs)
    smaller = cls(20, space, spaces.Discrete(3), stack_size=STACK, n_envs=2, frame_slack=1.0)
    with pytest.raises(QiterError, match="same replay_buffer_size"):
        smaller.load_state_dict(buffer.state_dict())


def test_atari_memory_budget_and_refusal() -> None:
    """A million Atari transitions take at most 7.5 GB; a buffer larger than memory is refused in one line
    saying how many transitions fit, before anything is allocated."""
    nbytes = FrameReplayBuffer.bytes_needed(1_000_000, (4, 84, 84), 4)
    assert 7.0e9 < nbytes <= 7.5e9
    with pytest.raises(
        QiterError, match=r"needs 7\.4 GB but 2\.0 GB .* at most about 26\d{4} transitions fit"
    ):
        check_fits_memory(1_000_000, nbytes, available=2_000_000_000)
    check_fits_memory(1_000_000, nbytes, available=8_000_000_000)
    # The start-of-run line: one decimal from 1 GB, two significant digits below (MinAtar's 100k: 0.044).
    assert gigabytes(nbytes) == "7.4 GB"
    assert gigabytes(FrameReplayBuffer.bytes_needed(100_000, (4, 10, 10), 1)) == "0.044 GB"
    assert gigabytes(443_400) == "0.00044 GB"
