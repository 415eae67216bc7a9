"""CLI commands of the agents of every algorithm: ``qiter train``, ``qiter eval``, ``qiter presets``."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qiter.cli.config_args import add_config_arguments, add_env_kwargs_argument, env_kwargs, integer
from qiter.errors import QiterError
from qiter.run_config import RunConfig

if TYPE_CHECKING:
    from qiter.tracking import EvaluationVideos, WandbTracker

# The algorithms of `qiter train --algo`, with what each is for (keys of qiter.agent.ALGORITHMS).
ALGO_HELP: dict[str, str] = {
    "dqn": "DQN, discrete actions (a Box action space with --discretize K)",
    "td3": "TD3, continuous actions (twin critics, delayed actor, target smoothing)",
    "ddpg": "DDPG, continuous actions (a learned maximizer)",
    "naf": "NAF, continuous actions (Q quadratic in the action: an exact max)",
    "cem": "Q-learning whose max is sampled and refined by the cross-entropy method",
}

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
    """Add ``train``, ``eval`` and ``presets`` to the CLI."""
    p = subparsers.add_parser(
        "train",
        help="train an agent (DQN, or TD3, DDPG, NAF, CEM for continuous actions)",
        description="Train an agent. Settings come from the algorithm's preset named like the env (if any), "
        "then --preset, --config and --set overrides, in that order. Each run writes to its own folder. "
        "Algorithms (--algo): " + "; ".join(f"{name}: {text}" for name, text in ALGO_HELP.items()) + ".",
    )
    p.add_argument(
        "env_id", nargs="?", help="gymnasium environment id, e.g. CartPole-v1 (not needed with --resume)"
    )
    add_config_arguments(p)
    add_env_kwargs_argument(p)
    p.add_argument(
        "--algo",
        choices=list(ALGO_HELP),
        help="the algorithm (default: dqn; with --resume, the run's); see above",
    )
    p.add_argument(
        "--discretize", type=integer, metavar="K",
        help="DQN on a Box action space: K values per action dimension (at least 2)",
    )  # fmt: skip
    p.add_argument("--seed", type=integer, help="random seed (overrides the preset's)")
    p.add_argument(
        "--steps", type=integer, help="number of environment steps (n_timesteps), e.g. 50000 or 5e4"
    )
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
        "--overwrite", action="store_true", help="replace the run already in --run-dir (otherwise refused)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its latest checkpoint; --set and --config change its config "
        "(not the network's shape)",
    )
    p.add_argument("--save-buffer", action="store_true", help="also store the replay buffer in checkpoints")
    p.add_argument(
        "--eval-episodes",
        type=integer,
        help="episodes of the final evaluation (default: n_eval_episodes; 0: none)",
    )
    p.add_argument("--video", action="store_true", help="record the final evaluation to RUN_DIR/videos/")
    p.add_argument(
        "--video-every",
        type=integer,
        metavar="N",
        help="also record one greedy episode every N periodic evaluations, to RUN_DIR/videos/",
    )
    track = p.add_argument_group("experiment tracking", 'Weights & Biases (pip install "qiter[track]")')
    track.add_argument(
        "--track",
        action="store_true",
        help="send the config, metrics and evaluation videos to Weights & Biases (WANDB_MODE=offline keeps "
        "them in RUN_DIR/wandb)",
    )
    track.add_argument("--wandb-project", default="qiter", help="W&B project (default: %(default)s)")
    track.add_argument("--wandb-entity", help="W&B team or user (default: yours)")
    p.add_argument("--no-tensorboard", action="store_true", help="write CSV logs only")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--quiet", action="store_true", help="print only the final evaluation (no progress bar either)"
    )
    p.set_defaults(func=_train)

    p = subparsers.add_parser(
        "eval",
        help="evaluate a trained agent (any algorithm)",
        description="Evaluate the greedy policy of a run folder (its latest checkpoint), a population folder "
        "(its best.pt) or a checkpoint file.",
    )
    p.add_argument("path", help="run folder, population folder or .pt checkpoint")
    p.add_argument("--episodes", type=integer, default=10, help="number of episodes (default: 10)")
    p.add_argument(
        "--epsilon",
        type=float,
        default=0.0,
        help="probability of a random action, in [0, 1], for agents with discrete actions (default: 0)",
    )
    p.add_argument("--seed", type=integer, default=0, help="seed of the evaluation episodes (default: 0)")
    p.add_argument("--video", action="store_true", help="record the episodes to an mp4")
    p.add_argument("--video-folder", help="where the mp4 goes (default: RUN_DIR/videos or logs/videos)")
    add_env_kwargs_argument(p)
    p.set_defaults(func=_eval)

    p = subparsers.add_parser(
        "presets",
        help="list the shipped presets of every algorithm, or show one",
        description="List the shipped presets (DQN's, then the other algorithms' as ALGO/NAME) with a one-line "
        "description, or print one preset's YAML file (use it with `qiter train ENV_ID --preset NAME`, or "
        "copy it for --config).",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="print this preset's YAML file, comments included")
    p.set_defaults(func=_presets)


def _agent_name(args: argparse.Namespace) -> str:
    """The agent of ``--algo`` and ``--discretize`` (DQN on discretized actions is its own agent)."""
    if args.discretize is None:
        return str(args.algo or "dqn")
    if args.algo not in (None, "dqn"):
        raise QiterError(f"--discretize is for --algo dqn; {args.algo} acts on continuous actions directly")
    if args.discretize < 2:
        raise QiterError(f"--discretize needs at least 2 bins per dimension, got {args.discretize}")
    return "dqn-discretized"


def _resumed_run(args: argparse.Namespace) -> tuple[str, int, bool]:
    """The algorithm of the run that ``--resume`` names, the step of its latest checkpoint, and whether that
    holds the replay buffer.

    :raises QiterError: No checkpoint, a checkpoint of another run, or an ``--algo``/``--discretize`` that
        is not the run's (a resume cannot change the algorithm).
    """
    from qiter import runs
    from qiter.agent import Agent

    run_dir = Path(args.resume)
    if not run_dir.is_dir():
        raise QiterError(f"--resume {run_dir}: no such run folder")
    checkpoint = runs.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise QiterError(f"no checkpoint to resume from in {run_dir / runs.CHECKPOINT_DIR}")
    state = runs.load_checkpoint(checkpoint)
    runs.check_checkpoint_of_run(run_dir, checkpoint, state)
    algo = str(state.get("algo", "dqn"))
    if algo == "population":
        raise QiterError(f"{run_dir} is a population: continue it with `qiter population --resume {run_dir}`")
    asked = None if args.algo is None and args.discretize is None else _agent_name(args)
    if asked is not None and asked != algo:
        raise QiterError(
            f"{run_dir} is a {algo} run: a resume continues it as {algo} (drop --algo/--discretize, or train "
            f"a new {asked} run)"
        )
    return algo, int(state.get("step", 0)), Agent.has_buffer(state.get("agent", {}))


def _check_followers(args: argparse.Namespace, config: RunConfig) -> None:
    """Refuse ``--eval-episodes``, ``--video-every`` and ``--track`` where they cannot work, before any
    work."""
    if args.eval_episodes is not None and args.eval_episodes < 0:
        raise QiterError(
            f"--eval-episodes must be at least 0 (0: no final evaluation), got {args.eval_episodes}"
        )
    if args.video_every is not None:
        if args.video_every < 1:
            raise QiterError(f"--video-every must be at least 1, got {args.video_every}")
        if config.evaluation_interval == 0:
            raise QiterError("--video-every records at periodic evaluations, and evaluation_interval is 0")
    if args.track:
        try:
            import wandb  # noqa: F401  (only to know it is there, before any work)
        except ImportError:
            raise QiterError('--track needs Weights & Biases: pip install "qiter[track]"') from None


def _followers(
    args: argparse.Namespace, config: RunConfig, algo: str, run_dir: Path
) -> tuple[EvaluationVideos | None, WandbTracker | None]:
    """The run events of ``--video-every`` and ``--track``."""
    from qiter.tracking import EvaluationVideos, WandbTracker

    videos = EvaluationVideos(run_dir / "videos", args.video_every, config.seed) if args.video_every else None
    tracker = (
        WandbTracker(config, algo, run_dir, args.wandb_project, args.wandb_entity, videos)
        if args.track
        else None
    )
    return videos, tracker


def _train(args: argparse.Namespace) -> int:
    from qiter import runs
    from qiter.agent import agent_class, check_budget
    from qiter.dqn.trainer import train
    from qiter.resolve import resolve_config, resume_config, with_env_kwargs
    from qiter.run_loop import check_env
    from qiter.run_loop import train as run_train

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
    algo, start_step, has_buffer = _resumed_run(args) if args.resume else (_agent_name(args), 0, False)
    if args.discretize is not None and algo == "dqn-discretized" and not args.resume:
        overrides.append(f"discretize={args.discretize}")
    agent_cls = agent_class(algo)
    if args.resume:
        if args.preset is not None or args.run_dir is not None or args.overwrite:
            raise QiterError(
                "--resume continues a run with its own config: use --set or --config to change it"
            )
        run_dir = Path(args.resume)
        # The run's config, then what this command changes (a resume refuses changes of the network's shape).
        config = with_env_kwargs(
            resume_config(run_dir, args.config, overrides, args.seed, env_id=args.env_id), env_kwargs(args)
        )
        if start_step >= config.n_timesteps:
            raise QiterError(
                f"the run is already at step {start_step} of n_timesteps={config.n_timesteps}: nothing to "
                f"train (give a budget above {start_step}, e.g. --steps {2 * start_step})"
            )
        # Without its buffer, the resumed agent waits learning_starts new steps before it learns again.
        wait = None if has_buffer else start_step + getattr(config, "learning_starts", 0)
        check_budget(agent_cls, config, start_step, wait)
        _check_followers(args, config)
    else:
        if args.env_id is None:
            raise QiterError("give an environment id (e.g. `qiter train CartPole-v1`) or --resume RUN_DIR")
        config = with_env_kwargs(
            resolve_config(args.env_id, args.preset, args.config, overrides, args.seed, algo=algo),
            env_kwargs(args),
        )
        # Check the environment and the folder before a run folder exists, so a mistake leaves nothing behind.
        check_env(config, agent_cls)
        check_budget(agent_cls, config)
        _check_followers(args, config)
        if args.run_dir:
            run_dir = runs.claim_run_dir(args.run_dir, overwrite=args.overwrite)
        else:
            run_dir = runs.make_run_dir(args.runs_dir, config.env_id, agent_cls.algo, config.seed)
    if not args.quiet and not args.resume:  # a resume says "Resuming RUN_DIR" once it is checked
        print(f"Run folder: {run_dir}")
    videos, tracker = _followers(args, config, algo, run_dir)
    # DQN keeps its own entry point (qiter.dqn.train); every other agent goes straight to the run loop.
    trainer: Any = train if algo == "dqn" else partial(run_train, agent_cls)
    try:
        result = trainer(
            config,
            run_dir,
            resume=bool(args.resume),
            overwrite=args.overwrite,
            progress=not (args.no_progress or args.quiet),
            verbose=0 if args.quiet else 1,
            tensorboard=not args.no_tensorboard,
            final_eval_episodes=args.eval_episodes
            if args.eval_episodes is not None
            else config.n_eval_episodes,
            video=args.video,
            events=[
                event for event in (videos, tracker) if event is not None
            ],  # videos first: the tracker sends them
        )
    except BaseException:
        if tracker is not None:
            tracker.finish(failed=True)
        raise
    if tracker is not None:
        final_video = run_dir / "videos" / f"{agent_cls.algo}-{config.env_id}.mp4" if args.video else None
        tracker.finish(result.final_evaluation, result.steps, final_video)
    if not args.quiet:
        # After a resume, what this command trained: the steps since the checkpoint, not the run's total.
        trained = f"Trained {result.steps - start_step} steps"
        if start_step:
            trained += f" (steps {start_step}-{result.steps} of the run)"
        print(f"{trained} in {result.wall_time:.1f} s ({result.steps_per_second:,.0f} steps/s)")
    final = result.final_evaluation
    if final is None:  # --eval-episodes 0
        return 0
    print(
        f"Evaluation of {config.env_id} over {len(final.returns)} episodes: {final.mean_return:.2f} +/- {final.std_return:.2f}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from qiter.agent import load_agent
    from qiter.config import MAX_SEED, seed_ok
    from qiter.runs import check_writable

    if args.episodes < 1:
        raise QiterError("--episodes must be at least 1")
    if not 0.0 <= args.epsilon <= 1.0:
        raise QiterError(f"--epsilon must be in [0, 1] (a probability), got {args.epsilon}")
    if not seed_ok(args.seed):
        raise QiterError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    path = Path(args.path)
    trained = load_agent(path)
    trained.check_exploration_rate(args.epsilon, "--epsilon")
    default_folder = (path if path.is_dir() else path.parent.parent) / "videos"
    video_folder = (Path(args.video_folder) if args.video_folder else default_folder) if args.video else None
    if video_folder is not None:
        check_writable(video_folder, f"the video folder {video_folder}")
    result = trained.evaluate(
        None, args.episodes, seed=args.seed, video_folder=video_folder, exploration_rate=args.epsilon,
        video_name=f"eval-{trained.config.env_id}", env_kwargs=env_kwargs(args),
    )  # fmt: skip
    print(
        f"Evaluation of {trained.config.env_id} over {args.episodes} episodes: {result.mean_return:.2f} +/- {result.std_return:.2f}"
    )
    return 0


def _presets(args: argparse.Namespace) -> int:
    from qiter.resolve import describe_preset, list_all_presets, preset_text

    if args.name:
        # The file itself, not its parsed values: its comments say where the values come from.
        text = preset_text(args.name)
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    names = list_all_presets()  # the DQN presets, then the other algorithms' as algo/NAME
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe_preset(name)}".rstrip())
    return 0
