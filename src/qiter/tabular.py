"""Tabular Q-learning (Watkins, 1989) and value iteration, for environments with a table of states.

Q-learning learns ``Q(s, a)`` from samples with the update
``Q(s, a) += lr * (r + gamma * max_a' Q(s', a') - Q(s, a))`` under an epsilon-greedy behaviour policy;
value iteration computes ``Q*`` from the known model ``env.unwrapped.P`` and is the reference that
Q-learning's greedy policy is checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from qiter.envs import env_name, require_discrete_actions, require_discrete_observations
from qiter.errors import QiterError

__all__ = [
    "GridLayout",
    "evaluate_q_table",
    "greedy_policy",
    "grid_layout",
    "linear_epsilon",
    "policy_arrows",
    "q_learning",
    "value_iteration",
]

Schedule = Callable[[int], float]

# Episodes without a time limit (CliffWalking has none) are cut here, so a bad greedy policy cannot loop forever.
DEFAULT_MAX_STEPS = 10_000


def linear_epsilon(n_episodes: int, start: float = 1.0, end: float = 0.05, fraction: float = 0.5) -> Schedule:
    """Exploration rate decaying linearly from ``start`` to ``end`` over the first ``fraction`` of episodes.

    :param n_episodes: Total number of episodes.
    :param start: Rate at episode 0.
    :param end: Rate from episode ``fraction * n_episodes`` on.
    :param fraction: Share of the episodes spent decaying.
    :return: A function from the episode index to the exploration rate.
    """
    decay_episodes = max(1, int(fraction * n_episodes))

    def schedule(episode: int) -> float:
        return start + (end - start) * min(1.0, episode / decay_episodes)

    return schedule


def _max_steps(env: gym.Env) -> int:
    limit = env.spec.max_episode_steps if env.spec is not None else None
    return int(limit) if limit else DEFAULT_MAX_STEPS


def q_learning(
    env: gym.Env,
    n_episodes: int = 5_000,
    learning_rate: float = 0.1,
    gamma: float = 0.99,
    exploration_rate: float | Schedule = 0.1,
    seed: int | None = None,
    progress: bool = False,
    q_table: np.ndarray | None = None,
) -> np.ndarray:
    """Learn a Q-table with epsilon-greedy tabular Q-learning.

    :param env: An environment with ``Discrete`` observation and action spaces (FrozenLake, Taxi,
        CliffWalking...).
    :param n_episodes: Number of training episodes.
    :param learning_rate: Step size ``alpha`` of the update.
    :param gamma: Discount factor.
    :param exploration_rate: Probability of a random action: a constant, or a function of the episode
        index (see :func:`linear_epsilon`).
    :param seed: Seeds the environment and the exploration, for reproducible tables.
    :param progress: Show a progress bar over the episodes.
    :param q_table: Start from this table (updated in place) instead of zeros.
    :return: The Q-table, ``(n_states, n_actions)``.
    """
    n_states = require_discrete_observations(env, "tabular Q-learning")
    n_actions = require_discrete_actions(env, "tabular Q-learning")
    if not 0.0 < learning_rate <= 1.0:
        raise QiterError(f"learning_rate must be in (0, 1], not {learning_rate}")
    if not 0.0 <= gamma <= 1.0:
        raise QiterError(f"gamma must be in [0, 1], not {gamma}")
    if n_episodes < 0:
        raise QiterError(f"n_episodes must be >= 0, not {n_episodes}")
    schedule: Schedule = (
        exploration_rate if callable(exploration_rate) else (lambda _: float(exploration_rate))
    )
    if q_table is None:
        q_table = np.zeros((n_states, n_actions))
    elif q_table.shape != (n_states, n_actions):
        raise QiterError(f"q_table has shape {q_table.shape}, expected {(n_states, n_actions)}")
    rng = np.random.default_rng(seed)
    max_steps = _max_steps(env)
    state, _ = env.reset(seed=seed)
    for episode in tqdm(range(n_episodes), desc="Q-learning", disable=not progress, unit="ep"):
        if episode > 0:
            state, _ = env.reset()
        epsilon = schedule(episode)
        for _ in range(max_steps):
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                # Break ties at random: with a zero-initialised table, argmax would always pick action 0
                row = q_table[state]
                action = int(rng.choice(np.flatnonzero(row == row.max())))
            next_state, reward, terminated, truncated, _ = env.step(action)
            # A true termination has no future; a time-limit truncation still bootstraps
            target = float(reward) + (0.0 if terminated else gamma * q_table[next_state].max())
            q_table[state, action] += learning_rate * (target - q_table[state, action])
            state = next_state
            if terminated or truncated:
                break
    return q_table


def _transitions(env: gym.Env) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
    model = getattr(env.unwrapped, "P", None)
    if not isinstance(model, dict):
        raise QiterError(
            f"value iteration needs the transition model env.unwrapped.P, which {env_name(env)} does not have"
        )
    return model


def value_iteration(
    env: gym.Env, gamma: float = 0.99, tol: float = 1e-10, max_iterations: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values by value iteration on the known model ``env.unwrapped.P``.

    :param env: A toy-text environment (FrozenLake, Taxi, CliffWalking) exposing ``P[s][a] =
        [(probability, next_state, reward, terminated), ...]``.
    :param gamma: Discount factor.
    :param tol: Stop when no value changes by more than this.
    :param max_iterations: Safety cap on the sweeps.
    :return: ``V`` of shape ``(n_states,)`` and ``Q`` of shape ``(n_states, n_actions)``.
    """
    n_states = require_discrete_observations(env, "value iteration")
    n_actions = require_discrete_actions(env, "value iteration")
    model = _transitions(env)
    # The model as arrays, so that each sweep is a few vectorised operations
    rows: list[tuple[int, int, float, int, float, bool]] = [
        (s, a, p, int(s2), float(r), bool(done))
        for s in range(n_states)
        for a in range(n_actions)
        for p, s2, r, done in model[s][a]
    ]
    s_idx, a_idx, prob, next_s, reward, done = (np.array(column) for column in zip(*rows))
    flat = s_idx * n_actions + a_idx
    expected_reward = np.bincount(flat, weights=prob * reward, minlength=n_states * n_actions)
    values = np.zeros(n_states)
    q_table = expected_reward.reshape(n_states, n_actions)
    for _ in range(max_iterations):
        future = np.bincount(flat, weights=prob * values[next_s] * ~done, minlength=n_states * n_actions)
        q_table = (expected_reward + gamma * future).reshape(n_states, n_actions)
        new_values = q_table.max(axis=1)
        delta = float(np.max(np.abs(new_values - values)))
        values = new_values
        if delta <= tol:
            break
    return values, q_table


def greedy_policy(q_table: np.ndarray) -> np.ndarray:
    """The greedy action of each state, ``argmax_a Q(s, a)`` (first action on ties)."""
    return np.asarray(np.argmax(q_table, axis=1))


def evaluate_q_table(
    env: gym.Env, q_table: np.ndarray, n_episodes: int = 100, seed: int | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of the returns of the greedy policy of a Q-table.

    :param env: The environment the table was learned on.
    :param q_table: ``(n_states, n_actions)``.
    :param n_episodes: Number of episodes.
    :param seed: Seed of the first reset.
    """
    n_states = require_discrete_observations(env, "tabular evaluation")
    n_actions = require_discrete_actions(env, "tabular evaluation")
    if q_table.shape != (n_states, n_actions):
        raise QiterError(f"q_table has shape {q_table.shape}, but the env needs {(n_states, n_actions)}")
    policy = greedy_policy(q_table)
    max_steps = _max_steps(env)
    returns = []
    for episode in range(n_episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        total = 0.0
        for _ in range(max_steps):
            state, reward, terminated, truncated, _ = env.step(int(policy[state]))
            total += float(reward)
            if terminated or truncated:
                break
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


@dataclass(frozen=True)
class GridLayout:
    """How to draw a grid environment's policy: its shape, arrows by action index, and special cells."""

    shape: tuple[int, int]
    arrows: str
    special: dict[int, str]


def grid_layout(env: gym.Env) -> GridLayout | None:
    """The layout of FrozenLake (any map) or CliffWalking, or ``None`` for other envs (Taxi has no grid).

    :param env: The environment.
    """
    unwrapped = env.unwrapped
    name = type(unwrapped).__name__
    if name == "FrozenLakeEnv":
        desc = np.asarray(unwrapped.desc).astype(str)  # type: ignore[attr-defined]
        special = {i: cell for i, cell in enumerate(desc.ravel()) if cell in ("H", "G")}
        return GridLayout(desc.shape, "←↓→↑", special)  # actions: left, down, right, up
    if name == "CliffWalkingEnv":
        rows, cols = unwrapped.shape  # type: ignore[attr-defined]
        special = {(rows - 1) * cols + c: "C" for c in range(1, cols - 1)}
        special[rows * cols - 1] = "G"
        return GridLayout((rows, cols), "↑→↓←", special)  # actions: up, right, down, left
    return None


def policy_arrows(
    q_table: np.ndarray,
    shape: tuple[int, int],
    arrows: str = "←↓→↑",
    special: dict[int, str] | None = None,
) -> str:
    """The greedy policy of a grid world as rows of arrows.

    :param q_table: ``(n_states, n_actions)`` with states numbered row by row.
    :param shape: ``(rows, columns)`` of the grid.
    :param arrows: One arrow per action index: FrozenLake's order (left, down, right, up) by default;
        CliffWalking's is ``"↑→↓←"`` (see :func:`grid_layout`).
    :param special: Cells drawn with a letter instead of an arrow (holes, cliff, goal).
    :return: One line per grid row.
    """
    rows, cols = shape
    if q_table.shape[0] != rows * cols:
        raise QiterError(
            f"a {rows}x{cols} grid has {rows * cols} states, but the Q-table has {q_table.shape[0]}"
        )
    if q_table.shape[1] > len(arrows):
        raise QiterError(f"{q_table.shape[1]} actions but only {len(arrows)} arrows")
    special = special or {}
    policy = greedy_policy(q_table)
    cells = [special.get(s, arrows[policy[s]]) for s in range(rows * cols)]
    return "\n".join(" ".join(cells[r * cols : (r + 1) * cols]) for r in range(rows))
