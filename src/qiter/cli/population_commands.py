"""CLI command for populations: ``qiter population ENV_ID --agents N --steps T``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from qiter.cli.config_args import add_config_arguments, add_env_kwargs_argument, env_kwargs, integer
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
    p.add_argument("env_id", nargs="?", help="CartPole-v1, Acrobot-v1 or MountainCar-v0")
    p.add_argument("--agents", type=integer, help="number of agents N")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the population in RUN_DIR from its latest checkpoint, to the bit (--steps, --set and "
        "--config may change what does not fix the shapes of the saved arrays)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--steps", type=integer, help="environment steps per agent (n_timesteps)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument(
        "--workers",
        type=integer,
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
    add_env_kwargs_argument(p)
    p.add_argument("--seed", type=integer, help="seed of agent 0 (agent i gets seed + i)")
    p.add_argument("--runs-dir", default="runs", help="root folder for run folders (default: runs)")
    p.add_argument("--run-dir", help="exact folder to write instead of a new one under --runs-dir")
    p.add_argument("--save-best", action="store_true", help="write the best agent as RUN_DIR/best.pt")
    p.add_argument(
        "--eval-episodes", type=integer, help="episodes of the final evaluation (default: n_eval_episodes)"
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
    from qiter.population.train import check_population, resume_settings, save_agent, train
    from qiter.resolve import resolve_config

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"n_timesteps={args.steps}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.eval_episodes is not None and args.eval_episodes < 1:
        raise QiterError("--eval-episodes must be at least 1")
    if args.resume is not None:
        if args.env_id is not None or args.preset is not None or args.run_dir is not None or args.overwrite:
            raise QiterError(
                "--resume continues a population with its own config: use --steps, --set or --config to "
                "change it"
            )
        if args.sweep:
            raise QiterError("--resume keeps the population's sweep: leave out --sweep")
        run_dir = Path(args.resume)
        config, n_agents, sweep = resume_settings(run_dir, overrides, args.config)
        if args.seed is not None:
            config = replace(config, seed=args.seed)  # refused below if it differs: it names the agents
        if args.agents is not None:
            n_agents = args.agents  # refused below if it differs
    else:
        if args.env_id is None:
            raise QiterError(
                "give an environment id (e.g. `qiter population CartPole-v1 --agents 8`) or --resume RUN_DIR"
            )
        if args.agents is None:
            raise QiterError("--agents is required: the number of agents N")
        config = resolve_config(args.env_id, args.preset, args.config, overrides, args.seed)
        if args.env_kwargs:  # refused by check_population in one line: the array envs take none
            config = replace(config, env_kwargs={**config.env_kwargs, **env_kwargs(args)})
        sweep = parse_sweeps(args.sweep)
        n_agents = args.agents
        # Every check (env, options, sweep, device, memory) before a run folder exists: a mistake leaves
        # nothing behind.
        check_population(config, n_agents, sweep, args.workers)
        if args.run_dir is not None:
            run_dir = runs.claim_run_dir(args.run_dir, overwrite=args.overwrite)
        else:
            run_dir = runs.make_run_dir(args.runs_dir, config.env_id, "population", config.seed)
        if not args.quiet:
            print(f"Run folder: {run_dir}")
    result = train(
        config,
        n_agents,
        sweep,
        run_dir,
        final_eval_episodes=args.eval_episodes,
        progress=not args.quiet,
        workers=args.workers,
        cuda_graphs=not args.no_cuda_graphs,
        resume=args.resume is not None,
        overwrite=args.overwrite,
    )
    if args.save_best:
        save_agent(result, result.best_agent, run_dir / "best.pt")
    if not args.quiet:
        print(
            f"Trained {n_agents} agents x {config.n_timesteps} steps in {result.wall_time:.1f} s "
            f"({result.agent_steps_per_second:,.0f} agent-steps/s, {result.backend} backend on {config.device}, "
            f"{result.workers} process{'es' if result.workers > 1 else ''})"
        )
    # The table is in the run folder already (its bootstrap intervals take seconds to compute again).
    print((run_dir / "summary.md").read_text().rstrip())
    best = result.best_agent
    message = f"Best agent: {best} (seed {result.configs[best].seed}), final return {result.final_returns[best]:.2f}"
    if args.save_best:
        message += f"; checkpoint {run_dir / 'best.pt'} (`qiter eval {run_dir / 'best.pt'}`)"
    print(message)
    return 0
