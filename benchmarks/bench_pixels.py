"""DQN from pixels: qiter against Stable-Baselines3's DQN with the same settings and threads, in one process.

Two games, each trained by qiter then by SB3 (alternating, ``--repeats`` times), printing steps per second
(the medians, in wall time and per CPU second of the process) and the ratios:

- MinAtar Breakout with the MinAtar preset (one gradient step per environment step, batch 32), learning
  from step ``--warmup``; qiter runs it on the DQN core (numpy, the MinAtar network's convolution as an
  im2col product), SB3 gets the MinAtar network as a features extractor
  (``scripts/sb3_minatar_reference.py``);
- Atari Pong with the RL Zoo's preset (one gradient step every 4 environment steps, batch 32, the Nature
  CNN on 4x84x84 stacks, qiter's torch learner); SB3's ``CnnPolicy`` is the same network.

Both play the same environment (``qiter.envs.make_env``: the same preprocessing), without evaluations. For
each game it also prints the arithmetic ceiling: the floating-point operations of one environment step (its
share of a gradient step: forward passes of the online and target networks and the backward pass, plus the
action's forward pass) against the rate of a 1024x1024 float32 matrix product on the same threads, and the
share of that ceiling each framework reaches. ``--profile`` adds one qiter MinAtar run with each part of
the step timed (env, store, act, sample, forward, backward, Adam). Figures and commands: docs/pixels.md.

    OMP_NUM_THREADS=1 python benchmarks/bench_pixels.py --game minatar --repeats 3 --profile
    python benchmarks/bench_pixels.py                       # both games, 1 torch thread
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import torch.nn as nn

from qiter.dqn.agent import DQNAgent
from qiter.dqn.config import DQNConfig
from qiter.envs import make_env
from qiter.resolve import resolve_config
from qiter.run_loop import train

GAMES = {"minatar": "MinAtar/Breakout-v1", "pong": "ALE/Pong-v5"}


def bench_config(env_id: str, steps: int, warmup: int) -> DQNConfig:
    """The game's preset, learning from ``warmup``, for ``warmup + steps`` steps, no evaluation."""
    cfg = resolve_config(
        env_id,
        overrides=[
            f"n_timesteps={warmup + steps}", f"learning_starts={warmup}", "evaluation_interval=100000000",
            "checkpoint_interval=100000000",
        ],
    )  # fmt: skip
    assert isinstance(cfg, DQNConfig)
    return cfg


def run_qiter(cfg: DQNConfig) -> tuple[float, float]:
    """Steps per second of a qiter run (no folder, no evaluation), in wall time and in process CPU time
    (which counts the setup too)."""
    cpu = time.process_time()
    result = train(DQNAgent, cfg, None, progress=False, verbose=0, final_eval_episodes=0)
    return result.steps_per_second, cfg.n_timesteps / (time.process_time() - cpu)


def sb3_model(cfg: DQNConfig) -> object:
    """SB3's DQN with the config's settings on the same environment."""
    from stable_baselines3 import DQN

    env = make_env(cfg.env_id)
    if cfg.network == "minatar-cnn":
        path = Path(__file__).parent.parent / "scripts" / "sb3_minatar_reference.py"
        spec = importlib.util.spec_from_file_location("sb3_minatar_reference", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.make_model(cfg, env, cfg.seed)
    return DQN(
        "CnnPolicy", env, learning_rate=cfg.learning_rate, buffer_size=cfg.replay_buffer_size,
        learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, gamma=cfg.gamma,
        train_freq=cfg.update_interval, gradient_steps=cfg.gradient_steps,
        target_update_interval=cfg.target_network_update_interval,
        exploration_fraction=cfg.exploration_fraction, exploration_final_eps=cfg.exploration_final_eps,
        max_grad_norm=cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf"),
        seed=cfg.seed, device="cpu",
    )  # fmt: skip


def run_sb3(cfg: DQNConfig) -> tuple[float, float]:
    """Steps per second of SB3's DQN for the same number of steps (model construction excluded), in wall
    and process CPU time."""
    model = sb3_model(cfg)
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=cfg.n_timesteps)  # type: ignore[attr-defined]
    return cfg.n_timesteps / (time.perf_counter() - start), cfg.n_timesteps / (time.process_time() - cpu)


def forward_flops(net: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of one forward pass of ``net`` on one observation of ``shape`` (convolutions and
    linear layers; activations are negligible)."""
    total = 0

    def count(module: nn.Module, _inputs: tuple[th.Tensor, ...], output: th.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels * kh * kw
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with th.no_grad():
        net(th.zeros(1, *shape, dtype=th.uint8))
    for hook in hooks:
        hook.remove()
    return total


def matmul_rate(n: int = 1024, repeats: int = 20) -> float:
    """Float32 operations per second of an ``n x n`` matrix product on the current threads (the best of
    ``repeats``)."""
    a, b = th.randn(n, n), th.randn(n, n)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def ceiling(cfg: DQNConfig) -> tuple[float, float]:
    """(FLOPs per environment step, steps/s at the matrix product's rate) for the config's network."""
    env = make_env(cfg.env_id)
    agent = DQNAgent(cfg, env.observation_space, env.action_space)
    flops = forward_flops(agent.q_net, env.observation_space.shape)
    # A gradient step: online forward + target forward + backward (twice the forward) on the batch.
    per_update = 4 * flops * cfg.batch_size * cfg.gradient_steps
    per_step = flops + per_update / cfg.update_interval
    return per_step, matmul_rate() / per_step


#: The parts of a qiter training step that ``--profile`` times: (label, class, method).
PARTS = (
    ("env step (MinAtar's own)", "minatar.Environment", "act"),
    ("store the transition", "qiter.buffers.frames.FrameReplayBuffer", "add"),
    ("act (greedy forward pass)", "qiter.dqn.core_learner.CoreLearner", "act"),
    ("sample the minibatch", "qiter.buffers.frames.FrameReplayBuffer", "sample"),
    ("gradient step, all of it", "qiter.dqn.core_learner.CoreLearner", "update"),
    ("  forward passes (target and online)", "qiter.core.mlp.MLP", "forward"),
    ("  backward pass", "qiter.core.mlp.MLP", "backward"),
    ("  Adam (and the subnormal flush)", "qiter.core.adam.Adam", "step"),
)


def profile_parts(cfg: DQNConfig) -> None:
    """One more qiter run with each part of the step (:data:`PARTS`) wrapped in a timer: wall and thread
    CPU microseconds per environment step (what the parts leave is the run loop's own work)."""
    totals: dict[str, list[float]] = {}
    originals = []
    for label, owner, name in PARTS:
        module_name, cls_name = owner.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), cls_name)
        method = getattr(cls, name)
        originals.append((cls, name, method))
        totals[label] = [0.0, 0.0]

        def timed(*args: Any, _method: Any = method, _label: str = label, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            out = _method(*args, **kwargs)
            totals[_label][0] += time.perf_counter() - wall
            totals[_label][1] += time.thread_time() - cpu
            return out

        setattr(cls, name, timed)
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        rate, _ = run_qiter(cfg)
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)
    steps = cfg.n_timesteps
    print(f"  qiter per environment step ({rate:,.0f} steps/s with the timers), us wall / us CPU:")
    for label, (w, c) in totals.items():
        print(f"    {label:38s} {w / steps * 1e6:7.1f} / {c / steps * 1e6:7.1f}")
    print(f"    {'the whole run (setup included)':38s} {wall / steps * 1e6:7.1f} / {cpu / steps * 1e6:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", choices=["minatar", "pong", "both"], default="both")
    parser.add_argument(
        "--steps", type=int, default=None, help="learning steps (default 3000 MinAtar, 1000 Pong)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="steps before learning (default 500, Pong 200)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both frameworks)")
    parser.add_argument(
        "--profile", action="store_true", help="MinAtar: one more qiter run with each part of the step timed"
    )
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    print(f"torch {th.__version__}, {args.threads} thread(s)")
    for game in ["minatar", "pong"] if args.game == "both" else [args.game]:
        steps = args.steps or (3000 if game == "minatar" else 1000)
        warmup = args.warmup or (500 if game == "minatar" else 200)
        cfg = bench_config(GAMES[game], steps, warmup)
        rates: dict[str, list[tuple[float, float]]] = {"qiter": [], "sb3": []}
        for _ in range(args.repeats):
            rates["qiter"].append(run_qiter(cfg))
            rates["sb3"].append(run_sb3(cfg))
        (q, q_cpu), (s, s_cpu) = (np.median(np.array(rates[k]), axis=0) for k in ("qiter", "sb3"))
        print(
            f"{cfg.env_id}: {warmup + steps} steps (learning from {warmup}), update every {cfg.update_interval}, "
            f"batch {cfg.batch_size}: qiter {q:,.0f} steps/s {[round(r[0]) for r in rates['qiter']]}, SB3 "
            f"{s:,.0f} steps/s {[round(r[0]) for r in rates['sb3']]}, ratio {q / s:.2f}x; per CPU second "
            f"(medians) qiter {q_cpu:,.0f}, SB3 {s_cpu:,.0f}, ratio {q_cpu / s_cpu:.2f}x",
            flush=True,
        )
        flops, top = ceiling(cfg)
        print(
            f"  arithmetic ceiling: {flops / 1e6:.0f} MFLOP per step, {top:,.0f} steps/s at the matrix "
            f"product's rate; qiter reaches {q / top:.0%} of it, SB3 {s / top:.0%}"
        )
        if game == "minatar" and args.profile:
            profile_parts(cfg)


if __name__ == "__main__":
    sys.exit(main())
