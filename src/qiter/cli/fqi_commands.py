"""``qiter collect`` (offline transitions to an ``.npz``) and ``qiter fqi`` (Fitted Q Iteration on them)."""

from __future__ import annotations

import argparse
from typing import Any

from qiter.errors import QiterError
from qiter.video import DEFAULT_VIDEO_FOLDER

# Kept in sync with qiter.fqi.REGRESSORS (a test checks), so that `qiter --help` does not import sklearn
REGRESSOR_NAMES = (
    "knn",
    "linear",
    "poly",
    "tree",
    "extra-trees",
    "random-forest",
    "gradient-boosting",
    "mlp",
)


def register(subparsers: Any) -> None:
    """Add the fqi commands to the CLI."""
    p = subparsers.add_parser(
        "collect",
        help="collect random-policy transitions into an .npz file (for `qiter fqi`)",
        description="Run a uniformly random policy and save the transitions (and the env id) to an .npz.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="gymnasium id with Box observations and discrete actions")
    p.add_argument("--steps", type=int, default=50_000, help="number of transitions (default: %(default)s)")
    p.add_argument("--out", required=True, help="output file (.npz is added if missing)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible data")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only from 100k steps)",
    )
    p.set_defaults(func=_collect)

    p = subparsers.add_parser(
        "fqi",
        help="Fitted Q Iteration on an .npz of transitions, with a scikit-learn regressor",
        description="Run FQI on offline data, evaluating the greedy policy every --eval-freq iterations.",
    )
    p.add_argument("file", metavar="FILE", help="an .npz written by `qiter collect` (or qiter.fqi.save_data)")
    p.add_argument(
        "--regressor", default="knn", choices=REGRESSOR_NAMES, help="regression model (default: %(default)s)"
    )
    p.add_argument("--iterations", type=int, default=20, help="FQI iterations (default: %(default)s)")
    p.add_argument("--gamma", type=float, default=0.99, help="discount factor (default: %(default)s)")
    p.add_argument(
        "--eval-freq",
        type=int,
        default=5,
        help="evaluate every N iterations, 0: never (default: %(default)s)",
    )
    p.add_argument(
        "--eval-episodes", type=int, default=10, help="episodes per evaluation (default: %(default)s)"
    )
    p.add_argument("--env", default=None, help="environment id (default: the one stored in FILE)")
    p.add_argument(
        "--encoding",
        default="auto",
        choices=("auto", "index", "one-hot"),
        help="action encoding of the regression input (default: index for 2 actions, else one-hot)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the regressor and the evaluations")
    p.add_argument(
        "--no-fast", action="store_true", help="refit every iteration even for kNN / least squares"
    )
    p.add_argument("--video", action="store_true", help="record the final evaluation to an mp4")
    p.add_argument(
        "--video-folder", default=DEFAULT_VIDEO_FOLDER, help="folder for the video (default: %(default)s)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_fqi)


def _collect(args: argparse.Namespace) -> int:
    import numpy as np

    from qiter.data import collect_data, save_data

    data = collect_data(args.env_id, n_steps=args.steps, seed=args.seed, progress=args.progress)
    path = save_data(data, args.out)
    episodes = int(np.sum(data.terminateds) + np.sum(data.truncateds if data.truncateds is not None else 0))
    print(f"collected {len(data)} transitions of {args.env_id} ({episodes} episodes ended) into {path}")
    return 0


def _fqi(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from qiter.envs import make_env
    from qiter.fqi import FQIIteration, evaluate, fitted_q_iteration, load_data, make_regressor

    if args.iterations < 0:
        raise QiterError(f"--iterations must be >= 0, not {args.iterations}")
    if args.eval_episodes < 1:
        raise QiterError(f"--eval-episodes must be at least 1, not {args.eval_episodes}")
    data = load_data(args.file)
    env_id = args.env or data.env_id
    if env_id is None:
        raise QiterError(f"'{args.file}' does not say which environment it comes from: pass --env ENV_ID")
    env = make_env(env_id, render_mode="rgb_array" if args.video else None)
    data.validate(env, source=f"data file '{args.file}' (for {env_id})")

    def report(record: FQIIteration) -> None:
        line = (
            f"iter {record.iteration:3d}/{args.iterations}  target {record.target_mean:8.3f} "
            f"+/- {record.target_std:7.3f} (max {record.target_max:8.3f})  {record.seconds:6.2f} s"
        )
        if record.score is not None:
            line += f"  R^2 {record.score:.2f}"
        if record.eval_mean is not None:
            line += f"  return {record.eval_mean:.1f} +/- {record.eval_std:.1f}"
        tqdm.write(line)

    print(f"FQI with {args.regressor} on {len(data)} transitions of {env_id}")
    model, history = fitted_q_iteration(
        data,
        make_regressor(args.regressor, seed=args.seed),
        n_iterations=args.iterations,
        gamma=args.gamma,
        env=env,
        eval_freq=args.eval_freq,
        n_eval_episodes=args.eval_episodes,
        action_encoding=args.encoding,
        fast=not args.no_fast,
        progress=not args.no_progress,
        verbose=False,
        eval_seed=args.seed,
        callback=report,
    )
    last = history[-1]
    if args.video or last.eval_mean is None:
        video_name = f"FQI_{env_id}" if args.video else None
        mean, std = evaluate(
            model,
            env,
            args.eval_episodes,
            video_name=video_name,
            video_folder=args.video_folder,
            seed=args.seed,
            verbose=False,
        )
    else:
        mean, std = last.eval_mean, float(last.eval_std or 0.0)
    print(f"final greedy return over {args.eval_episodes} episodes: {mean:.2f} +/- {std:.2f}")
    if args.video:
        print(f"video: {args.video_folder}/FQI_{env_id}.mp4")
    env.close()
    return 0
