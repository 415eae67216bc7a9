"""Train the shipped DQN presets over several seeds and write the results table of the docs.

    python scripts/results_table.py                      # CartPole-v1, Acrobot-v1, LunarLander-v3, 3 seeds
    python scripts/results_table.py --envs CartPole-v1 --seeds 5 --out docs/results.md
    python scripts/results_table.py --envs CartPole-v1-stable    # any preset name
    python scripts/results_table.py --smoke              # tiny budgets, to check the script itself

Each run uses the preset named like the env with its own step budget, the seed ``preset seed + i``, and is
scored by a final greedy evaluation (``--eval-episodes``, on evaluation seeds that no training run saw).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th

from qiter.dqn import train
from qiter.dqn.presets import resolve_config
from qiter.dqn.trainer import greedy_actor
from qiter.envs import make_env
from qiter.evaluation import run_episodes

DEFAULT_ENVS = ("CartPole-v1", "Acrobot-v1", "LunarLander-v3")


def cpu_name() -> str:
    """The processor's model name, for the table's header."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_one(
    env_id: str, seed_offset: int, eval_episodes: int, overrides: list[str], runs_root: Path
) -> dict[str, float]:
    """Train one preset with one seed and evaluate the final network."""
    base = resolve_config(preset=env_id, overrides=overrides)
    config = resolve_config(preset=env_id, overrides=overrides, seed=base.seed + seed_offset)
    start = time.perf_counter()
    result = train(
        config, runs_root / f"{env_id}-{config.seed}", progress=False, verbose=0, tensorboard=False
    )
    wall = time.perf_counter() - start
    env = make_env(config.env_id, flatten=True)
    returns = run_episodes(env, greedy_actor(result.q_net), eval_episodes, seed=10_000 + config.seed)
    env.close()
    return {
        "seed": config.seed,
        "steps": result.steps,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "wall_time_s": wall,
        "steps_per_second": result.steps_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--envs",
        nargs="+",
        default=list(DEFAULT_ENVS),
        help="presets to run (an env id names its own preset)",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per env (default: 3)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="episodes of the final evaluation")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config override key=value"
    )
    parser.add_argument("--out", help="write the markdown table to this file too")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny budgets: CartPole only, 1 seed, 2000 steps"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    if args.smoke:
        args.envs, args.seeds, args.eval_episodes = ["CartPole-v1"], 1, 2
        args.overrides += ["n_timesteps=2000", "evaluation_interval=0"]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.envs:
            for i in range(args.seeds):
                row = run_one(env_id, i, args.eval_episodes, args.overrides, Path(tmp))
                print(
                    f"{env_id} seed {row['seed']}: {row['mean_return']:.1f} +/- {row['std_return']:.1f} "
                    f"({row['steps']} steps in {row['wall_time_s']:.1f} s)",
                    flush=True,
                )
                rows.append((env_id, row))

    lines = [
        f"Measured with `python scripts/results_table.py {' '.join(sys.argv[1:])}` on {cpu_name()}, "
        f"{th.get_num_threads()} torch thread, torch {th.__version__}.",
        "",
        "| preset | steps (longest run) | seeds | final return, mean ± std over seeds | per seed | time per run (s) |",
        "| --- | ---: | ---: | --- | --- | ---: |",
    ]
    for env_id in args.envs:
        env_rows = [r for e, r in rows if e == env_id]
        means = np.array([r["mean_return"] for r in env_rows])
        per_seed = ", ".join(f"{m:.1f}" for m in means)
        times = np.mean([r["wall_time_s"] for r in env_rows])
        lines.append(
            f"| {env_id} | {max(int(r['steps']) for r in env_rows)} | {len(env_rows)} | {means.mean():.1f} ± {means.std():.1f} "
            f"| {per_seed} | {times:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
