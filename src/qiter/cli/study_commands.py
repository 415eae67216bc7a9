"""Studies on the command line: ``qiter sweep``, ``qiter tune``, ``qiter plot``, ``qiter report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qiter.cli.config_args import add_config_arguments, add_env_kwargs_argument, env_kwargs, integer
from qiter.cli.dqn_commands import ALGO_HELP, _agent_name
from qiter.errors import QiterError


def _add_algo_arguments(parser: argparse.ArgumentParser) -> None:
    """``--algo`` and ``--discretize``, as ``qiter train`` has them."""
    parser.add_argument(
        "--algo", choices=list(ALGO_HELP), default="dqn",
        help="the algorithm, as for `qiter train` (default: dqn): " + ", ".join(ALGO_HELP),
    )  # fmt: skip
    parser.add_argument(
        "--discretize", type=int, metavar="K",
        help="DQN on a Box action space: K values per action dimension (at least 2)",
    )  # fmt: skip


def register(subparsers: Any) -> None:
    """Add the study commands to the CLI."""
    p = subparsers.add_parser(
        "sweep",
        help="run every (setting, seed) pair of a grid, in parallel, resumable",
        description="Train one run per seed and grid setting (DQN, or --algo td3, ddpg, naf, cem, or DQN on "
        "--discretize K actions), each an ordinary run folder under OUT/<setting>/seed-<n>, in --jobs "
        "processes. Started again, the same command skips finished runs and resumes the others; with "
        "--storage the same command on several machines shares the runs.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id")
    _add_algo_arguments(p)
    add_env_kwargs_argument(p)
    p.add_argument("--seeds", default="0-4", help="seeds: 0-9, 0,3,7 or a mix (default: %(default)s)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="config values to compare (repeatable)",
    )
    add_config_arguments(p)
    p.add_argument("--steps", type=integer, help="environment steps of each run (n_timesteps)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--out", required=True, help="the sweep's folder")
    p.add_argument("--storage", metavar="URL", help="database that lists the runs for every machine")
    p.add_argument("--name", help="the sweep's name in --storage (default: derived from the runs)")
    p.add_argument("--threshold", type=float, help="report the fraction of seeds reaching this return")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_sweep)

    p = subparsers.add_parser(
        "tune",
        help="tune hyperparameters with Optuna (SQLite by default, or a shared database)",
        description="Run an Optuna study: TPE sampling of the algorithm's search space, pruning on the "
        "periodic evaluations. Every process or machine running the same command (same --storage and "
        "--study) works on the same study until it holds --trials trials.",
    )
    p.add_argument("env_id", metavar="ENV_ID", help="gymnasium environment id")
    p.add_argument("--trials", type=int, default=20, help="trials in the study (default: %(default)s)")
    _add_algo_arguments(p)
    add_env_kwargs_argument(p)
    p.add_argument("--budget", type=integer, metavar="STEPS", help="environment steps per trial")
    add_config_arguments(p)
    p.add_argument("--seed", type=int, help="seed of every trial's run and of the sampler")
    p.add_argument("--out", default="tune", help="folder for trial runs, study.db and plots (default: tune)")
    p.add_argument("--storage", metavar="URL", help="database URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study", help="study name (default: <algo>-<env_id>, dqn-discretized for --discretize)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default: 1)")
    p.add_argument("--pruner", default="median", help="median (default), halving or none")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        help="seconds between a trial's heartbeats (default: %(default)s)",
    )
    p.add_argument("--export-best", metavar="FILE.yaml", help="write the best trial's config as a preset")
    p.add_argument("--no-plots", action="store_true", help="skip the study's PNG plots")
    p.set_defaults(func=_tune)

    p = subparsers.add_parser(
        "plot",
        help="learning curves of runs grouped by setting: IQM with 95%% bootstrap band",
        description="Plot the evaluation return of runs (run folders, sweeps or tuning folders), grouped by "
        "setting (configs equal but for the seed): interquartile mean across seeds and its stratified-"
        "bootstrap 95% confidence band (rliable).",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_SWEEP", help="folders holding runs")
    p.add_argument("--out", required=True, help="the PNG file")
    p.add_argument("--title", help="plot title")
    p.add_argument(
        "--metric", choices=("return", "mean_q"), default="return",
        help="return: the periodic greedy evaluation (default); mean_q: the critic's mean Q-value (train.csv)",
    )  # fmt: skip
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="one name per setting, in order")
    _add_algo_filter(p)
    p.set_defaults(func=_plot)

    p = subparsers.add_parser(
        "report",
        help="markdown table of final returns per setting: IQM [95%% CI], mean ± std",
        description="Print a markdown table of the final greedy return of each setting: IQM with its "
        "stratified-bootstrap 95% interval, mean ± std, the fraction of seeds above --threshold, the largest "
        "mean Q-value any run logged (beside max_reward / (1 - gamma) when the config declares max_reward), "
        "and time per run.",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_DIR_OR_SWEEP", help="folders holding runs")
    p.add_argument("--threshold", type=float, help="also give the fraction of seeds reaching this return")
    p.add_argument("--labels", nargs="+", metavar="LABEL", help="one name per setting, in order")
    _add_algo_filter(p)
    p.set_defaults(func=_report)


def _sweep(args: argparse.Namespace) -> int:
    from qiter.agent import agent_class, check_budget
    from qiter.config import config_from_dict
    from qiter.run_loop import check_env
    from qiter.runs import check_writable
    from qiter.studies.report import group_runs, load_runs, markdown_table, summarize
    from qiter.studies.sweep import parse_grid, parse_seeds, plan_sweep, run_sweep

    if args.jobs < 1:
        raise QiterError(f"--jobs must be at least 1, not {args.jobs}")
    algo = _agent_name(args)
    overrides = _algo_overrides(args)
    if args.steps is not None:
        overrides.append(f"n_timesteps={args.steps}")
    planned = plan_sweep(
        args.env_id, parse_seeds(args.seeds), parse_grid(args.grid), args.out, algo=algo,
        preset=args.preset, config_file=args.config, overrides=overrides, env_kwargs=env_kwargs(args),
    )  # fmt: skip
    agent_cls = agent_class(algo)
    check_env(config_from_dict(agent_cls.config_class, planned[0].config), agent_cls)
    for run in {r.setting: r for r in planned}.values():  # a budget that learns nothing: before any run
        try:
            check_budget(agent_cls, config_from_dict(agent_cls.config_class, run.config))
        except QiterError as exc:
            raise QiterError(f"setting {run.setting}: {exc}") from None
    check_writable(args.out, f"--out {args.out}")
    if args.storage is not None:
        from qiter.studies.storage import make_engine

        make_engine(args.storage).dispose()  # a bad URL: one line, before any folder exists
    settings = len({r.setting for r in planned})
    print(
        f"sweep of {len(planned)} {algo} runs ({settings} settings x {len(planned) // settings} seeds) in {args.out}"
    )
    results = run_sweep(
        planned, jobs=args.jobs, storage=args.storage, name=args.name, tensorboard=args.tensorboard,
        progress=not args.no_progress,
    )  # fmt: skip
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    print("runs: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    local = [r.run_dir for r in planned if (r.run_dir / "eval.json").is_file()]
    if local:
        groups = group_runs(load_runs(local))
        print(markdown_table(summarize(groups, args.threshold), args.threshold))
    return 0


def _add_algo_filter(parser: argparse.ArgumentParser) -> None:
    """``--algo`` and ``--discretize`` of plot and report: only the runs of that algorithm."""
    parser.add_argument(
        "--algo", choices=list(ALGO_HELP), help="only the runs of this algorithm (default: every run, "
        "grouped by algorithm and setting)",
    )  # fmt: skip
    parser.add_argument(
        "--discretize",
        action="store_true",
        help="with --algo dqn: only the runs of DQN on discretized actions",
    )


def _filter_algo(args: argparse.Namespace) -> str | None:
    """The algorithm whose runs ``--algo`` (and ``--discretize``) keep, ``None`` for every run."""
    if args.discretize and args.algo not in (None, "dqn"):
        raise QiterError(f"--discretize is for --algo dqn; {args.algo} acts on continuous actions directly")
    if args.discretize:
        return "dqn-discretized"
    return None if args.algo is None else str(args.algo)


def _algo_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` values, and the number of bins of ``--discretize``."""
    overrides = list(args.overrides)
    if args.discretize is not None:
        overrides.append(f"discretize={args.discretize}")
    return overrides


def _tune(args: argparse.Namespace) -> int:
    from qiter.runs import check_writable
    from qiter.studies.tune import TuneSettings, export_best, save_study_plots, trials_table, tune

    settings = TuneSettings(
        env_id=args.env_id, out=args.out, n_trials=args.trials, algo=_agent_name(args), budget=args.budget,
        preset=args.preset, config_file=args.config, overrides=_algo_overrides(args), seed=args.seed,
        env_kwargs=env_kwargs(args),
        storage=args.storage, study=args.study, pruner=args.pruner, heartbeat=args.heartbeat,
    )  # fmt: skip
    if args.export_best is not None:
        export_dir = Path(args.export_best).resolve().parent
        if not export_dir.exists() and export_dir != Path(args.out).resolve():
            raise QiterError(f"--export-best: folder {Path(args.export_best).parent} does not exist")
        check_writable(export_dir, f"--export-best {args.export_best}")
    study = tune(settings, jobs=args.jobs)
    print(f"study {study.study_name}: {trials_table(study)}")
    try:
        best = study.best_trial
        print(f"best: trial {best.number}, return {best.value:.1f}, {best.params}")
    except ValueError:
        print("no trial completed yet")
    if not args.no_plots:
        for path in save_study_plots(study, args.out):
            print(f"plot: {path}")
    if args.export_best is not None:
        print(f"best config: {export_best(study, args.export_best)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from qiter.studies.plots import plot_curves, plot_path
    from qiter.studies.report import group_runs, load_runs

    plot_path(args.out)  # a bad --out: one line now, not after the work
    groups = group_runs(load_runs(args.paths, _filter_algo(args)), args.labels)
    path = plot_curves(groups, args.out, args.title, args.metric)
    print(f"plot of {len(groups)} settings: {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from qiter.studies.report import group_runs, load_runs, markdown_table, summarize

    groups = group_runs(load_runs(args.paths, _filter_algo(args)), args.labels)
    print(markdown_table(summarize(groups, args.threshold), args.threshold))
    return 0
