"""Stable-Baselines3's TD3 with the same settings as a qiter TD3 preset, scored the way qiter scores a run.

A same-machine reference for the results table of docs/continuous.md: when a preset falls short of the RL
Zoo's published figure, is it qiter or the task? SB3 trains with the preset's hyperparameters (the Zoo's),
and its greedy policy is evaluated with qiter's own protocol: ``n_eval_episodes`` every
``evaluation_interval`` steps on an evaluation environment seeded once with ``seed + 1,000,003``, as the run
loop does, then the final evaluation on a fresh one seeded ``seed + 10,000``. The run is appended to ``--jsonl`` in the format of ``scripts/continuous_table.py``,
so ``--plot-only`` draws it beside qiter's runs.

    python scripts/sb3_td3_reference.py LunarLanderContinuous-v3 --seed 0 --eval-episodes 20 --jsonl sb3.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

from qiter.agent import agent_class
from qiter.continuous.config import ActorCriticConfig
from qiter.evaluation import run_episodes
from qiter.resolve import preset_folder, resolve_config
from qiter.run_loop import EVAL_SEED_OFFSET, FINAL_EVAL_SEED_OFFSET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="a qiter td3 preset, e.g. LunarLanderContinuous-v3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the preset")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes of the final evaluation")
    parser.add_argument("--jsonl", default="sb3_runs.jsonl", help="append the finished run here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    th.set_num_threads(args.threads)
    cls = agent_class("td3")
    overrides = [*args.set, *([f"n_timesteps={args.steps}"] if args.steps is not None else [])]
    cfg = resolve_config(
        None, args.env_id, overrides=overrides, seed=args.seed, cls=cls.config_class, presets=preset_folder("td3")
    )  # fmt: skip
    assert isinstance(cfg, ActorCriticConfig)
    if cfg.exploration_noise != "normal":
        raise SystemExit("sb3_td3_reference: only presets with Gaussian exploration noise")
    env = gym.make(cfg.env_id)
    n_actions = int(np.prod(env.action_space.shape or (1,)))
    model = TD3(
        "MlpPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.replay_buffer_size,
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
        train_freq=(cfg.update_interval, "episode" if cfg.update_unit == "episodes" else "step"),
        gradient_steps=cfg.gradient_steps, policy_delay=cfg.policy_delay,
        target_policy_noise=cfg.target_policy_noise, target_noise_clip=cfg.target_noise_clip,
        action_noise=NormalActionNoise(np.zeros(n_actions), cfg.exploration_noise_std * np.ones(n_actions)),
        policy_kwargs={"net_arch": [int(s) for s in cfg.hidden_sizes.split(",")]},
        seed=args.seed, device="cpu",
    )  # fmt: skip

    def act(obs: np.ndarray) -> np.ndarray:
        return model.predict(obs, deterministic=True)[0]

    eval_env = gym.make(cfg.env_id)
    eval_env.reset(seed=cfg.seed + EVAL_SEED_OFFSET)
    curve: list[list[float]] = []
    start = time.perf_counter()
    step = 0
    while step < cfg.n_timesteps:
        # An episode schedule collects whole episodes, so SB3 may pass the evaluation's step: the curve
        # records the step it reached.
        target = min(step + cfg.evaluation_interval, cfg.n_timesteps)
        model.learn(total_timesteps=target - step, reset_num_timesteps=step == 0)
        step = model.num_timesteps
        returns = run_episodes(eval_env, act, cfg.n_eval_episodes)
        curve.append([step, float(returns.mean())])
        print(f"step {step}: mean return {returns.mean():.2f} +/- {returns.std():.2f}", flush=True)
    wall = time.perf_counter() - start
    final_env = gym.make(cfg.env_id)
    final = run_episodes(final_env, act, args.eval_episodes, seed=cfg.seed + FINAL_EVAL_SEED_OFFSET)
    print(f"final: {final.mean():.2f} +/- {final.std():.2f} over {args.eval_episodes} episodes, {wall:.0f} s")
    row = {
        "preset": f"sb3-td3/{cfg.env_id}",
        "seed": args.seed,
        "steps": step,
        "final_return": round(float(final.mean()), 2),
        "wall_time_s": round(wall, 1),
        "curve": curve,
    }
    with Path(args.jsonl).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
