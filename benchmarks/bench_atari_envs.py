"""Atari environment copies: qiter's gymnasium vector env against ale-py's C++ ``AtariVectorEnv``.

qiter steps ``n_envs`` Atari copies as a gymnasium ``SyncVectorEnv`` of its own preprocessing
(``qiter.pixel_envs.make_atari_env``: no-op starts, frame skip 4 with max-pooling, 84x84 grayscale, a stack
of 4, end of life as an episode end for learning, FIRE at reset). ale-py 0.10+ ships ``AtariVectorEnv``,
which does the same preprocessing in C++ over a thread pool. The issue asks to use the latter if it is
measured faster; this prints both, in environment steps per second with random actions, in one run.

    python benchmarks/bench_atari_envs.py                      # Pong, 1 and 4 copies, 2000 steps each
    python benchmarks/bench_atari_envs.py --copies 1,4,8 --steps 4000 --threads 1,2
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np

from qiter.envs import make_env


def qiter_vector_env(env_id: str, n: int) -> gym.vector.VectorEnv:
    """The vector env ``qiter train --set n_envs=N`` steps (``qiter.run_loop.VectorEnvs``'s)."""
    return gym.vector.SyncVectorEnv(
        [lambda: make_env(env_id)] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )


def ale_vector_env(game: str, n: int, threads: int) -> gym.vector.VectorEnv:
    """ale-py's C++ vector env with the same preprocessing and sticky actions as ``ALE/<Game>-v5``."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        game, n, num_threads=threads, repeat_action_probability=0.25, episodic_life=True,
        reward_clipping=False, noop_max=30, use_fire_reset=True,
    )  # fmt: skip


def steps_per_second(env: gym.vector.VectorEnv, steps: int, seed: int = 0) -> float:
    """Environment steps per second (copies x vector steps) with uniform random actions."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    n, n_actions = env.num_envs, int(env.single_action_space.n)  # type: ignore[attr-defined]
    for _ in range(50):  # warm up
        env.step(rng.integers(n_actions, size=n))
    start = time.perf_counter()
    for _ in range(steps // n):
        env.step(rng.integers(n_actions, size=n))
    return n * (steps // n) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--game", default="pong", help="ale-py's game name (qiter plays ALE/<Game>-v5)")
    parser.add_argument("--copies", default="1,4", help="comma-separated numbers of copies")
    parser.add_argument("--steps", type=int, default=2000, help="environment steps per measurement")
    parser.add_argument("--threads", default="1,2", help="AtariVectorEnv thread counts to measure")
    args = parser.parse_args()
    env_id = f"ALE/{args.game.title()}-v5"
    print(f"{platform.processor() or platform.machine()}; {env_id}; random actions; {args.steps} steps each")
    print(
        "| copies | qiter SyncVectorEnv steps/s | AtariVectorEnv steps/s (threads) | AtariVectorEnv / qiter |"
    )
    print("| ---: | ---: | --- | --- |")
    for n in (int(c) for c in args.copies.split(",")):
        env = qiter_vector_env(env_id, n)
        ours = steps_per_second(env, args.steps)
        env.close()
        theirs = {}
        for threads in (int(t) for t in args.threads.split(",")):
            env = ale_vector_env(args.game, n, threads)
            theirs[threads] = steps_per_second(env, args.steps)
            env.close()
        rates = ", ".join(f"{v:,.0f} ({t})" for t, v in theirs.items())
        ratios = ", ".join(f"{v / ours:.2f}x ({t})" for t, v in theirs.items())
        print(f"| {n} | {ours:,.0f} | {rates} | {ratios} |")


if __name__ == "__main__":
    main()
