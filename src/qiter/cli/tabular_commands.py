"""``qiter tabular``: Q-learning on a table of states, compared with value iteration when the model is known."""

from __future__ import annotations

import argparse
import time
from typing import Any

from qiter.errors import QiterError


def register(subparsers: Any) -> None:
    """Add the tabular commands to the CLI."""
    p = subparsers.add_parser(
        "tabular",
        help="tabular Q-learning on an env with discrete states (FrozenLake, Taxi, CliffWalking)",
        description="Learn a Q-table with epsilon-greedy Q-learning, report the greedy policy's return and, "
        "for grid worlds, draw it as arrows next to value iteration's optimal policy.",
    )
    p.add_argument(
        "env_id", metavar="ENV_ID", help="gymnasium id, e.g. FrozenLake-v1, Taxi-v4, CliffWalking-v1"
    )
    p.add_argument("--episodes", type=int, default=5_000, help="training episodes (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate alpha (default: %(default)s)")
    p.add_argument("--gamma", type=float, default=0.99, help="discount factor (default: %(default)s)")
    p.add_argument(
        "--epsilon", type=float, default=0.1, help="exploration rate of epsilon-greedy (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    p.add_argument(
        "--eval-episodes", type=int, default=100, help="greedy evaluation episodes (default: %(default)s)"
    )
    p.add_argument(
        "--slippery",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make FrozenLake/CliffWalking slippery or not (default: the env's own default)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_tabular)


def _tabular(args: argparse.Namespace) -> int:
    from qiter.envs import make_env
    from qiter.tabular import evaluate_q_table, grid_layout, policy_arrows, q_learning, value_iteration

    if not 0.0 <= args.epsilon <= 1.0:
        raise QiterError(f"--epsilon must be in [0, 1], not {args.epsilon}")
    if args.eval_episodes < 1:
        raise QiterError(f"--eval-episodes must be at least 1, not {args.eval_episodes}")
    kwargs = {} if args.slippery is None else {"is_slippery": args.slippery}
    try:
        env = make_env(args.env_id, **kwargs)
    except TypeError as exc:  # an option the env does not take, e.g. --slippery for Taxi
        raise QiterError(f"{args.env_id} does not accept these options: {exc}") from exc
    start = time.perf_counter()
    q_table = q_learning(
        env,
        n_episodes=args.episodes,
        learning_rate=args.lr,
        gamma=args.gamma,
        exploration_rate=args.epsilon,
        seed=args.seed,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    print(f"Q-learning on {args.env_id}: {args.episodes} episodes in {seconds:.1f} s")
    mean, std = evaluate_q_table(env, q_table, args.eval_episodes, seed=args.seed)
    print(f"Q-learning greedy return over {args.eval_episodes} episodes: {mean:.2f} +/- {std:.2f}")

    optimal = None
    if isinstance(getattr(env.unwrapped, "P", None), dict):
        _, optimal = value_iteration(env, gamma=args.gamma)
        opt_mean, opt_std = evaluate_q_table(env, optimal, args.eval_episodes, seed=args.seed)
        print(
            f"value iteration greedy return over {args.eval_episodes} episodes: {opt_mean:.2f} +/- {opt_std:.2f}"
        )
    layout = grid_layout(env)
    if layout is not None:
        print("\nQ-learning greedy policy:")
        print(policy_arrows(q_table, layout.shape, layout.arrows, layout.special))
        if optimal is not None:
            print("\nvalue iteration greedy policy:")
            print(policy_arrows(optimal, layout.shape, layout.arrows, layout.special))
    env.close()
    return 0
