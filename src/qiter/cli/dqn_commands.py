"""CLI commands for DQN: ``qiter train``, ``qiter eval``, ``qiter presets``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qiter.errors import QiterError

# The DQN improvements as flags of `qiter train`: (config key, "flag" or a value's metavar, help).
OPTION_FLAGS: list[tuple[str, str, str]] = [
    ("double_dqn", "flag", "Double DQN targets"),
    ("dueling", "flag", "dueling head"),
    ("prioritized_replay", "flag", "proportional prioritized experience replay"),
    ("n_steps", "N", "n-step returns"),
    ("n_step_cut", "none|greedy", "cut n-step traces at the first non-greedy action"),
    ("loss", "mse|huber", "TD loss"),
    ("max_grad_norm", "X", "clip the gradient norm"),
    ("tau", "X", "Polyak averaging coefficient for target updates (1: hard copies)"),
    ("target_network_update_interval", "N", "target update interval (steps or episodes)"),
    ("learning_rate", "X", "Adam's learning rate"),
    ("learning_rate_final", "X", "decay the learning rate linearly to this value"),
    ("exploration_schedule", "linear|exponential", "epsilon schedule"),
    ("stop_at_return", "X", "stop once an evaluation reaches this mean return"),
]


def register(subparsers: Any) -> None:
    """Add the DQN commands to the CLI."""
    p = subparsers.add_parser(
        "train",
        help="train a DQN agent",
        description="Train a DQN agent. Settings come from the preset named like the env (if any), then "
        "--preset, --config and --set overrides, in that order. Each run writes to its own folder.",
    )
    p.add_argument(
        "env_id", nargs="?", help="gymnasium environment id, e.g. CartPole-v1 (not needed with --resume)"
    )
    p.add_argument(
        "--preset", help="preset name (see `qiter presets`); default: the env id's preset if it exists"
    )
    p.add_argument("--config", help="YAML file of config values")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one value"
    )
    p.add_argument("--seed", type=int, help="random seed (overrides the preset's)")
    p.add_argument("--steps", type=int, help="number of environment steps (n_timesteps)")
    p.add_argument("--device", help="torch device: cpu (default) or cuda")
    options = p.add_argument_group("algorithm options", "shortcuts for --set KEY=VALUE (see docs/dqn.md)")
    for key, kind, help_text in OPTION_FLAGS:
        flag = "--" + key.replace("_", "-")
        if kind == "flag":
            options.add_argument(flag, dest=f"opt_{key}", action="store_true", help=help_text)
        else:
            options.add_argument(flag, dest=f"opt_{key}", metavar=kind, help=help_text)
    p.add_argument("--runs-dir", default="runs", help="root folder for run folders (default: runs)")
    p.add_argument("--run-dir", help="exact run folder to use instead of a new one under --runs-dir")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint"
    )
    p.add_argument("--save-buffer", action="store_true", help="also store the replay buffer in checkpoints")
    p.add_argument(
        "--eval-episodes", type=int, help="episodes of the final evaluation (default: n_eval_episodes)"
    )
    p.add_argument("--video", action="store_true", help="record the final evaluation to RUN_DIR/videos/")
    p.add_argument("--no-tensorboard", action="store_true", help="write CSV logs only")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--quiet", action="store_true", help="print only the final evaluation")
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained DQN agent",
        description="Evaluate the greedy policy of a run folder (its latest checkpoint) or a checkpoint file.",
    )
    p.add_argument("path", help="run folder or .pt checkpoint")
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (default: 10)")
    p.add_argument(
        "--epsilon", type=float, default=0.0, help="exploration rate during evaluation (default: 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation episodes (default: 0)")
    p.add_argument("--video", action="store_true", help="record the episodes to an mp4")
    p.add_argument("--video-folder", help="where the mp4 goes (default: RUN_DIR/videos or logs/videos)")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("presets", help="list the shipped DQN presets")
    p.add_argument("name", nargs="?", help="show this preset's values")
    p.set_defaults(func=_presets)


def _train(args: argparse.Namespace) -> int:
    from qiter import runs
    from qiter.dqn.presets import config_from_dict, resolve_config
    from qiter.dqn.trainer import make_training_envs, train

    overrides = list(args.overrides)
    for key, kind, _ in OPTION_FLAGS:
        value = getattr(args, f"opt_{key}")
        if value not in (None, False):
            overrides.append(f"{key}={'true' if kind == 'flag' else value}")
    if args.steps is not None:
        overrides.append(f"n_timesteps={args.steps}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.save_buffer:
        overrides.append("save_buffer=true")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").exists():
            raise QiterError(f"{run_dir} is not a run folder (no config.yaml)")
        config = config_from_dict(runs.load_run_config(run_dir))
        if args.steps is not None:
            config.n_timesteps = args.steps
    else:
        if args.env_id is None:
            raise QiterError("give an environment id (e.g. `qiter train CartPole-v1`) or --resume RUN_DIR")
        config = resolve_config(args.env_id, args.preset, args.config, overrides, args.seed)
        # Check the environment before a run folder exists, so a typo leaves no empty folder behind.
        for env in make_training_envs(config):
            env.close()
        run_dir = (
            Path(args.run_dir)
            if args.run_dir
            else runs.make_run_dir(args.runs_dir, config.env_id, "dqn", config.seed)
        )
    if not args.quiet:
        print(f"Run folder: {run_dir}")
    result = train(
        config,
        run_dir,
        resume=bool(args.resume),
        progress=not args.no_progress,
        verbose=0 if args.quiet else 1,
        tensorboard=not args.no_tensorboard,
    )
    mean, std = _final_eval(
        result.q_net,
        config.env_id,
        args.eval_episodes or config.n_eval_episodes,
        config.seed,
        run_dir,
        args.video,
    )
    runs.write_eval(
        run_dir,
        {
            "env_id": config.env_id,
            "steps": result.steps,
            "episodes": args.eval_episodes or config.n_eval_episodes,
            "mean_return": mean,
            "std_return": std,
            "wall_time_s": result.wall_time,
            "steps_per_second": result.steps_per_second,
        },
    )
    if not args.quiet:
        print(
            f"Trained {result.steps} steps in {result.wall_time:.1f} s ({result.steps_per_second:,.0f} steps/s)"
        )
    print(
        f"Evaluation of {config.env_id} over {args.eval_episodes or config.n_eval_episodes} episodes: {mean:.2f} +/- {std:.2f}"
    )
    return 0


def _final_eval(
    q_net: Any, env_id: str, episodes: int, seed: int, run_dir: Path, video: bool
) -> tuple[float, float]:
    from qiter.dqn.trainer import greedy_actor
    from qiter.envs import make_env
    from qiter.evaluation import run_episodes

    env = make_env(env_id, render_mode="rgb_array" if video else None, flatten=True)
    returns = run_episodes(
        env, greedy_actor(q_net), episodes, video_name=f"dqn-{env_id}" if video else None,
        video_folder=run_dir / "videos", seed=seed + 10_000,
    )  # fmt: skip
    env.close()
    return float(returns.mean()), float(returns.std())


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from qiter.dqn.trainer import greedy_actor, load_agent
    from qiter.envs import make_env
    from qiter.evaluation import run_episodes

    path = Path(args.path)
    if not path.exists():
        raise QiterError(f"{path} does not exist")
    config, q_net = load_agent(path)
    if args.episodes < 1:
        raise QiterError("--episodes must be at least 1")
    default_folder = (path if path.is_dir() else path.parent.parent) / "videos"
    video_folder = Path(args.video_folder) if args.video_folder else default_folder
    env = make_env(config.env_id, render_mode="rgb_array" if args.video else None, flatten=True)
    returns = run_episodes(
        env, greedy_actor(q_net), args.episodes, args.epsilon, np.random.default_rng(args.seed),
        video_name=f"eval-{config.env_id}" if args.video else None, video_folder=video_folder, seed=args.seed,
    )  # fmt: skip
    env.close()
    print(
        f"Evaluation of {config.env_id} over {args.episodes} episodes: {returns.mean():.2f} +/- {returns.std():.2f}"
    )
    return 0


def _presets(args: argparse.Namespace) -> int:
    from qiter.dqn.presets import list_presets, load_preset

    if args.name:
        print(json.dumps(load_preset(args.name), indent=2))
        return 0
    for name in list_presets():
        print(name)
    return 0
