"""A single-file TD3 training loop in the CleanRL style, written from the paper (Fujimoto et al., 2018,
Algorithm 1), as the plain-PyTorch reference of ``bench_td3.py``.

Everything is inline: two critics and an actor as ``nn.Sequential``, numpy replay arrays, uniform random
actions for the first ``learning_starts`` steps, Gaussian exploration noise, clipped double-Q targets with
target policy smoothing, a delayed actor and Polyak-averaged targets.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ReferenceSettings:
    """The Zoo's TD3 settings for Pendulum-v1, with SB3's defaults for the rest."""

    env_id: str = "Pendulum-v1"
    n_timesteps: int = 20_000
    learning_starts: int = 10_000
    buffer_size: int = 200_000
    batch_size: int = 256
    gamma: float = 0.98
    tau: float = 0.005
    learning_rate: float = 1e-3
    exploration_noise: float = 0.1
    policy_delay: int = 2
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5
    hidden: tuple[int, int] = (400, 300)
    seed: int = 0


def _mlp(in_dim: int, out_dim: int, hidden: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
        nn.Linear(hidden[1], out_dim),
    )  # fmt: skip


def train_reference(s: ReferenceSettings) -> tuple[float, nn.Module, float, float]:
    """Train; return (seconds, actor, action scale, action bias)."""
    th.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    env = gym.make(s.env_id)
    obs_dim = env.observation_space.shape[0]  # type: ignore[index]
    act_dim = env.action_space.shape[0]  # type: ignore[index]
    high, low = env.action_space.high, env.action_space.low  # type: ignore[attr-defined]
    scale, bias = (high - low) / 2, (high + low) / 2
    actor = nn.Sequential(_mlp(obs_dim, act_dim, s.hidden), nn.Tanh())
    qf1, qf2 = _mlp(obs_dim + act_dim, 1, s.hidden), _mlp(obs_dim + act_dim, 1, s.hidden)
    actor_target, qf1_target, qf2_target = copy.deepcopy(actor), copy.deepcopy(qf1), copy.deepcopy(qf2)
    q_optimizer = th.optim.Adam([*qf1.parameters(), *qf2.parameters()], lr=s.learning_rate)
    actor_optimizer = th.optim.Adam(actor.parameters(), lr=s.learning_rate)
    obs_buf = np.zeros((s.buffer_size, obs_dim), np.float32)
    next_buf = np.zeros((s.buffer_size, obs_dim), np.float32)
    act_buf = np.zeros((s.buffer_size, act_dim), np.float32)
    rew_buf = np.zeros(s.buffer_size, np.float32)
    term_buf = np.zeros(s.buffer_size, np.float32)
    obs, _ = env.reset(seed=s.seed)
    start = time.perf_counter()
    for step in range(s.n_timesteps):
        if step < s.learning_starts:
            action = rng.uniform(-1, 1, act_dim)
        else:
            with th.no_grad():
                action = actor(th.as_tensor(obs, dtype=th.float32)).numpy()
            action = np.clip(action + rng.normal(0, s.exploration_noise, act_dim), -1, 1)
        next_obs, reward, terminated, truncated, _ = env.step(action * scale + bias)
        i = step % s.buffer_size
        obs_buf[i], next_buf[i], act_buf[i], rew_buf[i], term_buf[i] = (
            obs,
            next_obs,
            action,
            reward,
            terminated,
        )
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
        if step < s.learning_starts:
            continue
        idx = rng.integers(0, min(step + 1, s.buffer_size), s.batch_size)
        b_obs, b_next = th.as_tensor(obs_buf[idx]), th.as_tensor(next_buf[idx])
        b_act, b_rew, b_term = (
            th.as_tensor(act_buf[idx]),
            th.as_tensor(rew_buf[idx]),
            th.as_tensor(term_buf[idx]),
        )
        with th.no_grad():
            noise = (th.randn_like(b_act) * s.target_policy_noise).clamp(
                -s.target_noise_clip, s.target_noise_clip
            )
            next_action = (actor_target(b_next) + noise).clamp(-1, 1)
            next_in = th.cat((b_next, next_action), 1)
            next_q = th.min(qf1_target(next_in), qf2_target(next_in)).view(-1)
            td_target = b_rew + s.gamma * (1 - b_term) * next_q
        q_in = th.cat((b_obs, b_act), 1)
        q_loss = F.mse_loss(qf1(q_in).view(-1), td_target) + F.mse_loss(qf2(q_in).view(-1), td_target)
        q_optimizer.zero_grad()
        q_loss.backward()
        q_optimizer.step()
        if step % s.policy_delay == 0:
            actor_loss = -qf1(th.cat((b_obs, actor(b_obs)), 1)).mean()
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            with th.no_grad():
                for net, target in ((actor, actor_target), (qf1, qf1_target), (qf2, qf2_target)):
                    for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                        tp.mul_(1 - s.tau).add_(p, alpha=s.tau)
    env.close()
    return time.perf_counter() - start, actor, float(scale[0]), float(bias[0])
