"""How often does a DQN preset end its run with a good network? Train it over seeds 0..N-1 and score each
run by a greedy evaluation of its FINAL network (not the best one seen during training).

    python scripts/stability.py                                   # CartPole-v1-stable vs CartPole-v1, 10 seeds
    python scripts/stability.py --out docs/stability_table.md     # the same, table written to a file
    python scripts/stability.py --preset CartPole-v1 --set learning_rate_final=0 --seeds 5 --no-baseline
    python scripts/stability.py --preset CartPole-v1 --seeds 5 --seed-start 10 --no-baseline  # screening seeds
    python scripts/stability.py --smoke                           # tiny budgets, to check the script itself

Training seeds are exactly 0..N-1 (``--seeds N``; ``--seed-start S`` shifts them to S..S+N-1, e.g. to screen
candidates on seeds that the final table does not use), whatever seed the preset sets. Each final network plays
``--eval-episodes`` greedy episodes starting from the evaluation seed ``10_000 + seed``, which no training run
uses (training resets from ``seed``, its periodic evaluations from ``seed + 1_000_003``). The preset runs as
a user would run it: if it stops early (``stop_at_return``), the network it stopped with is the one scored,
on fresh episodes, and the table's ``steps`` column shows where it stopped; ``--no-early-stop`` turns
``stop_at_return`` off so that every run trains for its full budget.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from results_table import cpu_name  # scripts/ is on the path when a script runs

from qiter.dqn import train
from qiter.dqn.presets import resolve_config
from qiter.dqn.trainer import greedy_actor
from qiter.envs import make_env
from qiter.evaluation import run_episodes

EVAL_SEED_OFFSET = 10_000
SMOKE_OVERRIDES = ["n_timesteps=2000", "evaluation_interval=0", "learning_starts=100"]


def run_one(
    preset: str, overrides: list[str], seed: int, eval_episodes: int, early_stop: bool = True
) -> dict[str, Any]:
    """Train ``preset`` (+ overrides) with training seed ``seed`` and evaluate its final network."""
    config = resolve_config(preset=preset, overrides=overrides, seed=seed)
    if not early_stop:
        config = dataclasses.replace(config, stop_at_return=None)
    start = time.perf_counter()
    result = train(config, None, progress=False, verbose=0, tensorboard=False)
    wall = time.perf_counter() - start
    env = make_env(config.env_id, flatten=True)
    returns = run_episodes(env, greedy_actor(result.q_net), eval_episodes, seed=EVAL_SEED_OFFSET + seed)
    env.close()
    periodic = [e["mean_return"] for e in result.eval_history]
    return {
        "seed": seed,
        "steps": result.steps,
        "final_return": float(returns.mean()),
        "final_std": float(returns.std()),
        "best_periodic": max(periodic) if periodic else None,
        "wall_time_s": wall,
    }


def _steps_range(rows: list[dict[str, Any]]) -> str:
    """The steps runs trained for: one number, or min-max when some stopped early."""
    steps = sorted(int(r["steps"]) for r in rows)
    return str(steps[0]) if steps[0] == steps[-1] else f"{steps[0]}-{steps[-1]}"


def run_preset(
    label: str,
    preset: str,
    overrides: list[str],
    seeds: range,
    eval_episodes: int,
    threshold: float,
    early_stop: bool = True,
) -> dict[str, Any]:
    """All seeds of one preset, printed as they finish."""
    rows = []
    for seed in seeds:
        row = run_one(preset, overrides, seed, eval_episodes, early_stop)
        best = row["best_periodic"]
        best_text = f", best periodic eval {best:.1f}" if best is not None else ""
        print(
            f"[{label}] seed {seed}: final {row['final_return']:.1f} +/- {row['final_std']:.1f}"
            f"{best_text} ({row['steps']} steps, {row['wall_time_s']:.1f} s)",
            flush=True,
        )
        rows.append(row)
    finals = np.array([r["final_return"] for r in rows])
    summary = {
        "label": label,
        "preset": preset,
        "overrides": overrides,
        "rows": rows,
        "n_good": int((finals >= threshold).sum()),
        "n_seeds": len(rows),
        "mean": float(finals.mean()),
        "std": float(finals.std()),
        "time_per_run_s": float(np.mean([r["wall_time_s"] for r in rows])),
    }
    print(
        f"[{label}] {summary['n_good']}/{summary['n_seeds']} seeds >= {threshold:g}; "
        f"final return {summary['mean']:.1f} ± {summary['std']:.1f}",
        flush=True,
    )
    return summary


def describe(preset: str, overrides: list[str]) -> str:
    return f"`{preset}`" + "".join(f" `{o}`" for o in overrides)


def markdown_table(results: list[dict[str, Any]], threshold: float, command: str) -> str:
    """Side-by-side table: one column per preset, one row per seed, then the summary rows."""
    seeds = [row["seed"] for row in results[0]["rows"]]
    lines = [
        f"Measured with `{command}` on {cpu_name()}, {th.get_num_threads()} torch thread, "
        f"torch {th.__version__}. Training seeds {seeds[0]}..{seeds[-1]}; each final network is evaluated greedily "
        f"over {results[0]['eval_episodes']} episodes from evaluation seed {EVAL_SEED_OFFSET} + seed.",
        "",
        "| | " + " | ".join(describe(r["preset"], r["overrides"]) for r in results) + " |",
        "| --- |" + " ---: |" * len(results),
    ]
    for i, seed in enumerate(seeds):
        cells = [f"{r['rows'][i]['final_return']:.1f}" for r in results]
        lines.append(f"| seed {seed} | " + " | ".join(cells) + " |")
    rows: list[tuple[str, list[str]]] = [
        (
            f"**seeds with final return ≥ {threshold:g}**",
            [f"**{r['n_good']}/{r['n_seeds']}**" for r in results],
        ),
        ("final return, mean ± std over seeds", [f"{r['mean']:.1f} ± {r['std']:.1f}" for r in results]),
    ]
    if all(row["best_periodic"] is not None for r in results for row in r["rows"]):
        rows.append(
            (
                f"seeds whose periodic evaluation reached ≥ {threshold:g} at some point",
                [
                    f"{sum(row['best_periodic'] >= threshold for row in r['rows'])}/{r['n_seeds']}"
                    for r in results
                ],
            )
        )
    rows += [
        ("training steps per run (min-max)", [_steps_range(r["rows"]) for r in results]),
        ("time per run (s)", [f"{r['time_per_run_s']:.1f}" for r in results]),
    ]
    for name, cells in rows:
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset", default="CartPole-v1-stable", help="preset A (default: CartPole-v1-stable)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="override key=value for preset A"
    )
    parser.add_argument("--baseline", default="CartPole-v1", help="preset B (default: CartPole-v1)")
    parser.add_argument(
        "--baseline-set", dest="baseline_overrides", action="append", default=[],
        help="override key=value for preset B",
    )  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="only preset A")
    parser.add_argument("--seeds", type=int, default=10, help="train with seeds 0..N-1 (default: 10)")
    parser.add_argument("--seed-start", type=int, default=0, help="first training seed (default: 0)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes of the final evaluation")
    parser.add_argument("--threshold", type=float, default=475.0, help="a 'good' final return (default: 475)")
    parser.add_argument("--out", help="write the markdown table to this file (default: print only)")
    parser.add_argument("--log", help="append one JSON line per preset (per-seed results) to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: 2 seeds, 2000 steps, 2 episodes")
    parser.add_argument(
        "--no-early-stop", action="store_true", help="turn stop_at_return off: every run uses its full budget"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    command = "python scripts/stability.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.smoke:
        args.seeds, args.eval_episodes = 2, 2
        args.overrides = args.overrides + SMOKE_OVERRIDES
        args.baseline_overrides = args.baseline_overrides + SMOKE_OVERRIDES

    plan = [("A", args.preset, args.overrides)]
    if not args.no_baseline:
        plan.append(("B", args.baseline, args.baseline_overrides))
    results = []
    for label, preset, overrides in plan:
        seeds = range(args.seed_start, args.seed_start + args.seeds)
        summary = run_preset(
            label, preset, overrides, seeds, args.eval_episodes, args.threshold, not args.no_early_stop
        )
        summary["eval_episodes"] = args.eval_episodes
        results.append(summary)
        if args.log:
            with open(args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps(summary) + "\n")

    table = markdown_table(results, args.threshold, command.strip())
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
