"""Environment throughput on the CPU: qiter's array environments (numpy and torch) against gymnasium's own
vectorized CartPole and EnvPool, for 1 to 1,024 copies, measured in one process and run.

Every variant steps ``n`` copies of the environment with uniformly random actions, finished copies
resetting on their own, and the figure is environment steps per second summed over the copies. One thread
everywhere (BLAS, torch, EnvPool's pool), as in the population's processes.

EnvPool is not a qiter dependency: it is measured when it can be imported (``pip install envpool`` in a
scratch environment, then ``PYTHONPATH`` to its site-packages), skipped otherwise.

Usage::

    python benchmarks/bench_array_envs.py                          # CartPole-v1, 1 to 1,024 copies
    python benchmarks/bench_array_envs.py --env Acrobot-v1 --copies 1,64,1024
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from threadpoolctl import threadpool_limits

from qiter.core.arrays import NumpyOps, Ops, TorchOps
from qiter.population.array_envs import make_array_env


def _rate(step: Callable[[Any], object], actions: list[Any], n: int, seconds: float) -> float:
    """Steps per second of ``n`` copies: ``step`` called with ``actions`` in turn for about ``seconds``
    after a warm-up."""
    cycle = itertools.cycle(actions)
    for _ in range(20):
        step(next(cycle))
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            step(next(cycle))
        calls += 20
    return n * calls / (time.perf_counter() - start)


def qiter_env(env_id: str, n: int, ops: Ops, seconds: float) -> float:
    env = make_array_env(env_id, n, ops)
    env.reset()
    assert env.n_actions is not None
    rng = np.random.default_rng(0)
    actions = [ops.asarray(rng.integers(0, env.n_actions, n), "int64") for _ in range(64)]
    return _rate(env.step, actions, n, seconds)


def gymnasium_vector(env_id: str, n: int, seconds: float) -> float | None:
    """gymnasium's vectorized implementation where it has one (``vector_entry_point``: CartPole), else
    ``SyncVectorEnv`` of ``n`` ordinary envs."""
    try:
        env = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point")
    except Exception:
        env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync")
    env.reset(seed=0)
    env.action_space.seed(0)
    return _rate(env.step, [env.action_space.sample() for _ in range(64)], n, seconds)


def envpool_env(env_id: str, n: int, seconds: float) -> float | None:
    try:
        import envpool
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = envpool.make_gymnasium(env_id, num_envs=n, batch_size=n, num_threads=1, seed=0)
    env.reset()
    n_actions = int(env.action_space.n)
    rng = np.random.default_rng(0)
    return _rate(env.step, [rng.integers(0, n_actions, n).astype(np.int32) for _ in range(64)], n, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--copies", default="1,16,64,256,1024", help="comma-separated numbers of copies")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    threadpool_limits(1)
    th.set_num_threads(1)
    print(
        f"# bench_array_envs: {args.env}, random actions, one thread; load average {os.getloadavg()[0]:.2f}"
    )
    print("| copies | qiter numpy | qiter torch (CPU) | gymnasium vector | EnvPool | fastest |")
    print("|---:|---:|---:|---:|---:|---|")
    for n in (int(x) for x in args.copies.split(",")):
        rates = {
            "qiter numpy": qiter_env(args.env, n, NumpyOps(), args.seconds),
            "qiter torch (CPU)": qiter_env(args.env, n, TorchOps("cpu"), args.seconds),
            "gymnasium vector": gymnasium_vector(args.env, n, args.seconds),
            "EnvPool": envpool_env(args.env, n, args.seconds),
        }
        cells = [f"{r:,.0f}" if r is not None else "(not installed)" for r in rates.values()]
        fastest = max((k for k in rates if rates[k] is not None), key=lambda k: rates[k] or 0.0)
        print(f"| {n} | {' | '.join(cells)} | {fastest} |", flush=True)


if __name__ == "__main__":
    main()
