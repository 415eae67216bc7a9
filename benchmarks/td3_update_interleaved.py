"""Time one TD3 gradient step (400x300 networks, batch 256) of qiter and of Stable-Baselines3 in alternating
blocks, so that both see the same machine load (a shared machine's load swings more than the difference),
then the ceiling: the step's floating-point operations (torch's flop counter, on qiter's step) over the
rate of this machine's matrix product at the 400x300 layer's shape, on one thread and on every core.

    python benchmarks/td3_update_interleaved.py --blocks 6 --steps 20
    python benchmarks/td3_update_interleaved.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from qiter.continuous.config import TD3Config
from qiter.continuous.ddpg import TD3Agent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20, help="gradient steps per block")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both (default 1)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    from stable_baselines3 import TD3

    env = gym.make("Pendulum-v1")
    sb3 = TD3("MlpPolicy", env, learning_starts=2000, batch_size=256, gamma=0.98, policy_kwargs={"net_arch": [400, 300]},
              seed=0, device="cpu")  # fmt: skip
    sb3.learn(total_timesteps=2000)  # fills its buffer with random actions, no gradient step yet
    agent = TD3Agent(TD3Config(gamma=0.98, learning_starts=0), env.observation_space, env.action_space)
    assert isinstance(env.action_space, spaces.Box)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        agent.buffer.add(rng.normal(size=(1, 3)), rng.normal(size=(1, 3)), rng.uniform(-1, 1, (1, 1)),
                         rng.normal(size=1), np.zeros(1, bool), np.zeros(1, bool))  # fmt: skip
    times: dict[str, list[float]] = {"qiter": [], "sb3": []}
    step = 10**6
    for _ in range(args.blocks):
        start = time.perf_counter()
        for _ in range(args.steps):
            step += 1
            agent.update(step)
        times["qiter"].append((time.perf_counter() - start) / args.steps)
        start = time.perf_counter()
        sb3.train(gradient_steps=args.steps, batch_size=256)
        times["sb3"].append((time.perf_counter() - start) / args.steps)
    for name, values in times.items():
        print(
            f"{name:>6}: {1e3 * np.median(values):.1f} ms per gradient step (median of {len(values)} blocks)"
        )
    ratios = np.array(times["sb3"]) / np.array(times["qiter"])
    print(
        f"sb3 / qiter time per step, per block: {', '.join(f'{r:.2f}' for r in ratios)}; median {np.median(ratios):.2f}"
    )

    flop = step_flop(agent)
    print(
        f"qiter's gradient step: {flop / 1e6:.0f} MFLOP of matrix products (torch.utils.flop_counter; one actor step in two)"
    )
    for threads in sorted({args.threads, os.cpu_count() or 1}):
        rate = matmul_rate(threads)
        ceiling = flop / rate
        print(
            f"matrix products of 256x400 by 400x300 on {threads} thread(s): {rate / 1e9:.0f} GFLOP/s; "
            f"a step at that rate throughout: {1e3 * ceiling:.1f} ms, "
            f"{np.median(times['sb3']) / ceiling:.2f}x SB3's measured step"
        )


def step_flop(agent: TD3Agent) -> float:
    """Floating-point operations of one gradient step, averaged over two (TD3's actor steps every other)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        for step in (2 * 10**7 + 1, 2 * 10**7 + 2):
            agent.update(step)
    return counter.get_total_flops() / 2


def matmul_rate(threads: int, repeats: int = 2000) -> float:
    """FLOP/s of ``torch.mm`` at the critic's largest layer (batch 256, 400 -> 300): the best of 3 timings."""
    th.set_num_threads(threads)
    a, b = th.randn(256, 400), th.randn(400, 300)
    out = th.empty(256, 300)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            th.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * 256 * 400 * 300 * repeats / best


if __name__ == "__main__":
    main()
