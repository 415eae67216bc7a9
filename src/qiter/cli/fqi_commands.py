"""``qiter collect`` (offline transitions to an ``.npz``) and ``qiter fqi`` (Fitted Q Iteration on them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qiter.cli.config_args import add_env_kwargs_argument, env_kwargs
from qiter.config import config_from_dict
from qiter.errors import QiterError
from qiter.fqi_config import REGRESSOR_NAMES, CollectConfig, FQIConfig
from qiter.runs import check_writable
from qiter.video import DEFAULT_VIDEO_FOLDER

__all__ = ["REGRESSOR_NAMES", "register"]

# The settings' flags take strings and default to None: config_from_dict converts what the user gave with
# the types of CollectConfig / FQIConfig and fills in their defaults, which are shown in the help from here.
_FQI_DEFAULTS = FQIConfig()


def register(subparsers: Any) -> None:
    """Add the fqi commands to the CLI."""
    p = subparsers.add_parser(
        "collect",
        help="collect random-policy transitions into an .npz file (for `qiter fqi`)",
        description="Run a uniformly random policy and save the transitions (and the env id) to an .npz.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="gymnasium id with Box observations and discrete actions")
    p.add_argument("--steps", metavar="N", help=f"number of transitions (default: {CollectConfig.steps})")
    p.add_argument("--out", help="output file (.npz is added if missing); with --format npz")
    p.add_argument(
        "--format", choices=("npz", "minari"), default="npz", help="an .npz file, or a local Minari dataset"
    )
    p.add_argument(
        "--name", help="the Minari dataset's name (with --format minari; under MINARI_DATASETS_PATH)"
    )
    p.add_argument("--seed", help="seed for reproducible data")
    add_env_kwargs_argument(p)
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
    p.add_argument(
        "file", metavar="FILE", nargs="?", help="an .npz written by `qiter collect` (or qiter.fqi.save_data)"
    )
    p.add_argument(
        "--dataset",
        metavar="minari:NAME",
        help="a local Minari dataset instead of FILE (MINARI_DATASETS_PATH)",
    )
    p.add_argument(
        "--regressor",
        metavar="NAME",
        help=f"regression model: {', '.join(REGRESSOR_NAMES)} (default: {_FQI_DEFAULTS.regressor})",
    )
    p.add_argument("--iterations", metavar="N", help=f"FQI iterations (default: {_FQI_DEFAULTS.iterations})")
    p.add_argument("--gamma", metavar="X", help=f"discount factor (default: {_FQI_DEFAULTS.gamma})")
    p.add_argument(
        "--eval-freq",
        metavar="N",
        help=f"evaluate every N iterations, 0: only at the end (default: {_FQI_DEFAULTS.eval_freq})",
    )
    p.add_argument(
        "--eval-episodes",
        metavar="N",
        help=f"episodes per evaluation (default: {_FQI_DEFAULTS.eval_episodes})",
    )
    p.add_argument("--env", metavar="ENV_ID", help="environment id (default: the one stored in FILE)")
    p.add_argument(
        "--encoding",
        metavar="auto|index|one-hot",
        help="action encoding of the regression input (default: auto, index for 2 actions, else one-hot)",
    )
    p.add_argument("--seed", help="seed of the regressor and the evaluations")
    p.add_argument(
        "--no-fast", action="store_true", help="refit every iteration even for kNN / least squares"
    )
    add_env_kwargs_argument(p)
    p.add_argument("--video", action="store_true", help="record the final evaluation to an mp4")
    p.add_argument(
        "--video-folder", default=DEFAULT_VIDEO_FOLDER, help="folder for the video (default: %(default)s)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_fqi)


def _given(args: argparse.Namespace, *keys: str) -> dict[str, Any]:
    """The settings among ``keys`` that the user gave (the others are None: the config's defaults apply)."""
    return {key: getattr(args, key) for key in keys if getattr(args, key) is not None}


def _collect(args: argparse.Namespace) -> int:
    import numpy as np

    from qiter.data import collect_data, save_data

    values = {"env_id": args.env_id, **_given(args, "steps", "seed")}
    config = config_from_dict(CollectConfig, values, "the collect settings")
    if args.format == "minari":
        from qiter.minari_io import dataset_path, minari_name

        if args.name is None or args.out is not None:
            raise QiterError("--format minari takes --name NAME (not --out)")
        if dataset_path(args.name).exists():  # before collecting, not after
            raise QiterError(f"Minari dataset {minari_name(args.name)!r} already exists: pick another --name")
    elif args.out is None or args.name is not None:
        raise QiterError("give --out FILE (or --format minari --name NAME)")
    else:
        check_writable(Path(args.out).parent, f"--out {args.out}")  # before collecting, not after
    data = collect_data(
        config.env_id, n_steps=config.steps, seed=config.seed, progress=args.progress,
        env_kwargs=env_kwargs(args),
    )  # fmt: skip
    name: str | None = args.name
    if name is not None:
        from qiter.minari_io import save_minari

        path = f"Minari dataset {save_minari(data, name)} ({dataset_path(name)})"
    else:
        path = str(save_data(data, str(args.out)))
    episodes = int(np.sum(data.terminateds) + np.sum(data.truncateds if data.truncateds is not None else 0))
    print(f"collected {len(data)} transitions of {config.env_id} ({episodes} episodes ended) into {path}")
    return 0


def _fqi(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from qiter.envs import make_env
    from qiter.fqi import FQIIteration, evaluate, fitted_q_iteration, load_data, make_regressor

    keys = ("regressor", "iterations", "gamma", "eval_freq", "eval_episodes", "env", "encoding", "seed")
    values = {**_given(args, *keys), "fast": not args.no_fast}
    # Before loading the data, so that a bad setting is reported at once
    config = config_from_dict(FQIConfig, values, "the fqi settings")
    if (args.file is None) == (args.dataset is None):
        raise QiterError("give one data source: FILE (an .npz) or --dataset minari:NAME")
    if args.dataset is not None:
        from qiter.minari_io import load_minari

        kind, _, name = args.dataset.partition(":")
        if kind != "minari" or not name:
            raise QiterError(f"--dataset {args.dataset!r}: expected minari:NAME")
        data = load_minari(name)
        args.file = f"minari:{name}"
    else:
        data = load_data(args.file)
    env_id = config.env or data.env_id
    if env_id is None:
        raise QiterError(f"'{args.file}' does not say which environment it comes from: pass --env ENV_ID")
    # The data's own keyword arguments (`qiter collect --env-kwargs`), then this command's.
    kwargs = {**(data.env_kwargs or {}), **env_kwargs(args)} if env_id == data.env_id else env_kwargs(args)
    env = make_env(env_id, render_mode="rgb_array" if args.video else None, **kwargs)
    data.validate(env, source=f"data file '{args.file}' (for {env_id})")

    def report(record: FQIIteration) -> None:
        line = (
            f"iter {record.iteration:3d}/{config.iterations}  target {record.target_mean:8.3f} "
            f"+/- {record.target_std:7.3f} (max {record.target_max:8.3f})  {record.seconds:6.2f} s"
        )
        if record.score is not None:
            line += f"  R^2 {record.score:.2f}"
        if record.eval_mean is not None:
            line += f"  return {record.eval_mean:.1f} +/- {record.eval_std:.1f}"
        tqdm.write(line)

    print(f"FQI with {config.regressor} on {len(data)} transitions of {env_id}")
    model, history = fitted_q_iteration(
        data,
        make_regressor(config.regressor, seed=config.seed),
        n_iterations=config.iterations,
        gamma=config.gamma,
        env=env,
        eval_freq=config.eval_freq,
        n_eval_episodes=config.eval_episodes,
        action_encoding=config.encoding,
        fast=config.fast,
        progress=not args.no_progress,
        verbose=False,
        eval_seed=config.seed,
        callback=report,
    )
    last = history[-1]
    if args.video or last.eval_mean is None:
        video_name = f"FQI_{env_id}" if args.video else None
        mean, std = evaluate(
            model,
            env,
            config.eval_episodes,
            video_name=video_name,
            video_folder=args.video_folder,
            seed=config.seed,
            verbose=False,
        )
    else:
        mean, std = last.eval_mean, float(last.eval_std or 0.0)
    print(f"final greedy return over {config.eval_episodes} episodes: {mean:.2f} +/- {std:.2f}")
    if args.video:
        print(f"video: {args.video_folder}/FQI_{env_id}.mp4")
    env.close()
    return 0
