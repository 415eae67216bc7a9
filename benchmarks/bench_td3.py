"""TD3 on Pendulum-v1 with the RL Zoo's settings: qiter, Stable-Baselines3 and a CleanRL-style reference loop
(``td3_reference.py``), in one process, one after the other, printing steps per second, the ratios and the
final greedy return of each.

    python benchmarks/bench_td3.py                 # the Zoo's 20k steps (10k of them learning), seed 0
    python benchmarks/bench_td3.py --quick         # 3000 steps, learning from step 1000: speed only
    python benchmarks/bench_td3.py --threads 2     # torch threads (default 1, as the DQN benchmark)

The Zoo's TD3 uses 400x300 networks and a batch of 256: most of a step is matrix arithmetic, so the
frameworks' overhead matters less here than in the DQN benchmark (see docs/continuous.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).parent))

from td3_reference import ReferenceSettings, train_reference

from qiter.continuous.ddpg import TD3Agent
from qiter.resolve import preset_folder, resolve_config
from qiter.run_loop import train


def greedy_return(act, n_episodes: int = 10, seed: int = 10_000) -> float:  # type: ignore[no-untyped-def]
    """Mean return of ``act`` (observation -> env action) over full Pendulum episodes."""
    env = gym.make("Pendulum-v1")
    returns = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def bench_qiter(steps: int, learning_starts: int, seed: int) -> tuple[float, float]:
    config = resolve_config(
        None, "Pendulum-v1", seed=seed, cls=TD3Agent.config_class, presets=preset_folder("td3"),
        overrides=[f"n_timesteps={steps}", f"learning_starts={learning_starts}", "evaluation_interval=0"],
    )  # fmt: skip
    start = time.perf_counter()
    result = train(TD3Agent, config, None, progress=False, verbose=0, final_eval_episodes=0)
    seconds = time.perf_counter() - start
    return seconds, greedy_return(result.agent.greedy_actor())


def bench_sb3(steps: int, learning_starts: int, seed: int) -> tuple[float, float]:
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    env = gym.make("Pendulum-v1")
    model = TD3(
        "MlpPolicy", env, learning_rate=1e-3, buffer_size=200_000, learning_starts=learning_starts,
        batch_size=256, tau=0.005, gamma=0.98, train_freq=1, gradient_steps=1,
        action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)), policy_kwargs={"net_arch": [400, 300]},
        seed=seed, device="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    return seconds, greedy_return(lambda obs: model.predict(obs, deterministic=True)[0])


def bench_reference(steps: int, learning_starts: int, seed: int) -> tuple[float, float]:
    settings = ReferenceSettings(n_timesteps=steps, learning_starts=learning_starts, seed=seed)
    seconds, actor, scale, bias = train_reference(settings)

    def act(obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            return actor(th.as_tensor(obs, dtype=th.float32)).numpy() * scale + bias

    return seconds, greedy_return(act)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="3000 steps, learning from step 1000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="qiter,sb3,reference")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.learning_starts = 3000, 1000
    th.set_num_threads(args.threads)
    benches = {"qiter": bench_qiter, "sb3": bench_sb3, "reference": bench_reference}
    results: dict[str, tuple[float, float]] = {}
    for name in args.variants.split(","):
        results[name] = benches[name](args.steps, args.learning_starts, args.seed)
        seconds, ret = results[name]
        print(f"{name:>10}: {args.steps / seconds:7.1f} steps/s ({seconds:.1f} s), final greedy return {ret:.1f}",
              flush=True)  # fmt: skip
    learning = args.steps - args.learning_starts
    print(f"({args.steps} steps, {learning} of them with a gradient step; torch threads {args.threads})")
    if "qiter" in results:
        for name, (seconds, _) in results.items():
            if name != "qiter":
                print(f"qiter / {name}: {seconds / results['qiter'][0]:.2f}x steps per second")


if __name__ == "__main__":
    main()
