"""Stable-Baselines3's DQN on a MinAtar game with the settings of qiter's preset, scored the way qiter scores a run.

The reference of the MinAtar table in docs/pixels.md. SB3 plays the very environment qiter trains on (made by
``qiter.envs.make_env``: MinAtar's game as ``(c, 10, 10)`` uint8, sticky actions 0.1), with the MinAtar
network (one 3x3 convolution of 16 channels, 128 units, a linear head: a features extractor and an empty
``net_arch``), the preset's hyperparameters, Adam with qiter's epsilon, the Huber loss and no gradient clipping
(the preset has none). Its greedy policy is evaluated with qiter's protocol: ``n_eval_episodes`` every
``evaluation_interval`` steps on an evaluation environment seeded once with ``seed + 1,000,003``, then the final
evaluation on a fresh one seeded ``seed + 10,000``. The run is written as a run folder (``config.yaml``,
``eval.csv``, ``eval.json`` with algo ``sb3-dqn``), so ``qiter plot`` and ``qiter report`` put it beside
qiter's runs.

    python scripts/sb3_minatar_reference.py MinAtar/Breakout-v1 --seed 0 --steps 100000 --out runs/sb3/breakout-0
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn as nn

from qiter import runs
from qiter.config import config_to_dict
from qiter.dqn.config import DQNConfig
from qiter.envs import make_env
from qiter.evaluation import run_episodes
from qiter.resolve import resolve_config
from qiter.run_loop import EVAL_SEED_OFFSET, FINAL_EVAL_SEED_OFFSET


def minatar_extractor() -> type[nn.Module]:
    """The MinAtar network's torso as an SB3 features extractor (imported late: SB3 is the bench extra)."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class MinAtarCNN(BaseFeaturesExtractor):
        def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 128) -> None:
            super().__init__(observation_space, features_dim)
            c, h, w = observation_space.shape
            self.net = nn.Sequential(
                nn.Conv2d(c, 16, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * (h - 2) * (w - 2), features_dim),
                nn.ReLU(),
            )  # fmt: skip

        def forward(self, observations: th.Tensor) -> th.Tensor:
            return self.net(observations)

    return MinAtarCNN


def make_model(cfg: DQNConfig, env: gym.Env, seed: int) -> object:
    """SB3's DQN with the config's settings."""
    from stable_baselines3 import DQN

    return DQN(
        "CnnPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.replay_buffer_size,
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
        train_freq=cfg.update_interval, gradient_steps=cfg.gradient_steps,
        target_update_interval=cfg.target_network_update_interval,
        exploration_fraction=cfg.exploration_fraction, exploration_initial_eps=cfg.exploration_initial_eps,
        exploration_final_eps=cfg.exploration_final_eps,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf"),
        policy_kwargs={
            "features_extractor_class": minatar_extractor(), "net_arch": [], "normalize_images": False,
            "optimizer_kwargs": {"eps": cfg.adam_eps},
        },
        seed=seed, device="cpu",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("env_id", help="a MinAtar id with a qiter preset, e.g. MinAtar/Breakout-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the preset")
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default: the preset's)")
    parser.add_argument("--out", required=True, help="the run folder to write")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()

    th.set_num_threads(args.threads)
    overrides = [*args.set, *([f"n_timesteps={args.steps}"] if args.steps is not None else [])]
    cfg = resolve_config(args.env_id, overrides=overrides, seed=args.seed)
    assert isinstance(cfg, DQNConfig)
    if cfg.loss != "huber" or cfg.double_dqn or cfg.n_steps != 1 or cfg.prioritized_replay or cfg.dueling:
        raise SystemExit("sb3_minatar_reference: SB3's DQN is plain DQN with the Huber loss")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    model = make_model(cfg, make_env(cfg.env_id), args.seed)

    def act(obs: np.ndarray) -> int:
        return int(model.predict(obs, deterministic=True)[0])  # type: ignore[attr-defined]

    eval_env = make_env(cfg.env_id)
    eval_env.reset(seed=cfg.seed + EVAL_SEED_OFFSET)
    # Written as the run goes, so an interrupted run still has its curve.
    runs.save_config(out, config_to_dict(cfg))
    with (out / "eval.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["step", "mean_return", "std_return"])
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluate(BaseCallback):
        """qiter's periodic evaluation inside one ``learn`` call (``learn`` in chunks would restart SB3's
        exploration schedule at each chunk: its progress counts to the end of the current call)."""

        def _on_step(self) -> bool:
            if self.num_timesteps % cfg.evaluation_interval == 0:
                returns = run_episodes(eval_env, act, cfg.n_eval_episodes)
                with (out / "eval.csv").open("a", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerow([self.num_timesteps, float(returns.mean()), float(returns.std())])
                print(
                    f"step {self.num_timesteps}: mean return {returns.mean():.2f} +/- {returns.std():.2f}",
                    flush=True,
                )
            return True

    start = time.perf_counter()
    model.learn(total_timesteps=cfg.n_timesteps, callback=Evaluate())  # type: ignore[attr-defined]
    step = int(model.num_timesteps)  # type: ignore[attr-defined]
    wall = time.perf_counter() - start
    final = run_episodes(
        make_env(cfg.env_id), act, cfg.n_eval_episodes, seed=cfg.seed + FINAL_EVAL_SEED_OFFSET
    )
    print(
        f"final: {final.mean():.2f} +/- {final.std():.2f}, {step / wall:.0f} steps/s (evaluations included)"
    )
    runs.write_eval(
        out,
        {
            "algo": "sb3-dqn", "env_id": cfg.env_id, "steps": step, "episodes": cfg.n_eval_episodes,
            "mean_return": float(final.mean()), "std_return": float(final.std()), "wall_time_s": wall,
            "steps_per_second": step / wall,
        },
    )  # fmt: skip


if __name__ == "__main__":
    main()
