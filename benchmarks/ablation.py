"""DQN ablation: plain DQN against each improvement alone and Rainbow-lite, over several seeds.

Every run is ``qiter.dqn.train(config, progress=False, verbose=0)`` and its ``eval_history`` (greedy
evaluation returns every ``evaluation_interval`` steps). The base config of each environment is its preset
(``CartPole-v1``, ``Acrobot-v1``) with every improvement turned off (mse loss, no gradient clipping, hard
target copies; the Acrobot preset uses Huber and clipping, which here is a variant of its own); a variant
changes only its own keys:

- ``dqn``: the base; ``double``: Double DQN targets; ``n-step-3``: 3-step returns (uncorrected);
- ``dueling``: dueling head; ``per``: proportional prioritized replay (alpha 0.6, beta 0.4 -> 1);
- ``huber+clip``: Huber loss and gradient norm clipping at 10; ``polyak``: target Polyak averaging every
  step with tau = 0.005 instead of hard copies;
- ``rainbow-lite``: double + 3-step + dueling + PER (alpha 0.5), as in ``CartPole-v1-rainbow-lite``.

Outputs (in ``--out``, default ``docs/ablation``): ``evaluations.csv`` (one row per evaluation of every run),
``runs.csv`` (one row per run), ``ablation.md`` (final return and mean of the last evaluations, mean ± std
over seeds) and ``ablation.png`` (mean evaluation return against steps with a bootstrap 95% confidence band
over seeds, one panel per environment).

Usage::

    python benchmarks/ablation.py                     # 5 seeds, CartPole-v1 and Acrobot-v1 (long)
    python benchmarks/ablation.py --seeds 3 --envs CartPole-v1 --variants dqn,double,rainbow-lite
    python benchmarks/ablation.py --smoke --out /tmp/ablation   # seconds: 1 seed, CartPole, tiny budget
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from qiter.config import config_from_dict, parse_overrides
from qiter.dqn import DQNConfig, train
from qiter.resolve import load_preset

ENVS = ("CartPole-v1", "Acrobot-v1")
# Keys that the variants turn on: the base config sets them all back to plain DQN.
PLAIN_DQN: dict[str, Any] = {
    "double_dqn": False,
    "n_steps": 1,
    "dueling": False,
    "prioritized_replay": False,
    "loss": "mse",
    "max_grad_norm": None,
    "tau": 1.0,
}
VARIANTS: dict[str, dict[str, Any]] = {
    "dqn": {},
    "double": {"double_dqn": True},
    "n-step-3": {"n_steps": 3},
    "dueling": {"dueling": True},
    "per": {"prioritized_replay": True},
    "huber+clip": {"loss": "huber", "max_grad_norm": 10.0},
    "polyak": {"tau": 0.005, "target_network_update_interval": 1},
    "rainbow-lite": {
        "double_dqn": True,
        "n_steps": 3,
        "dueling": True,
        "prioritized_replay": True,
        "per_alpha": 0.5,
    },
}
# Tiny budgets for --smoke: checks that every variant runs end to end, says nothing about learning.
SMOKE: dict[str, Any] = {
    "n_timesteps": 600,
    "learning_starts": 100,
    "evaluation_interval": 200,
    "n_eval_episodes": 2,
    "replay_buffer_size": 1000,
}


def make_config(env_id: str, variant: str, seed: int, extra: dict[str, Any] | None = None) -> DQNConfig:
    """The env's preset, with every improvement off, then the variant's keys, the seed and ``extra``.

    :param env_id: A preset name (``CartPole-v1``, ``Acrobot-v1``).
    :param variant: A key of :data:`VARIANTS`.
    :param seed: The run's seed.
    :param extra: Last overrides (budgets for ``--smoke`` or ``--n-timesteps``).
    """
    values = {**load_preset(env_id), **PLAIN_DQN, **VARIANTS[variant], "seed": seed, **(extra or {})}
    return config_from_dict(DQNConfig, values)


def bootstrap_band(
    curves: np.ndarray, rng: np.random.Generator, n_resamples: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap 95% confidence band of the mean over seeds, at each evaluation step.

    :param curves: Returns, shape (n_seeds, n_evaluations).
    :param rng: Random generator for the resampling.
    :return: Lower and upper bounds, shape (n_evaluations,).
    """
    n_seeds = curves.shape[0]
    # Resample whole seeds (the runs are the independent units, not the evaluation points).
    picks = rng.integers(0, n_seeds, size=(n_resamples, n_seeds))
    means = curves[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high


def run_all(
    envs: list[str], variants: list[str], seeds: list[int], extra: dict[str, Any], n_last: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every (env, variant, seed); returns the evaluation rows and the per-run rows."""
    eval_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    total = len(envs) * len(variants) * len(seeds)
    done = 0
    for env_id in envs:
        for variant in variants:
            for seed in seeds:
                config = make_config(env_id, variant, seed, extra)
                start = time.perf_counter()
                result = train(config, progress=False, verbose=0)
                wall = time.perf_counter() - start
                history = result.eval_history
                for e in history:
                    eval_rows.append({"env": env_id, "variant": variant, "seed": seed, **e})
                returns = [e["mean_return"] for e in history]
                final = returns[-1] if returns else float("nan")
                last = float(np.mean(returns[-n_last:])) if returns else float("nan")
                run_rows.append(
                    {"env": env_id, "variant": variant, "seed": seed, "final_return": final, "last_mean_return": last,
                     "steps": result.steps, "wall_time_s": wall, "steps_per_second": result.steps_per_second}
                )  # fmt: skip
                done += 1
                print(
                    f"[{done}/{total}] {env_id} {variant} seed {seed}: final {final:.1f}, last-{n_last} {last:.1f} ({wall:.0f}s)"
                )
    return eval_rows, run_rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(
    run_rows: list[dict[str, Any]], envs: list[str], variants: list[str], n_last: int, note: str
) -> str:
    """Final return and mean of the last evaluations, mean ± std over seeds, one table per env."""
    lines = ["# DQN ablation", "", note, ""]
    for env_id in envs:
        lines += [
            f"## {env_id}",
            "",
            f"| variant | final return | mean of last {n_last} evaluations | seeds | steps/s |",
            "|---|---|---|---|---|",
        ]
        for variant in variants:
            rows = [r for r in run_rows if r["env"] == env_id and r["variant"] == variant]
            if not rows:
                continue
            final = np.array([r["final_return"] for r in rows])
            last = np.array([r["last_mean_return"] for r in rows])
            sps = np.mean([r["steps_per_second"] for r in rows])
            lines.append(
                f"| {variant} | {final.mean():.1f} ± {final.std():.1f} | {last.mean():.1f} ± {last.std():.1f} "
                f"| {len(rows)} | {sps:,.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(
    eval_rows: list[dict[str, Any]], envs: list[str], variants: list[str], path: Path, seed: int = 0
) -> None:
    """Mean evaluation return against steps with a bootstrap 95% band over seeds, one panel per env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(envs), figsize=(6.5 * len(envs), 4.5), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for variant in variants:
            rows = [r for r in eval_rows if r["env"] == env_id and r["variant"] == variant]
            if not rows:
                continue
            seeds = sorted({r["seed"] for r in rows})
            steps = sorted({r["step"] for r in rows})
            table = {(r["seed"], r["step"]): r["mean_return"] for r in rows}
            # Every run evaluates at the same steps (no early stopping here); keep the steps all seeds have.
            steps = [s for s in steps if all((seed_, s) in table for seed_ in seeds)]
            curves = np.array([[table[(seed_, s)] for s in steps] for seed_ in seeds])
            mean = curves.mean(axis=0)
            (line,) = ax.plot(steps, mean, label=variant)
            if len(seeds) > 1:
                low, high = bootstrap_band(curves, rng)
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15)
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("DQN ablation: mean over seeds, bootstrap 95% band")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="DQN ablation: plain DQN vs each improvement vs Rainbow-lite."
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--envs", default=",".join(ENVS), help="comma-separated preset names")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, among {', '.join(VARIANTS)}"
    )
    parser.add_argument("--n-timesteps", type=int, default=None, help="override every env's step budget")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a key of every env's base config (e.g. n_hidden_units=64)",
    )
    parser.add_argument("--last", type=int, default=3, help="average the last N evaluations of each run")
    parser.add_argument("--out", type=Path, default=Path("docs/ablation"), help="output folder")
    parser.add_argument(
        "--smoke", action="store_true", help="1 seed, CartPole-v1, tiny budgets: a quick check"
    )
    args = parser.parse_args(argv)

    th.set_num_threads(1)
    envs = args.envs.split(",")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose among {list(VARIANTS)}")
    n_seeds = args.seeds
    extra: dict[str, Any] = {}
    if args.smoke:
        envs, n_seeds, extra = ["CartPole-v1"], 1, dict(SMOKE)
    if args.n_timesteps is not None:
        extra["n_timesteps"] = args.n_timesteps
    extra.update(parse_overrides(DQNConfig, args.overrides))
    seeds = list(range(n_seeds))

    eval_rows, run_rows = run_all(envs, variants, seeds, extra, args.last)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "evaluations.csv", eval_rows)
    write_csv(args.out / "runs.csv", run_rows)
    budgets = ", ".join(f"{e}: {make_config(e, 'dqn', 0, extra).n_timesteps:,} steps" for e in envs)
    note = (
        f"{len(seeds)} seed(s); {budgets}; base config = the env's preset with every improvement off"
        + (f" and {', '.join(args.overrides)}" if args.overrides else "")
        + ". "
        "± is the standard deviation over seeds. Made by `benchmarks/ablation.py`"
        + (" --smoke (tiny budgets: not a result)." if args.smoke else ".")
    )
    (args.out / "ablation.md").write_text(markdown_table(run_rows, envs, variants, args.last, note) + "\n")
    plot(eval_rows, envs, variants, args.out / "ablation.png")
    print(f"Wrote {args.out / 'ablation.md'}, {args.out / 'ablation.png'} and the CSV files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
