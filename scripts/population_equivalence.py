"""Does a population agent learn like a single qiter agent with the same config?

Trains ``--seeds`` single agents (``qiter.dqn.train``, the numpy fast path, seeds 0..S-1) and one population
of as many agents (``qiter.population.train``, agent i seeded i) on CartPole-v1 with the seed's settings
(the ``CartPole-v1`` preset, 80k steps), then compares the final greedy evaluation (10 episodes each):
the fraction of agents at 500 (Wilson 95% interval) and the mean final return (95% bootstrap interval),
with the difference of the two and its interval.

Usage::

    python scripts/population_equivalence.py --seeds 32            # the study in docs/population.md
    python scripts/population_equivalence.py --seeds 4 --steps 5000  # a smoke run
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from qiter.population.train import train as train_population
from qiter.resolve import resolve_config


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def bootstrap_mean(x: np.ndarray, reps: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, reps: int = 10_000, seed: int = 1
) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b) (independent samples)."""
    rng = np.random.default_rng(seed)
    da = a[rng.integers(0, len(a), (reps, len(a)))].mean(axis=1)
    db = b[rng.integers(0, len(b), (reps, len(b)))].mean(axis=1)
    low, high = np.percentile(da - db, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=80_000)
    parser.add_argument("--out", help="also save the per-agent returns to this .npz")
    args = parser.parse_args()
    from qiter.dqn.trainer import train as train_single

    config = resolve_config("CartPole-v1", overrides=[f"n_timesteps={args.steps}"], seed=0)
    print(f"# population_equivalence: CartPole-v1 preset, {args.steps} steps, {args.seeds} seeds; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    population = train_population(config, args.seeds)
    pop_returns = population.final_returns
    print(f"population: {time.perf_counter() - t0:.0f} s", flush=True)
    single_returns = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        cfg = resolve_config("CartPole-v1", overrides=[f"n_timesteps={args.steps}"], seed=seed)
        with tempfile.TemporaryDirectory() as folder:
            result = train_single(cfg, folder, progress=False, verbose=0, tensorboard=False)
        assert result.final_evaluation is not None
        single_returns.append(result.final_evaluation.mean_return)
        print(f"single seed {seed}: {single_returns[-1]:.1f}", flush=True)
    print(f"single agents: {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f}")
    singles = np.array(single_returns)
    print("\n| runs | agents | fraction at 500 [Wilson 95%] | mean final return [bootstrap 95%] |")
    print("|---|---:|---:|---:|")
    for name, x in (("single qiter agents", singles), ("one population", pop_returns)):
        k = int(np.sum(x >= 500.0))
        lo, hi = wilson(k, len(x))
        mlo, mhi = bootstrap_mean(x)
        print(f"| {name} | {len(x)} | {k}/{len(x)} = {k / len(x):.2f} [{lo:.2f}, {hi:.2f}] | "
              f"{x.mean():.1f} [{mlo:.1f}, {mhi:.1f}] |")  # fmt: skip
    dlo, dhi = bootstrap_difference(pop_returns, singles)
    frac_diff = np.mean(pop_returns >= 500) - np.mean(singles >= 500)
    print(f"\npopulation - single: mean final return {pop_returns.mean() - singles.mean():+.1f} "
          f"[{dlo:+.1f}, {dhi:+.1f}], fraction at 500 {frac_diff:+.2f}")  # fmt: skip
    if args.out:
        np.savez(args.out, single=singles, population=pop_returns)


if __name__ == "__main__":
    main()
