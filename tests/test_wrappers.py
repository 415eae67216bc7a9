"""Action scaling and the discretizing wrapper (qiter.wrappers)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from qiter.errors import QiterError
from qiter.wrappers import ActionScaler, DiscretizeActions, require_bounded_box


class _BoxEnv(gym.Env):
    """Records the last action it was given."""

    def __init__(self, low: list[float], high: list[float]) -> None:
        self.action_space = spaces.Box(np.array(low, np.float32), np.array(high, np.float32))
        self.observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.last_action: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[no-untyped-def]
        return np.zeros(1, np.float32), {}

    def step(self, action):  # type: ignore[no-untyped-def]
        self.last_action = np.asarray(action)
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_action_scaling_round_trips_and_hits_the_bounds() -> None:
    space = spaces.Box(np.array([-2.0, 0.0, 10.0], np.float32), np.array([2.0, 1.0, 30.0], np.float32))
    scaler = ActionScaler(space)
    unit = np.random.default_rng(0).uniform(-1, 1, (100, 3))
    env_actions = scaler.to_env(unit)
    assert env_actions.dtype == np.float32
    assert np.all(env_actions >= space.low) and np.all(env_actions <= space.high)
    np.testing.assert_allclose(scaler.to_network(env_actions), unit, atol=1e-6)
    np.testing.assert_allclose(scaler.to_env(np.array([-1.0, 0.0, 1.0]) * np.ones((1, 3))), [[-2, 0.5, 30]])
    # Noise past the range is clipped to the bounds, never beyond.
    np.testing.assert_allclose(scaler.to_env(np.array([[5.0, -5.0, 1.5]])), [[2.0, 0.0, 30.0]])


def test_product_bins_map_to_the_right_actions() -> None:
    env = DiscretizeActions(_BoxEnv([-2.0, 0.0], [2.0, 1.0]), n_bins=3)
    assert env.mode == "product" and env.action_space == spaces.Discrete(9)
    env.step(0)
    np.testing.assert_allclose(env.unwrapped.last_action, [-2.0, 0.0])
    env.step(5)  # (bin 1 of dim 0, bin 2 of dim 1)
    np.testing.assert_allclose(env.unwrapped.last_action, [0.0, 1.0])
    env.step(8)
    np.testing.assert_allclose(env.unwrapped.last_action, [2.0, 1.0])
    assert {tuple(row) for row in env.table} == {(a, b) for a in (-2.0, 0.0, 2.0) for b in (0.0, 0.5, 1.0)}


def test_per_dimension_bins_move_one_dimension_at_a_time() -> None:
    env = DiscretizeActions(_BoxEnv([-1.0] * 4, [1.0] * 4), n_bins=5)  # 5**4 = 625 > 256: per dimension
    assert env.mode == "per-dimension" and env.action_space == spaces.Discrete(20)
    env.step(7)  # dimension 1, bin 2 (the middle)
    np.testing.assert_allclose(env.unwrapped.last_action, [0, 0, 0, 0])
    env.step(9)  # dimension 1, last bin
    np.testing.assert_allclose(env.unwrapped.last_action, [0, 1, 0, 0])
    env.step(15)  # dimension 3, first bin
    np.testing.assert_allclose(env.unwrapped.last_action, [0, 0, 0, -1])


def test_pendulum_discretized_keeps_its_bounds() -> None:
    env = DiscretizeActions(gym.make("Pendulum-v1"), n_bins=5)
    np.testing.assert_allclose(env.table[:, 0], [-2.0, -1.0, 0.0, 1.0, 2.0])
    env.reset(seed=0)
    env.step(4)
    env.close()


def test_bad_discretizations_are_refused_with_one_line() -> None:
    with pytest.raises(QiterError, match="at least 2 bins"):
        DiscretizeActions(_BoxEnv([-1.0], [1.0]), n_bins=1)
    with pytest.raises(QiterError, match="needs a Box action space"):
        DiscretizeActions(gym.make("CartPole-v1"), n_bins=3)
    with pytest.raises(QiterError, match="bounded"):
        DiscretizeActions(_BoxEnv([-np.inf], [1.0]), n_bins=3)
    with pytest.raises(QiterError, match="bounded Box action space") as info:
        require_bounded_box(spaces.Box(-np.inf, np.inf, (2,)), "TD3")
    assert "\n" not in str(info.value)
