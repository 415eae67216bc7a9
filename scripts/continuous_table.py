"""Train the continuous-action presets over several seeds and write the results table of docs/continuous.md.

    python scripts/continuous_table.py                                  # every Pendulum-v1 preset, seeds 0 1 2
    python scripts/continuous_table.py --runs td3/Pendulum-v1 ddpg/Pendulum-v1 --steps 50000
    python scripts/continuous_table.py --smoke                          # tiny budgets, to check the script
    python scripts/continuous_table.py --plot-only runs.jsonl --plot curves.png  # curves of finished runs

Each run uses a preset (``algo/NAME`` as ``qiter presets`` lists it) with its own step budget unless
``--steps`` is given, and is scored by the final greedy evaluation of the run loop (10 episodes on seeds no
training run saw). Every finished run is appended at once to ``--jsonl`` (one JSON object a line, with its
learning curve), so a long table that is cut short keeps what it made; the Markdown table is printed at the
end and written to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch as th

from qiter.agent import agent_class
from qiter.resolve import preset_folder, resolve_config
from qiter.run_loop import train

DEFAULT_RUNS = (
    "td3/Pendulum-v1",
    "ddpg/Pendulum-v1",
    "naf/Pendulum-v1",
    "cem/Pendulum-v1",
    "dqn-discretized/Pendulum-v1",
)


def run_one(
    preset: str,
    seed: int,
    steps: int | None,
    eval_episodes: int,
    run_dirs: Path | None = None,
    learning_starts: int | None = None,
) -> dict[str, object]:
    """Train one preset with one seed; return its final return, wall time and learning curve.

    :param run_dirs: If given, each run keeps its folder (logs, ``best.pt``, ``latest.pt``) in here, named
        ``<algo>-<NAME>-<seed>``; otherwise nothing is written.
    :param learning_starts: Override the preset's (``--smoke``: a budget that learns something).
    """
    algo, _, name = preset.partition("/")
    cls = agent_class(algo)
    overrides = [f"n_timesteps={steps}"] if steps is not None else []
    if learning_starts is not None:
        overrides.append(f"learning_starts={learning_starts}")
    config = resolve_config(
        None, name, overrides=overrides, seed=seed, cls=cls.config_class, presets=preset_folder(algo)
    )
    start = time.perf_counter()
    run_dir = run_dirs / f"{algo}-{name}-{seed}" if run_dirs is not None else None
    result = train(cls, config, run_dir, progress=False, verbose=0, final_eval_episodes=eval_episodes)
    assert result.final_evaluation is not None
    return {
        "preset": preset,
        "seed": seed,
        "steps": result.steps,
        "final_return": result.final_evaluation.mean_return,
        "wall_time_s": time.perf_counter() - start,
        "curve": [(int(e["step"]), float(e["mean_return"])) for e in result.eval_history],
    }


def table(rows: list[dict[str, object]]) -> str:
    """The Markdown table: one line per (preset, steps), mean +- std of the final returns over the seeds."""
    lines = [
        "| algorithm / preset | steps | final return, mean ± std | seeds | time per run (s) |",
        "| --- | ---: | --- | --- | ---: |",
    ]
    groups: dict[tuple[str, int], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((str(row["preset"]), int(str(row["steps"]))), []).append(row)
    for (preset, steps), group in groups.items():
        returns = np.array([float(str(r["final_return"])) for r in group])
        times = np.array([float(str(r["wall_time_s"])) for r in group])
        seeds = ",".join(str(r["seed"]) for r in group)
        lines.append(
            f"| {preset} | {steps} | {returns.mean():.1f} ± {returns.std():.1f} | {seeds} | {times.mean():.0f} |"
        )
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, object]], out: str, title: str | None = None) -> None:
    """Learning curves per preset: the mean over seeds, with the range of the seeds as a band.

    With 3 seeds an interquartile mean or a bootstrap interval says little; the band shows every seed.

    :param title: What the plot shows (default: the presets' names after ``algo/``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for preset in dict.fromkeys(str(r["preset"]) for r in rows):
        curves = [np.asarray(r["curve"], dtype=float) for r in rows if r["preset"] == preset]
        length = min(len(c) for c in curves)
        steps = curves[0][:length, 0]
        returns = np.stack([c[:length, 1] for c in curves])
        seeds = f"{len(curves)} seed" + ("s" if len(curves) > 1 else "")
        (line,) = ax.plot(steps, returns.mean(axis=0), label=f"{preset} ({seeds})")
        ax.fill_between(steps, returns.min(axis=0), returns.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return")
    if title is None:
        title = ", ".join(sorted({str(r["preset"]).split("/", 1)[-1] for r in rows}))
    ax.set_title(f"{title}: mean over seeds; band: lowest to highest seed")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="presets as algo/NAME")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="step budget of every run (default: each preset's)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--jsonl", default="continuous_runs.jsonl", help="append each finished run here")
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--run-dirs", type=Path, help="keep each run's folder (checkpoints, logs) in here")
    parser.add_argument("--smoke", action="store_true", help="300 steps, one seed, 1 evaluation episode")
    parser.add_argument("--plot", help="also draw the runs' learning curves to this PNG")
    parser.add_argument("--title", help="the plot's title (default: the presets' names)")
    parser.add_argument(
        "--plot-only",
        nargs="+",
        metavar="JSONL",
        help="draw --plot from these files of finished runs, train nothing",
    )
    args = parser.parse_args()
    if args.plot_only:
        rows_read = [
            json.loads(line)
            for name in args.plot_only
            for line in Path(name).read_text().splitlines()
            if line
        ]
        # A run repeated in two files (same preset and seed: the same numbers) counts once.
        finished = list({(r["preset"], r["seed"]): r for r in rows_read}.values())
        plot_curves(finished, args.plot or "continuous_curves.png", args.title)
        print(table(finished))
        return
    if args.smoke:
        args.steps, args.seeds, args.eval_episodes = 300, args.seeds[:1], 1
    th.set_num_threads(1)  # comparable times on a shared machine, as the DQN tables
    rows = []
    for preset in args.runs:
        for seed in args.seeds:
            # A smoke run learns from step 100: its 300 steps are under every preset's learning_starts.
            row = run_one(
                preset, seed, args.steps, args.eval_episodes, args.run_dirs, 100 if args.smoke else None
            )
            rows.append(row)
            with Path(args.jsonl).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{preset} seed {seed}: {row['final_return']:.1f} in {row['wall_time_s']:.0f} s", flush=True
            )
    text = table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if args.plot:
        plot_curves(rows, args.plot, args.title)


if __name__ == "__main__":
    main()
