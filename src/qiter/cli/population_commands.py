"""CLI command for populations: ``qiter population ENV_ID --agents N --steps T``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qiter.cli.config_args import add_config_arguments
from qiter.errors import QiterError


def register(subparsers: Any) -> None:
    """Add ``qiter population`` to the CLI."""
    p = subparsers.add_parser(
        "population",
        help="train N independent DQN agents at once (array environments, batched updates)",
        description="Train a population of independent DQN agents in lockstep, by batched array operations "
        "(split over one process per core on the CPU): per-agent "
        "learning curves, a table and an aggregate plot in one folder. Settings as in `qiter train` "
        "(preset named like the env, --preset, --config, --set); --sweep spreads values over the agents.",
    )
    p.add_argument("env_id", help="CartPole-v1, Acrobot-v1 or MountainCar-v0")
    p.add_argument("--agents", type=int, required=True, help="number of agents N")
    p.add_argument("--steps", type=int, help="environment steps per agent (n_timesteps)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument(
        "--workers",
        type=int,
        help="processes the agents are split over on the CPU (default: one per core, at least 16 agents "
        "each); the split changes no agent's run",
    )
    p.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="on CUDA, launch every kernel one by one instead of replaying each step from captured CUDA "
        "graphs (the same run)",
    )
    p.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="give the agents these values of KEY (all combinations of the sweeps, round-robin; N must be "
        "a multiple of their number)",
    )
    add_config_arguments(p)
    p.add_argument("--seed", type=int, help="seed of agent 0 (agent i gets seed + i)")
    p.add_argument("--runs-dir", default="runs", help="root folder for run folders (default: runs)")
    p.add_argument("--run-dir", help="exact folder to write instead of a new one under --runs-dir")
    p.add_argument("--save-best", action="store_true", help="write the best agent as RUN_DIR/best.pt")
    p.add_argument(
        "--eval-episodes", type=int, help="episodes of the final evaluation (default: n_eval_episodes)"
    )
    p.add_argument("--quiet", action="store_true", help="print only the table")
    p.set_defaults(func=_population)


def parse_sweeps(items: list[str]) -> dict[str, list[str]]:
    """``["key=v1,v2", ...]`` -> ``{"key": ["v1", "v2"]}`` (values typed later, against the config).

    :raises QiterError: An item without ``=``, or a key given twice.
    """
    sweep: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key:
            raise QiterError(f"--sweep needs KEY=V1,V2,..., got {item!r}")
        if key in sweep:
            raise QiterError(f"--sweep {key} is given twice")
        sweep[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    return sweep


def _population(args: argparse.Namespace) -> int:
    from qiter import runs
    from qiter.population.report import summary_table, write_run
    from qiter.population.train import save_agent, train
    from qiter.resolve import resolve_config

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"n_timesteps={args.steps}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise QiterError("--eval-episodes must be at least 1")
    config = resolve_config(args.env_id, args.preset, args.config, overrides, args.seed)
    sweep = parse_sweeps(args.sweep)
    if args.run_dir is not None:
        folder = Path(args.run_dir)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise QiterError(f"{folder} exists and is not an empty folder: choose another --run-dir")
    # Every check (env, options, sweep, device, memory) runs inside train before any work; the folder is
    # written only once training has finished, so a mistake or an interruption leaves nothing behind.
    result = train(
        config,
        args.agents,
        sweep,
        final_eval_episodes=args.eval_episodes,
        progress=not args.quiet,
        workers=args.workers,
        cuda_graphs=not args.no_cuda_graphs,
    )
    if args.run_dir is not None:
        run_dir = Path(args.run_dir)
    else:
        run_dir = runs.make_run_dir(args.runs_dir, config.env_id, "population", config.seed)
    write_run(result, run_dir, sweep)
    if args.save_best:
        save_agent(result, result.best_agent, run_dir / "best.pt")
    if not args.quiet:
        print(f"Run folder: {run_dir}")
        print(
            f"Trained {args.agents} agents x {config.n_timesteps} steps in {result.wall_time:.1f} s "
            f"({result.agent_steps_per_second:,.0f} agent-steps/s, {result.backend} backend on {config.device}, "
            f"{result.workers} process{'es' if result.workers > 1 else ''})"
        )
    print(summary_table(result, sweep))
    best = result.best_agent
    message = f"Best agent: {best} (seed {result.configs[best].seed}), final return {result.final_returns[best]:.2f}"
    if args.save_best:
        message += f"; checkpoint {run_dir / 'best.pt'} (`qiter eval {run_dir / 'best.pt'}`)"
    print(message)
    return 0
