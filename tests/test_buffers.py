"""The replay buffer: the seed's asserts, and n-step returns on hand-built episodes with known rewards."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from qiter.buffers.replay import ReplayBuffer
from qiter.errors import QiterError

OBS_SPACE = spaces.Box(low=-np.inf, high=np.inf, shape=(1,), dtype=np.float32)
ACTION_SPACE = spaces.Discrete(2)
GAMMA = 0.5


def test_seed_replay_buffer_before_and_at_capacity() -> None:
    """The seed's "testing the replay buffer" cells."""
    env = gym.make("CartPole-v1")
    buffer_size = 1000
    buffer = ReplayBuffer(buffer_size, env.observation_space, env.action_space)  # type: ignore[arg-type]
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)

    def collect(n: int) -> None:
        nonlocal obs
        for _ in range(n):
            action = int(env.action_space.sample())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.store_transition(obs, next_obs, action, float(reward), terminated)
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()

    collect(500)
    assert not buffer.is_full
    assert buffer.current_idx == 500
    samples = buffer.sample(batch_size=10)
    assert len(samples.observations) == 10
    assert samples.actions.shape == (10, 1)

    collect(1000)
    assert buffer.is_full
    # We did a full loop
    assert buffer.current_idx == 500
    # Sampling with replacement: more transitions than the capacity of the ring buffer
    samples = buffer.sample(batch_size=1001)
    assert len(samples.observations) == 1001
    assert samples.actions.shape == (1001, 1)
    assert samples.observations.shape == (1001, 4)
    assert samples.rewards.shape == (1001,)


def test_one_step_samples_are_the_stored_transitions() -> None:
    buffer = ReplayBuffer(4, OBS_SPACE, ACTION_SPACE)
    buffer.store_transition(np.array([0.0]), np.array([1.0]), 1, 5.0, False)
    buffer.store_transition(np.array([1.0]), np.array([2.0]), 0, 7.0, True)
    samples = buffer.get_samples(np.array([1, 0]))
    np.testing.assert_array_equal(samples.observations[:, 0], [1.0, 0.0])
    np.testing.assert_array_equal(samples.next_observations[:, 0], [2.0, 1.0])
    np.testing.assert_array_equal(samples.actions[:, 0], [0, 1])
    np.testing.assert_array_equal(samples.rewards, [7.0, 5.0])
    np.testing.assert_array_equal(samples.terminateds, [True, False])
    # 1-step samples carry no discounts: the learner uses gamma.
    assert samples.discounts is None


def store_episode(
    buffer: ReplayBuffer,
    start: int,
    rewards: list[float],
    end: str = "none",
    actions: list[int] | None = None,
) -> None:
    """Store an episode whose observation at step t is ``start + t`` (next obs ``start + t + 1``).

    :param end: ``"terminated"``, ``"truncated"`` or ``"none"`` (the episode goes on) for the last step.
    """
    for t, reward in enumerate(rewards):
        last = t == len(rewards) - 1
        action = actions[t] if actions is not None else 0
        obs, next_obs = np.array([start + t]), np.array([start + t + 1])
        buffer.store_transition(
            obs, next_obs, action, reward, last and end == "terminated", last and end == "truncated"
        )


@pytest.fixture
def three_episodes() -> ReplayBuffer:
    """Episode A (idx 0-3) terminates, B (idx 4-6) is truncated, C (idx 7-8) is still running."""
    buffer = ReplayBuffer(10, OBS_SPACE, ACTION_SPACE, n_steps=3, gamma=GAMMA)
    store_episode(buffer, 0, [1.0, 2.0, 3.0, 4.0], "terminated")
    store_episode(buffer, 10, [10.0, 20.0, 30.0], "truncated")
    store_episode(buffer, 20, [5.0, 6.0], "none")
    return buffer


def test_n_step_full_trace(three_episodes: ReplayBuffer) -> None:
    s = three_episodes.get_samples(np.array([0, 1, 4]))
    # r_0 + gamma r_1 + gamma^2 r_2, bootstrapped from s_3 with gamma^3.
    np.testing.assert_allclose(
        s.rewards, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3 + 0.25 * 4, 10 + 0.5 * 20 + 0.25 * 30]
    )
    assert s.discounts is not None
    np.testing.assert_allclose(s.discounts, [0.125, 0.125, 0.125])
    np.testing.assert_array_equal(s.next_observations[:, 0], [3, 4, 13])
    # The first observation and action are the sampled transition's.
    np.testing.assert_array_equal(s.observations[:, 0], [0, 1, 10])
    # Idx 1's third step is the terminal one: all three rewards, and no bootstrap.
    np.testing.assert_array_equal(s.terminateds, [False, True, False])


def test_n_step_cut_at_termination(three_episodes: ReplayBuffer) -> None:
    s = three_episodes.get_samples(np.array([2, 3]))
    # Idx 2: r_2 + gamma r_3, then the episode terminates: nothing from episode B, and no bootstrap.
    np.testing.assert_allclose(s.rewards, [3 + 0.5 * 4, 4])
    np.testing.assert_array_equal(s.terminateds, [True, True])
    np.testing.assert_array_equal(s.next_observations[:, 0], [4, 4])


def test_n_step_cut_at_truncation_bootstraps(three_episodes: ReplayBuffer) -> None:
    s = three_episodes.get_samples(np.array([5, 6]))
    # Idx 5: r + gamma r' then a time limit: bootstrap from the truncation's next obs (13) with gamma^2.
    np.testing.assert_allclose(s.rewards, [20 + 0.5 * 30, 30])
    assert s.discounts is not None
    np.testing.assert_allclose(s.discounts, [0.25, 0.5])
    np.testing.assert_array_equal(s.terminateds, [False, False])
    np.testing.assert_array_equal(s.next_observations[:, 0], [13, 13])


def test_n_step_stops_at_newest_transition(three_episodes: ReplayBuffer) -> None:
    s = three_episodes.get_samples(np.array([7, 8]))
    # Only what has been stored so far counts: the empty slot 9 is not part of the trace.
    np.testing.assert_allclose(s.rewards, [5 + 0.5 * 6, 6])
    assert s.discounts is not None
    np.testing.assert_allclose(s.discounts, [0.25, 0.5])
    np.testing.assert_array_equal(s.next_observations[:, 0], [22, 22])


def test_n_step_does_not_cross_write_pointer() -> None:
    # Ring of 5, one long episode of 7 steps with reward t: slots hold t = [5, 6, 2, 3, 4], newest is slot 1.
    buffer = ReplayBuffer(5, OBS_SPACE, ACTION_SPACE, n_steps=3, gamma=GAMMA)
    store_episode(buffer, 0, [float(t) for t in range(7)])
    assert buffer.current_idx == 2 and buffer.is_full
    s = buffer.get_samples(np.array([4, 0, 1, 3]))
    expected = [
        4 + 0.5 * 5 + 0.25 * 6,  # slot 4 -> 0 -> 1 wraps around the end of the ring: fine.
        5 + 0.5 * 6,  # slot 0 -> 1 -> 2: slot 2 holds the older t = 2, past the write pointer: cut.
        6,  # the newest transition alone.
        3 + 0.5 * 4 + 0.25 * 5,
    ]
    np.testing.assert_allclose(s.rewards, expected)
    assert s.discounts is not None
    np.testing.assert_allclose(s.discounts, [0.125, 0.25, 0.5, 0.125])
    np.testing.assert_array_equal(s.next_observations[:, 0], [7, 7, 7, 6])


def test_n_step_greedy_trace_cut() -> None:
    buffer = ReplayBuffer(10, OBS_SPACE, ACTION_SPACE, n_steps=3, gamma=GAMMA)
    store_episode(buffer, 0, [1.0, 2.0, 3.0, 4.0, 5.0], "none", actions=[1, 1, 0, 0, 0])
    seen: list[np.ndarray] = []

    def greedy(observations: np.ndarray) -> np.ndarray:
        """A fake greedy policy: action 1 only in state 4."""
        seen.append(observations.copy())
        return (observations[:, 0] == 4).astype(np.int64)

    s = buffer.get_samples(np.array([0, 1, 2]), greedy_policy=greedy)
    # Idx 0: the action at step 1 (state 1) was 1 but greedy is 0: cut after r_0, bootstrap from state 1.
    # Idx 1: the first action needs no correction; state 2 -> action 0 agrees, state 3 agrees: full trace.
    # Idx 2: state 3 agrees, state 4 was 0 but greedy is 1: cut after 2 steps.
    np.testing.assert_allclose(s.rewards, [1, 2 + 0.5 * 3 + 0.25 * 4, 3 + 0.5 * 4])
    assert s.discounts is not None
    np.testing.assert_allclose(s.discounts, [0.5, 0.125, 0.25])
    np.testing.assert_array_equal(s.next_observations[:, 0], [1, 4, 4])
    # The policy is asked about the later states of the traces, not the sampled ones.
    np.testing.assert_array_equal(np.sort(seen[0][:, 0]), [1, 2, 2, 3, 3, 4])
    # Without a policy the same traces are not cut.
    uncut = buffer.get_samples(np.array([0]))
    np.testing.assert_allclose(uncut.rewards, [1 + 0.5 * 2 + 0.25 * 3])


def test_n_step_sample_uses_seeded_rng() -> None:
    def sampled(seed: int) -> np.ndarray:
        buffer = ReplayBuffer(10, OBS_SPACE, ACTION_SPACE, n_steps=2, rng=np.random.default_rng(seed))
        store_episode(buffer, 0, [1.0] * 8)
        return buffer.sample(16).observations[:, 0]

    np.testing.assert_array_equal(sampled(3), sampled(3))
    assert set(sampled(3).tolist()) <= set(range(8))


def test_env_axis_keeps_each_copy_s_n_step_trace_apart() -> None:
    """Two copies write interleaved rows; an n-step return follows its own copy, never the other one."""
    from gymnasium import spaces as gym_spaces

    obs_space = gym_spaces.Box(-1, 1, (1,), np.float32)
    buffer = ReplayBuffer(8, obs_space, gym_spaces.Discrete(2), n_steps=3, gamma=0.5, n_envs=2)
    for t in range(3):
        # copy 0 gets rewards 1, 2, 3; copy 1 gets 10, 20, 30 and ends its episode at t = 1.
        buffer.add(
            np.array([[t], [t]], np.float32), np.array([[t + 1], [t + 1]], np.float32), np.array([0, 1]),
            np.array([t + 1.0, 10.0 * (t + 1)]), np.array([False, t == 1]), np.array([False, False]),
        )  # fmt: skip
    samples = buffer.get_samples(np.array([0, 1]))
    np.testing.assert_allclose(samples.rewards, [1 + 0.5 * 2 + 0.25 * 3, 10 + 0.5 * 20])
    np.testing.assert_array_equal(samples.terminateds, [False, True])
    np.testing.assert_array_equal(samples.actions[:, 0], [0, 1])


def test_box_actions_and_state_round_trip() -> None:
    from gymnasium import spaces as gym_spaces

    action_space = gym_spaces.Box(-2, 2, (3,), np.float32)
    buffer = ReplayBuffer(6, gym_spaces.Box(-1, 1, (2,), np.float32), action_space, n_envs=2)
    assert buffer.actions.shape == (6, 3) and buffer.actions.dtype == np.float32
    actions = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -2.0]], np.float32)
    buffer.add(np.zeros((2, 2)), np.ones((2, 2)), actions, np.ones(2), np.zeros(2, bool), np.zeros(2, bool))
    other = ReplayBuffer(6, gym_spaces.Box(-1, 1, (2,), np.float32), action_space, n_envs=2)
    other.load_state_dict(buffer.state_dict())
    np.testing.assert_array_equal(other.actions[:2], actions)
    assert other.current_idx == 2 and len(other) == 2
    with pytest.raises(QiterError, match="same replay_buffer_size"):
        ReplayBuffer(10, gym_spaces.Box(-1, 1, (2,), np.float32), action_space).load_state_dict(
            buffer.state_dict()
        )
