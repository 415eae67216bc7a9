"""Time one TD3 gradient step (400x300 networks, batch 256) of qiter and of Stable-Baselines3 in alternating
blocks, so that both see the same machine load (a shared machine's load swings more than the difference).

    python benchmarks/td3_update_interleaved.py --blocks 6 --steps 20
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    th.set_num_threads(1)
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


if __name__ == "__main__":
    main()
