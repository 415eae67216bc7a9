"""``qiter tabular``: Q-learning on a table of states, compared with value iteration when the model is known."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from qiter.cli.config_args import add_env_kwargs_argument, env_kwargs
from qiter.config import config_from_dict
from qiter.errors import QiterError
from qiter.tabular import (
    DEFAULT_MAX_STEPS,
    TabularConfig,
    episode_returns,
    finite_horizon_values,
    greedy_policy,
    grid_layout,
    mean_and_stderr,
    policy_arrows,
    policy_evaluation,
    q_learning,
    start_distribution,
    time_limit,
    value_iteration,
)

# The settings' flags take strings and default to None: config_from_dict converts what the user gave with
# the types of TabularConfig and fills in its defaults, which the help shows from here.
_SETTINGS = ("episodes", "lr", "gamma", "epsilon", "seed", "eval_episodes", "slippery")


def register(subparsers: Any) -> None:
    """Add the tabular commands to the CLI."""
    p = subparsers.add_parser(
        "tabular",
        help="tabular Q-learning on an env with discrete states (FrozenLake, Taxi, CliffWalking)",
        description="Learn a Q-table with epsilon-greedy Q-learning and report its greedy policy's mean return "
        "with a 95% interval. When the env has a model (env.unwrapped.P), compare it with value iteration's "
        "policy on the same seeded episodes and by their exact values; for grid worlds, draw both as arrows.",
    )
    p.add_argument(
        "env_id", metavar="ENV_ID", help="gymnasium id, e.g. FrozenLake-v1, Taxi-v4, CliffWalking-v1"
    )
    p.add_argument("--episodes", metavar="N", help=f"training episodes (default: {TabularConfig.episodes})")
    p.add_argument("--lr", metavar="X", help=f"learning rate alpha (default: {TabularConfig.lr})")
    p.add_argument("--gamma", metavar="X", help=f"discount factor (default: {TabularConfig.gamma})")
    p.add_argument(
        "--epsilon",
        metavar="X",
        help=f"exploration rate of epsilon-greedy (default: {TabularConfig.epsilon})",
    )
    p.add_argument(
        "--seed",
        metavar="N",
        help="seed for reproducible runs; evaluation episode i is seeded with SEED + i (default: random)",
    )
    p.add_argument(
        "--eval-episodes",
        metavar="N",
        help="greedy evaluation episodes of each policy, seeded alike for both "
        f"(default: {TabularConfig.eval_episodes})",
    )
    p.add_argument(
        "--slippery",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make FrozenLake/CliffWalking slippery or not (default: the env's own default)",
    )
    add_env_kwargs_argument(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_tabular)


def _tabular(args: argparse.Namespace) -> int:
    from qiter.envs import make_env

    # Only the settings the user gave (the others are None): the config's defaults apply to the rest
    given = {key: getattr(args, key) for key in _SETTINGS if getattr(args, key) is not None}
    config = config_from_dict(TabularConfig, {"env_id": args.env_id, **given}, "the tabular settings")
    kwargs: dict[str, Any] = env_kwargs(args)
    if config.slippery is not None:
        kwargs["is_slippery"] = config.slippery
    # An option the env does not take (--slippery for Taxi) is one line from make_env.
    env = make_env(config.env_id, **kwargs)
    start = time.perf_counter()
    q_table = q_learning(
        env,
        n_episodes=config.episodes,
        learning_rate=config.lr,
        gamma=config.gamma,
        exploration_rate=config.epsilon,
        seed=config.seed,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    print(f"Q-learning on {config.env_id}: {config.episodes} episodes in {seconds:.1f} s")
    optimal = None
    if isinstance(getattr(env.unwrapped, "P", None), dict):
        _, optimal = value_iteration(env, gamma=config.gamma)
    _print_returns(env, config, {"Q-learning": q_table, "value iteration": optimal})
    if optimal is not None:
        _print_exact_values(env, config, q_table, optimal)

    layout = grid_layout(env)
    if layout is not None:
        print("\nQ-learning greedy policy:")
        print(policy_arrows(q_table, layout.shape, layout.arrows, layout.special))
        if optimal is not None:
            print("\nvalue iteration greedy policy:")
            print(policy_arrows(optimal, layout.shape, layout.arrows, layout.special))
    env.close()
    return 0


def _interval(mean: float, stderr: float, sign: str = "") -> str:
    """``mean +/- half-width`` of a 95% interval (normal approximation)."""
    half = "n/a" if math.isnan(stderr) else f"{1.96 * stderr:.3f}"
    return f"{mean:{sign}.3f} +/- {half}"


def _print_returns(env: Any, config: TabularConfig, q_tables: dict[str, np.ndarray | None]) -> None:
    """Each greedy policy's mean return, and their paired difference, on the same seeded episodes."""
    # Without --seed, draw one base seed anyway: both policies must still meet the same episodes
    seed = config.seed if config.seed is not None else int(np.random.default_rng().integers(2**31))
    n = config.eval_episodes
    limit = time_limit(env)
    length = f"at most {limit} steps" if limit else f"no time limit, cut at {DEFAULT_MAX_STEPS} steps"
    print(
        f"greedy return (undiscounted, {length}) over {n} episode{'s' if n > 1 else ''} "
        f"seeded {seed}..{seed + n - 1}, "
        "the same for each policy; mean +/- 95% interval:"
    )
    returns = {
        name: episode_returns(env, table, n, seed) for name, table in q_tables.items() if table is not None
    }
    width = max(len(name) for name in returns) + 1
    for name, values in returns.items():
        print(f"  {name + ':':<{width}} {_interval(*mean_and_stderr(values))}")
    if len(returns) == 2:
        first, second = returns
        # The paired difference: common random numbers cancel much of each episode's luck
        difference = mean_and_stderr(returns[second] - returns[first])
        print(f"  {second} - {first} (paired): {_interval(*difference, sign='+')}")


def _print_exact_values(env: Any, config: TabularConfig, q_table: np.ndarray, optimal: np.ndarray) -> None:
    """Both policies' exact values from the model, for the episodes' objective and for value iteration's."""
    try:
        start = start_distribution(env)
    except QiterError:
        return  # no start distribution: the estimates above are all there is
    horizon = time_limit(env) or DEFAULT_MAX_STEPS
    policies = {"Q-learning": greedy_policy(q_table), "value iteration": greedy_policy(optimal)}
    episodic = {
        name: float(start @ policy_evaluation(env, pi, 1.0, horizon)) for name, pi in policies.items()
    }
    best = float(start @ finite_horizon_values(env, horizon))
    print("exact expected returns from the model env.unwrapped.P and the start distribution:")
    print(
        f"  undiscounted within {horizon} steps (what the episodes estimate): "
        + ", ".join(f"{name} {value:.4f}" for name, value in episodic.items())
        + f"; best of any policy {best:.4f}"
    )
    if config.gamma < 1.0:  # with gamma = 1 and no time limit, a policy that never ends has no finite value
        discounted = {
            name: float(start @ policy_evaluation(env, pi, config.gamma)) for name, pi in policies.items()
        }
        print(
            f"  discounted, gamma={config.gamma}, no time limit (what value iteration maximises): "
            + ", ".join(f"{name} {value:.4f}" for name, value in discounted.items())
        )
