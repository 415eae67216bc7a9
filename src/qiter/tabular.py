"""Tabular Q-learning (Watkins, 1989) and value iteration, for environments with a table of states.

Q-learning learns ``Q(s, a)`` from samples with the update
``Q(s, a) += lr * (r + gamma * max_a' Q(s', a') - Q(s, a))`` under an epsilon-greedy behaviour policy;
value iteration computes ``Q*`` from the known model ``env.unwrapped.P`` and is the reference that
Q-learning's greedy policy is checked against.

Both are optimal for the *discounted* return with no time limit, while an episode of the environment is
scored by its *undiscounted* return within the time limit (FrozenLake-v1: success within 100 steps). The
two objectives can rank policies differently, so :func:`policy_evaluation` computes either one exactly from
the model, and :func:`episode_returns` estimates the second with common random numbers: episode ``i`` is
reset with seed ``seed + i`` whatever the policy, so two policies are compared on the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from qiter.envs import env_name, require_discrete_actions, require_discrete_observations
from qiter.errors import QiterError
from qiter.policies import epsilon_greedy, greedy_action_random_ties

__all__ = [
    "GridLayout",
    "TabularConfig",
    "episode_returns",
    "evaluate_q_table",
    "finite_horizon_values",
    "greedy_policy",
    "grid_layout",
    "linear_epsilon",
    "mean_and_stderr",
    "policy_arrows",
    "policy_evaluation",
    "q_learning",
    "start_distribution",
    "time_limit",
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


@dataclass
class TabularConfig:
    """The settings of ``qiter tabular``, one field per flag (so that an error names the flag).

    :param env_id: Gymnasium id of an environment with ``Discrete`` states.
    :param episodes: Q-learning training episodes.
    :param lr: Learning rate ``alpha``.
    :param gamma: Discount factor of Q-learning and value iteration.
    :param epsilon: Exploration rate of epsilon-greedy.
    :param seed: Seeds training and the evaluation episodes (``seed + i`` for episode ``i``).
    :param eval_episodes: Evaluation episodes of each greedy policy.
    :param slippery: FrozenLake/CliffWalking's ``is_slippery``; ``None`` keeps the env's default.
    """

    env_id: str
    episodes: int = 5_000
    lr: float = 0.1
    gamma: float = 0.99
    epsilon: float = 0.1
    seed: int | None = None
    # Success rates near 0.7 have a standard error of 0.014 over 1000 episodes, 0.045 over 100: enough
    # to separate FrozenLake's policies only with the former.
    eval_episodes: int = 1_000
    slippery: bool | None = None

    def validate(self) -> None:
        """Check the ranges the types cannot say.

        :raises QiterError: One line naming the first bad setting.
        """
        # qiter.config imports torch (through qiter.runs): import it here to keep qiter.tabular light
        from qiter.config import SEED_RANGE, checker, seed_ok

        need = checker(self)
        need(self.episodes >= 0, "episodes", "at least 0")
        need(0.0 < self.lr <= 1.0, "lr", "in (0, 1]")
        need(0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]")
        need(0.0 <= self.epsilon <= 1.0, "epsilon", "in [0, 1]")
        need(self.eval_episodes >= 1, "eval_episodes", "at least 1")
        need(seed_ok(self.seed), "seed", SEED_RANGE)


def time_limit(env: gym.Env) -> int | None:
    """The env's time limit (``max_episode_steps`` of its spec), or ``None`` (CliffWalking has none).

    :param env: The environment.
    """
    limit = env.spec.max_episode_steps if env.spec is not None else None
    return int(limit) if limit else None


def _max_steps(env: gym.Env) -> int:
    return time_limit(env) or DEFAULT_MAX_STEPS


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

    def random_action() -> int:
        return int(rng.integers(n_actions))

    max_steps = _max_steps(env)
    state, _ = env.reset(seed=seed)
    for episode in tqdm(range(n_episodes), desc="Q-learning", disable=not progress, unit="ep"):
        if episode > 0:
            state, _ = env.reset()
        epsilon = schedule(episode)
        for _ in range(max_steps):
            # Break greedy ties at random: with a zero-initialised table, argmax would always pick action 0
            greedy = partial(greedy_action_random_ties, q_table[state], rng)
            action = epsilon_greedy(greedy, random_action, epsilon, rng.random)
            next_state, reward, terminated, truncated, _ = env.step(action)
            # A true termination has no future; a time-limit truncation still bootstraps
            target = float(reward) + (0.0 if terminated else gamma * q_table[next_state].max())
            q_table[state, action] += learning_rate * (target - q_table[state, action])
            state = next_state
            if terminated or truncated:
                break
    return q_table


def _transitions(env: gym.Env, algorithm: str) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
    model = getattr(env.unwrapped, "P", None)
    if not isinstance(model, dict):
        raise QiterError(
            f"{algorithm} needs the transition model env.unwrapped.P, which {env_name(env)} does not have"
        )
    return model


@dataclass(frozen=True)
class _Model:
    """``P[s][a]`` as flat arrays, one row per ``(s, a, s')`` outcome, so that a backup is one ``bincount``."""

    n_states: int
    n_actions: int
    flat: np.ndarray  # s * n_actions + a
    prob: np.ndarray
    next_state: np.ndarray
    continues: np.ndarray  # not terminated: only these outcomes have a future
    expected_reward: np.ndarray  # (n_states * n_actions,)

    def backup(self, values: np.ndarray, gamma: float) -> np.ndarray:
        """``Q(s, a) = E[r + gamma * V(s') * (not terminated)]``, shape ``(n_states, n_actions)``."""
        future = np.bincount(
            self.flat,
            weights=self.prob * values[self.next_state] * self.continues,
            minlength=self.n_states * self.n_actions,
        )
        return (self.expected_reward + gamma * future).reshape(self.n_states, self.n_actions)


def _model(env: gym.Env, algorithm: str) -> _Model:
    n_states = require_discrete_observations(env, algorithm)
    n_actions = require_discrete_actions(env, algorithm)
    model = _transitions(env, algorithm)
    rows: list[tuple[int, int, float, int, float, bool]] = [
        (s, a, p, int(s2), float(r), bool(done))
        for s in range(n_states)
        for a in range(n_actions)
        for p, s2, r, done in model[s][a]
    ]
    s_idx, a_idx, prob, next_s, reward, done = (np.array(column) for column in zip(*rows))
    flat = s_idx * n_actions + a_idx
    expected_reward = np.bincount(flat, weights=prob * reward, minlength=n_states * n_actions)
    return _Model(n_states, n_actions, flat, prob, next_s, ~done, expected_reward)


def value_iteration(
    env: gym.Env, gamma: float = 0.99, tol: float = 1e-10, max_iterations: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal values by value iteration on the known model ``env.unwrapped.P``.

    They are optimal for the discounted return with no time limit (the model has none); see
    :func:`finite_horizon_values` for the best undiscounted return within the env's time limit.

    :param env: A toy-text environment (FrozenLake, Taxi, CliffWalking) exposing ``P[s][a] =
        [(probability, next_state, reward, terminated), ...]``.
    :param gamma: Discount factor.
    :param tol: Stop when no value changes by more than this.
    :param max_iterations: Safety cap on the sweeps.
    :return: ``V`` of shape ``(n_states,)`` and ``Q`` of shape ``(n_states, n_actions)``.
    """
    model = _model(env, "value iteration")
    values = np.zeros(model.n_states)
    q_table = model.expected_reward.reshape(model.n_states, model.n_actions)
    for _ in range(max_iterations):
        q_table = model.backup(values, gamma)
        new_values = q_table.max(axis=1)
        delta = float(np.max(np.abs(new_values - values)))
        values = new_values
        if delta <= tol:
            break
    return values, q_table


def policy_evaluation(
    env: gym.Env,
    policy: np.ndarray,
    gamma: float = 1.0,
    horizon: int | None = None,
    tol: float = 1e-10,
    max_iterations: int = 100_000,
) -> np.ndarray:
    """The exact value ``V^pi`` of a deterministic policy, from the known model ``env.unwrapped.P``.

    With a ``horizon`` it is the expected return of the first ``horizon`` steps: with ``gamma=1`` and the
    env's :func:`time_limit`, what the mean return of evaluation episodes estimates (FrozenLake: the
    success probability within 100 steps). Without, the discounted return with no time limit, the objective
    of :func:`value_iteration` and :func:`q_learning`.

    :param env: A toy-text environment with ``env.unwrapped.P``.
    :param policy: One action per state, ``(n_states,)`` (e.g. :func:`greedy_policy`).
    :param gamma: Discount factor.
    :param horizon: Number of steps, or ``None`` for no limit (iterate until the values change by ``tol``).
    :param tol: Convergence threshold without a horizon.
    :param max_iterations: Safety cap on the sweeps without a horizon (``gamma=1`` may not converge).
    :return: ``V^pi`` of shape ``(n_states,)``.
    """
    model = _model(env, "policy evaluation")
    policy = np.asarray(policy)
    if policy.shape != (model.n_states,):
        raise QiterError(f"policy has shape {policy.shape}, expected {(model.n_states,)}")
    if horizon is not None and horizon < 0:
        raise QiterError(f"horizon must be >= 0, not {horizon}")
    states = np.arange(model.n_states)
    values = np.zeros(model.n_states)
    for _ in range(max_iterations if horizon is None else horizon):
        new_values = model.backup(values, gamma)[states, policy]
        delta = float(np.max(np.abs(new_values - values)))
        values = new_values
        if horizon is None and delta <= tol:
            break
    return values


def finite_horizon_values(env: gym.Env, horizon: int, gamma: float = 1.0) -> np.ndarray:
    """The best expected return of the first ``horizon`` steps, by backward induction on the model.

    It bounds every policy, but reaching it may take one that depends on the steps left, which a
    stationary policy (such as value iteration's greedy one) does not.

    :param env: A toy-text environment with ``env.unwrapped.P``.
    :param horizon: Number of steps (the env's :func:`time_limit`).
    :param gamma: Discount factor.
    :return: ``V*_horizon`` of shape ``(n_states,)``.
    """
    model = _model(env, "finite-horizon value iteration")
    values = np.zeros(model.n_states)
    for _ in range(horizon):
        values = model.backup(values, gamma).max(axis=1)
    return values


def start_distribution(env: gym.Env) -> np.ndarray:
    """The distribution of the first state (``initial_state_distrib`` of the toy-text envs).

    :param env: The environment.
    """
    distribution = getattr(env.unwrapped, "initial_state_distrib", None)
    if distribution is None:
        raise QiterError(f"{env_name(env)} does not expose its start distribution (initial_state_distrib)")
    return np.asarray(distribution, dtype=float)


def greedy_policy(q_table: np.ndarray) -> np.ndarray:
    """The greedy action of each state, ``argmax_a Q(s, a)`` (first action on ties)."""
    return np.asarray(np.argmax(q_table, axis=1))


def episode_returns(
    env: gym.Env, q_table: np.ndarray, n_episodes: int = 100, seed: int | None = None
) -> np.ndarray:
    """The undiscounted return of each episode of the greedy policy of a Q-table.

    With a ``seed``, episode ``i`` is reset with ``seed + i``: every policy meets the same random numbers
    in the same episode (common random numbers), so the per-episode difference of two policies has a much
    smaller variance than two independent runs, and that difference's mean tells them apart.

    :param env: The environment the table was learned on.
    :param q_table: ``(n_states, n_actions)``.
    :param n_episodes: Number of episodes.
    :param seed: Seed of the first episode; ``None`` leaves the episodes unseeded.
    :return: ``(n_episodes,)`` returns.
    """
    n_states = require_discrete_observations(env, "tabular evaluation")
    n_actions = require_discrete_actions(env, "tabular evaluation")
    if q_table.shape != (n_states, n_actions):
        raise QiterError(f"q_table has shape {q_table.shape}, but the env needs {(n_states, n_actions)}")
    policy = greedy_policy(q_table)
    max_steps = _max_steps(env)
    returns = np.zeros(n_episodes)
    for episode in range(n_episodes):
        state, _ = env.reset(seed=None if seed is None else seed + episode)
        for _ in range(max_steps):
            state, reward, terminated, truncated, _ = env.step(int(policy[state]))
            returns[episode] += float(reward)
            if terminated or truncated:
                break
    return returns


def evaluate_q_table(
    env: gym.Env, q_table: np.ndarray, n_episodes: int = 100, seed: int | None = None
) -> tuple[float, float]:
    """Mean and standard deviation of the returns of the greedy policy of a Q-table.

    The standard deviation describes single episodes; the uncertainty of the mean is
    :func:`mean_and_stderr`'s standard error.

    :param env: The environment the table was learned on.
    :param q_table: ``(n_states, n_actions)``.
    :param n_episodes: Number of episodes.
    :param seed: Episode ``i`` is reset with ``seed + i`` (see :func:`episode_returns`).
    """
    returns = episode_returns(env, q_table, n_episodes, seed)
    return float(np.mean(returns)), float(np.std(returns))


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """The mean of independent samples and its standard error ``std / sqrt(n)`` (``nan`` below 2 samples).

    ``mean +/- 1.96 * stderr`` is a 95% interval (normal approximation, fine for hundreds of episodes).

    :param values: ``(n,)`` samples, e.g. :func:`episode_returns` or a per-episode difference of two.
    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values.mean()) if len(values) else float("nan")), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


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
