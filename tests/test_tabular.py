"""qiter.tabular: Q-learning against value iteration on FrozenLake, CliffWalking and Taxi."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from qiter.envs import make_env
from qiter.errors import QiterError
from qiter.tabular import (
    evaluate_q_table,
    greedy_policy,
    grid_layout,
    linear_epsilon,
    policy_arrows,
    q_learning,
    value_iteration,
)


def optimal_path_check(env: gym.Env, q_table: np.ndarray, optimal_q: np.ndarray) -> int:
    """Follow Q-learning's greedy policy from the start state of a deterministic env.

    At every state it visits, its action must be one of value iteration's optimal actions there (several
    can tie: FrozenLake has many shortest paths). Only these states are a fair comparison: elsewhere
    Q-learning's exploration may not have pinned down the values. Returns the number of steps.
    """
    policy = greedy_policy(q_table)
    state, _ = env.reset(seed=0)
    for step in range(1, 200):
        best = optimal_q[state].max()
        optimal_actions = np.flatnonzero(np.isclose(optimal_q[state], best, rtol=0, atol=1e-9))
        assert policy[state] in optimal_actions, f"state {state}: {policy[state]} not in {optimal_actions}"
        state, _, terminated, truncated, _ = env.step(int(policy[state]))
        if terminated or truncated:
            return step
    raise AssertionError("the greedy policy did not end an episode")


def test_frozen_lake_matches_value_iteration() -> None:
    env = make_env("FrozenLake-v1", is_slippery=False)
    q_table = q_learning(env, n_episodes=500, learning_rate=0.5, gamma=0.99, exploration_rate=0.2, seed=0)
    _, optimal_q = value_iteration(env, gamma=0.99)
    assert optimal_path_check(env, q_table, optimal_q) == 6  # the shortest path to the goal
    assert evaluate_q_table(env, q_table, n_episodes=5, seed=0) == (1.0, 0.0)


def test_cliff_walking_matches_value_iteration() -> None:
    env = make_env("CliffWalking-v1")
    q_table = q_learning(env, n_episodes=500, learning_rate=0.5, gamma=0.99, exploration_rate=0.1, seed=0)
    _, optimal_q = value_iteration(env, gamma=0.99)
    assert optimal_path_check(env, q_table, optimal_q) == 13  # along the cliff edge
    assert evaluate_q_table(env, q_table, n_episodes=3, seed=0) == (-13.0, 0.0)


def test_taxi_learns() -> None:
    env = make_env("Taxi-v4")
    q_table = q_learning(env, n_episodes=3_000, learning_rate=0.5, gamma=0.99, exploration_rate=0.1, seed=0)
    mean, _ = evaluate_q_table(env, q_table, n_episodes=100, seed=0)
    assert mean >= 7.0, mean
    _, optimal_q = value_iteration(env, gamma=0.99)
    assert evaluate_q_table(env, optimal_q, n_episodes=100, seed=0)[0] >= 7.0


def test_value_iteration_frozen_lake_values() -> None:
    env = make_env("FrozenLake-v1", is_slippery=False)
    values, q_table = value_iteration(env, gamma=0.9)
    assert values[14] == pytest.approx(1.0)  # next to the goal
    assert values[0] == pytest.approx(0.9**5)  # 6 steps away
    assert q_table.shape == (16, 4)
    assert values[5] == 0.0  # a hole: terminal, no future


def test_q_learning_is_reproducible_and_uses_schedules() -> None:
    env = make_env("FrozenLake-v1", is_slippery=False)
    schedule = linear_epsilon(100, start=1.0, end=0.1, fraction=0.5)
    assert schedule(0) == 1.0 and schedule(50) == pytest.approx(0.1) and schedule(99) == pytest.approx(0.1)
    first = q_learning(env, n_episodes=100, exploration_rate=schedule, seed=3)
    second = q_learning(env, n_episodes=100, exploration_rate=schedule, seed=3)
    np.testing.assert_array_equal(first, second)


def test_policy_arrows() -> None:
    frozen = make_env("FrozenLake-v1", is_slippery=False)
    _, q_table = value_iteration(frozen)
    layout = grid_layout(frozen)
    assert layout is not None
    drawing = policy_arrows(q_table, layout.shape, layout.arrows, layout.special)
    lines = drawing.splitlines()
    assert len(lines) == 4 and lines[3].endswith("G") and lines[1].split()[1] == "H"
    assert lines[3].split()[2] == "→"  # state 14: right, into the goal

    cliff = make_env("CliffWalking-v1")
    _, q_table = value_iteration(cliff)
    layout = grid_layout(cliff)
    assert layout is not None and layout.shape == (4, 12)
    lines = policy_arrows(q_table, layout.shape, layout.arrows, layout.special).splitlines()
    assert lines[3].split()[0] == "↑" and lines[3].split()[1] == "C"  # up from the start, then the cliff
    assert lines[2].split()[-1] == "↓"  # down into the goal

    assert grid_layout(make_env("Taxi-v4")) is None
    with pytest.raises(QiterError, match="4x4 grid"):
        policy_arrows(np.zeros((10, 4)), (4, 4))


def test_rejects_continuous_spaces() -> None:
    with pytest.raises(QiterError, match="Discrete observation"):
        q_learning(make_env("CartPole-v1"), n_episodes=1)
    with pytest.raises(QiterError, match="Discrete observation"):
        value_iteration(make_env("MountainCar-v0"))
    with pytest.raises(QiterError, match="learning_rate"):
        q_learning(make_env("FrozenLake-v1"), n_episodes=1, learning_rate=0.0)
