"""DQN training speed: qiter against the seed's loop and Stable-Baselines3, in one process, one run.

Every variant trains CartPole-v1 with the seed's tuned settings (buffer 100k, target copy every 10 steps,
learning_starts 1000, epsilon 1.0 -> 0.04 over 10% of the run, a gradient step every 2 steps, batch 64,
two hidden layers of 64 units, Adam lr 1e-3, gamma 0.99) for the same step budget, on one torch thread,
with no evaluation inside the timed part. Each trained agent is then evaluated greedily (10 episodes).

Speeds are reported as ratios against the seed-style reference (``benchmarks/seed_reference.py``) and
SB3 measured in the same process and run, because absolute timings on a shared machine are noisy.
With ``--repeats N`` the variants run N times, interleaved, and each keeps its fastest run. Ratios are
given in wall time and in process CPU time: when other jobs share the cores, CPU time is the steadier one.

Variants (``--variants``, comma-separated):

- ``seed``: the seed's loop (``benchmarks/seed_reference.py``);
- ``sb3``: ``stable_baselines3.DQN`` with the same settings (its defaults otherwise: Huber loss,
  gradient clipping at 10; it wraps the env in ``Monitor`` and ``DummyVecEnv``);
- ``numpy``: ``qiter.dqn.train`` with ``backend="numpy"`` (the default on CPU);
- ``torch``: ``qiter.dqn.train`` with ``backend="torch"`` (autograd, fused Adam);
- ``numpy-blas1``: the numpy backend with OpenBLAS limited to one thread (``threadpoolctl``);
- ``torch-adam``: the torch backend with the default (not fused) ``torch.optim.Adam``.

Usage::

    python benchmarks/bench_dqn.py                 # 80k steps: seed, sb3, numpy, torch
    python benchmarks/bench_dqn.py --quick         # 20k steps
    python benchmarks/bench_dqn.py --variants seed,numpy,numpy-blas1,torch,torch-adam --out bench.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_reference

DEFAULT_STEPS = 80_000
QUICK_STEPS = 20_000
ALL_VARIANTS = ("seed", "sb3", "numpy", "torch", "numpy-blas1", "torch-adam")
DEFAULT_VARIANTS = ("seed", "sb3", "numpy", "torch")
LABELS = {
    "seed": "seed loop (reference)",
    "sb3": "Stable-Baselines3 DQN",
    "numpy": "qiter, numpy backend",
    "torch": "qiter, torch backend",
    "numpy-blas1": "qiter, numpy backend, BLAS 1 thread",
    "torch-adam": "qiter, torch backend, default Adam",
}

# The seed's CartPole settings, shared by every variant.
SETTINGS = dict(
    buffer_size=100_000,
    target_update_interval=10,
    learning_starts=1000,
    exploration_initial_eps=1.0,
    exploration_final_eps=0.04,
    exploration_fraction=0.1,
    train_freq=2,
    batch_size=64,
    hidden=64,
    learning_rate=1e-3,
    gamma=0.99,
)

Actor = Callable[[np.ndarray], int]


@dataclass
class Measurement:
    variant: str
    steps: int
    wall_time: float
    cpu_time: float
    actor: Actor

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_time

    @property
    def steps_per_cpu_second(self) -> float:
        """Steps per second of process CPU time: less sensitive than wall time to other loads on the machine."""
        return self.steps / self.cpu_time


def torch_actor(q_net: th.nn.Module) -> Actor:
    """Greedy actions of a torch Q-network (the same evaluation code for every variant)."""

    def act(obs: np.ndarray) -> int:
        with th.no_grad():
            return int(q_net(th.as_tensor(obs[np.newaxis], dtype=th.float32)).argmax(dim=1).item())

    return act


def run_seed(steps: int, seed: int) -> Actor:
    s = SETTINGS
    q_net = seed_reference.run_dqn(
        env_id="CartPole-v1",
        replay_buffer_size=s["buffer_size"],
        target_network_update_interval=s["target_update_interval"],
        learning_starts=s["learning_starts"],
        exploration_initial_eps=s["exploration_initial_eps"],
        exploration_final_eps=s["exploration_final_eps"],
        exploration_fraction=s["exploration_fraction"],
        n_timesteps=steps,
        update_interval=s["train_freq"],
        learning_rate=s["learning_rate"],
        batch_size=s["batch_size"],
        gamma=s["gamma"],
        n_hidden_units=s["hidden"],
        evaluation_interval=0,
        seed=seed,
    )
    return torch_actor(q_net)


def run_sb3(steps: int, seed: int) -> Actor:
    from stable_baselines3 import DQN

    s = SETTINGS
    # SB3 counts target_update_interval in env steps (_on_step, n_envs=1) and trains once
    # num_timesteps > learning_starts, every train_freq steps: the seed's schedule.
    model = DQN(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        learning_rate=s["learning_rate"],
        buffer_size=s["buffer_size"],
        learning_starts=s["learning_starts"],
        batch_size=s["batch_size"],
        gamma=s["gamma"],
        train_freq=s["train_freq"],
        gradient_steps=1,
        target_update_interval=s["target_update_interval"],
        exploration_initial_eps=s["exploration_initial_eps"],
        exploration_fraction=s["exploration_fraction"],
        exploration_final_eps=s["exploration_final_eps"],
        policy_kwargs=dict(net_arch=[s["hidden"], s["hidden"]]),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    model.learn(total_timesteps=steps)
    return torch_actor(model.q_net)


def qiter_config(steps: int, seed: int, backend: str):  # type: ignore[no-untyped-def]
    from qiter.dqn import DQNConfig

    s = SETTINGS
    return DQNConfig(
        env_id="CartPole-v1",
        seed=seed,
        n_timesteps=steps,
        replay_buffer_size=s["buffer_size"],
        batch_size=s["batch_size"],
        learning_starts=s["learning_starts"],
        update_interval=s["train_freq"],
        n_hidden_units=s["hidden"],
        learning_rate=s["learning_rate"],
        gamma=s["gamma"],
        target_network_update_interval=s["target_update_interval"],
        exploration_initial_eps=s["exploration_initial_eps"],
        exploration_final_eps=s["exploration_final_eps"],
        exploration_fraction=s["exploration_fraction"],
        # No evaluation and no checkpoint inside the timed part (the interval is past the end of the run).
        evaluation_interval=steps + 1,
        checkpoint_interval=steps + 1,
        backend=backend,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def default_adam() -> Iterator[None]:
    """Make qiter's torch learner use the default (for-loop) Adam instead of the fused one."""
    from qiter.dqn import torch_learner

    original = torch_learner.make_adam

    def plain(params, lr, eps, device):  # type: ignore[no-untyped-def]
        return th.optim.Adam(params, lr=lr, eps=eps)

    torch_learner.make_adam = plain
    try:
        yield
    finally:
        torch_learner.make_adam = original


def run_qiter(steps: int, seed: int, variant: str) -> Actor:
    from qiter.dqn import train

    backend = "torch" if variant.startswith("torch") else "numpy"
    context: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if variant == "numpy-blas1":
        from threadpoolctl import threadpool_limits

        context = threadpool_limits(limits=1, user_api="blas")
    elif variant == "torch-adam":
        context = default_adam()

    with context:
        result = train(qiter_config(steps, seed, backend), run_dir=None, progress=False, verbose=0)
    return torch_actor(result.q_net)


def run_variant(variant: str, steps: int, seed: int) -> Measurement:
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if variant == "seed":
        actor = run_seed(steps, seed)
    elif variant == "sb3":
        actor = run_sb3(steps, seed)
    else:
        actor = run_qiter(steps, seed, variant)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Measurement(variant, steps, wall, cpu, actor)


def evaluate(actor: Actor, n_episodes: int, seed: int) -> np.ndarray:
    """Greedy returns over ``n_episodes`` CartPole-v1 episodes (same env seeds for every agent)."""
    env = gym.make("CartPole-v1")
    returns = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(actor(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.array(returns)


def machine_info() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    blas = "unknown"
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        blas = (
            ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info())
            or "none found"
        )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores ({usable} usable)",
        f"- Python {platform.python_version()}, torch {th.__version__}, numpy {np.__version__}, gymnasium {gym.__version__}",
        f"- torch threads: {th.get_num_threads()}; thread pools: {blas}",
        f"- load average at start (1, 5, 15 min): {load}",
    ]


def ratio(value: float, reference: Measurement | None, cpu: bool) -> str:
    if reference is None:
        return "n/a"
    return f"{value / (reference.steps_per_cpu_second if cpu else reference.steps_per_second):.2f}x"


def format_table(rows: list[tuple[Measurement, np.ndarray]]) -> list[str]:
    by_variant = {m.variant: m for m, _ in rows}
    seed, sb3 = by_variant.get("seed"), by_variant.get("sb3")
    lines = [
        "| variant | steps | wall s | steps/s | vs seed | vs SB3 | CPU s | steps/CPU-s | vs seed (CPU) "
        "| vs SB3 (CPU) | greedy return (10 ep.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, returns in rows:
        wall, cpu = m.steps_per_second, m.steps_per_cpu_second
        lines.append(
            f"| {LABELS[m.variant]} | {m.steps:,} | {m.wall_time:.1f} | {wall:,.0f} | {ratio(wall, seed, False)} "
            f"| {ratio(wall, sb3, False)} | {m.cpu_time:.1f} | {cpu:,.0f} | {ratio(cpu, seed, True)} "
            f"| {ratio(cpu, sb3, True)} | {returns.mean():.1f} +/- {returns.std():.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DQN speed: qiter vs the seed's loop vs Stable-Baselines3.")
    parser.add_argument(
        "--steps", type=int, default=None, help=f"training steps per variant (default {DEFAULT_STEPS:,})"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS:,} steps")
    parser.add_argument(
        "--seed", type=int, default=2022, help="training seed (the seed's CartPole call uses 2022)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(ALL_VARIANTS)}",
    )
    parser.add_argument("--skip-sb3", action="store_true", help="leave Stable-Baselines3 out")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run the variants this many times, interleaved; keep each one's fastest",
    )
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report to this file")
    args = parser.parse_args(argv)

    steps = args.steps if args.steps is not None else (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    if args.skip_sb3:
        variants = [v for v in variants if v != "sb3"]

    th.set_num_threads(1)
    out: list[str] = ["# DQN training speed (CartPole-v1, the seed's settings)", ""]
    out += machine_info()
    command = "python benchmarks/bench_dqn.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out += [
        f"- command: `{command.strip()}`",
        f"- steps per variant: {steps:,}, seed {args.seed}, repeats {args.repeats}",
        "",
    ]
    print("\n".join(out), flush=True)

    best: dict[str, Measurement] = {}
    for repeat in range(args.repeats):
        for variant in variants:
            m = run_variant(variant, steps, args.seed)
            print(
                f"  [{repeat + 1}/{args.repeats}] {LABELS[variant]}: {m.wall_time:.1f} s, {m.steps_per_second:,.0f} steps/s",
                flush=True,
            )
            if variant not in best:
                best[variant] = m
            else:  # keep the fastest wall time and the smallest CPU time over the repeats
                kept = best[variant]
                kept.wall_time = min(kept.wall_time, m.wall_time)
                kept.cpu_time = min(kept.cpu_time, m.cpu_time)
    rows = [(best[v], evaluate(best[v].actor, args.eval_episodes, seed=10_000 + args.seed)) for v in variants]

    table = format_table(rows)
    summary = []
    for name in ("numpy", "torch"):
        if name in best:
            m = best[name]
            parts = []
            for ref, ref_name in ((best.get("seed"), "seed"), (best.get("sb3"), "SB3")):
                if ref is not None:
                    parts.append(
                        f"{ratio(m.steps_per_second, ref, False)} {ref_name} "
                        f"({ratio(m.steps_per_cpu_second, ref, True)} in CPU time)"
                    )
            summary.append(f"- ratio: {LABELS[name]}: " + ", ".join(parts))
    report = ["", *table, "", *summary]
    print("\n".join(report), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out + report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
