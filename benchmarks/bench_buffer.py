"""Replay-buffer throughput and memory: qiter's buffers against the seed's, in one process.

- store: transitions stored per second (``store_transition``, one call per transition, as the trainer does);
- sample: transitions sampled per second for batches of 64 and 256, from a buffer of 100k CartPole
  transitions; uniform (qiter and the seed's buffer) and prioritized (``qiter.buffers.prioritized``, when
  that module exists);
- memory: a buffer of 1M CartPole transitions, every page written, must not raise the process's
  resident memory (``VmRSS``) by more than 2x the bytes of its arrays (``buffer.nbytes``).

Speeds are also given as ratios to the seed's buffer measured in the same run (timings on a shared
machine are noisy). Usage: ``python benchmarks/bench_buffer.py [--quick] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed_reference

MEMORY_LIMIT_RATIO = 2.0


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/status (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def spaces_of_cartpole() -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    env = gym.make("CartPole-v1")
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    return obs_space, act_space  # type: ignore[return-value]


def transitions(
    n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random CartPole-shaped transitions."""
    obs = rng.standard_normal((n + 1, 4)).astype(np.float32)
    actions = rng.integers(0, 2, size=n)
    rewards = np.ones(n, dtype=np.float32)
    terminated = rng.random(n) < 0.02
    return obs[:-1], obs[1:], actions, rewards, terminated


def fill(buffer: object, n: int, seed: int = 0) -> float:
    """Store ``n`` transitions one call at a time; return the transitions stored per second."""
    obs, next_obs, actions, rewards, terminated = transitions(n, np.random.default_rng(seed))
    store = buffer.store_transition  # type: ignore[attr-defined]
    start = time.perf_counter()
    for i in range(n):
        store(obs[i], next_obs[i], int(actions[i]), float(rewards[i]), bool(terminated[i]))
    return n / (time.perf_counter() - start)


def sample_rate(sample: Callable[[int], object], batch_size: int, min_time: float) -> float:
    """Transitions sampled per second (best of 3 timed blocks of at least ``min_time`` seconds each)."""
    for _ in range(20):  # warm-up
        sample(batch_size)
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while True:
            for _ in range(100):
                sample(batch_size)
            calls += 100
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        best = max(best, calls * batch_size / elapsed)
    return best


def make_buffers(size: int, seed: int) -> dict[str, object]:
    from qiter.buffers.replay import ReplayBuffer

    obs_space, act_space = spaces_of_cartpole()
    rng = np.random.default_rng(seed)
    buffers: dict[str, object] = {
        "seed ReplayBuffer (np.random.randint)": seed_reference.ReplayBuffer(size, obs_space, act_space),
        "qiter ReplayBuffer (uniform)": ReplayBuffer(
            size, obs_space, act_space, rng=rng, observation_dtype=np.float32
        ),
    }
    try:
        from qiter.buffers.prioritized import PrioritizedReplayBuffer
    except ImportError:
        pass
    else:
        buffers["qiter PrioritizedReplayBuffer"] = PrioritizedReplayBuffer(
            size,
            obs_space,
            act_space,
            alpha=0.6,
            eps=1e-6,
            rng=np.random.default_rng(seed),
            observation_dtype=np.float32,
        )
    return buffers


def bench_throughput(size: int, min_time: float, seed: int) -> list[str]:
    buffers = make_buffers(size, seed)
    rows = []
    for name, buffer in buffers.items():
        store_rate = fill(buffer, size, seed)
        rates = [sample_rate(buffer.sample, b, min_time) for b in (64, 256)]  # type: ignore[attr-defined]
        rows.append((name, store_rate, rates))
    ref = rows[0]
    lines = [
        f"Replay buffer throughput ({size:,} CartPole transitions stored)",
        "",
        "| buffer | store /s | vs seed | sample /s, batch 64 | vs seed | sample /s, batch 256 | vs seed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, store_rate, rates in rows:
        lines.append(
            f"| {name} | {store_rate:,.0f} | {store_rate / ref[1]:.2f}x | {rates[0]:,.0f} | {rates[0] / ref[2][0]:.2f}x "
            f"| {rates[1]:,.0f} | {rates[1] / ref[2][1]:.2f}x |"
        )
    if len(buffers) < 3:
        lines += ["", "(qiter.buffers.prioritized not found: prioritized replay not measured)"]
    return lines


def bench_memory(size: int, seed: int) -> tuple[list[str], bool]:
    """RSS increase of a qiter buffer of ``size`` transitions with every page written, vs its ``nbytes``."""
    from qiter.buffers.replay import ReplayBuffer

    obs_space, act_space = spaces_of_cartpole()
    gc.collect()
    before = rss_bytes()
    buffer = ReplayBuffer(
        size, obs_space, act_space, rng=np.random.default_rng(seed), observation_dtype=np.float32
    )
    after_create = rss_bytes()
    # Write every element, in chunks (np.zeros pages are only resident once written).
    chunk = 65_536
    rng = np.random.default_rng(seed)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        obs, next_obs, actions, rewards, terminated = transitions(stop - start, rng)
        buffer.observations[start:stop] = obs
        buffer.next_observations[start:stop] = next_obs
        buffer.actions[start:stop, 0] = actions
        buffer.rewards[start:stop] = rewards
        buffer.terminateds[start:stop] = terminated
        buffer.dones[start:stop] = terminated
        del obs, next_obs, actions, rewards, terminated
    buffer.current_idx, buffer.is_full = 0, True
    gc.collect()
    after_fill = rss_bytes()
    increase = after_fill - before
    ratio = increase / buffer.nbytes
    ok = ratio <= MEMORY_LIMIT_RATIO
    mib = 1024 * 1024
    lines = [
        f"Replay buffer memory ({size:,} CartPole transitions, every page written)",
        "",
        f"- buffer.nbytes (raw bytes of its arrays): {buffer.nbytes / mib:,.1f} MiB "
        f"({buffer.nbytes / size:.0f} bytes per transition)",
        f"- RSS increase after creating it (np.zeros, pages not yet touched): {(after_create - before) / mib:,.1f} MiB",
        f"- RSS increase after filling it: {increase / mib:,.1f} MiB",
        f"- ratio RSS increase / nbytes: {ratio:.2f} (limit {MEMORY_LIMIT_RATIO:.1f}): {'OK' if ok else 'OVER THE LIMIT'}",
    ]
    del buffer
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay buffer throughput and memory.")
    parser.add_argument("--quick", action="store_true", help="shorter timing blocks")
    parser.add_argument(
        "--size", type=int, default=100_000, help="transitions stored for the throughput part"
    )
    parser.add_argument("--memory-size", type=int, default=1_000_000, help="transitions for the memory part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report to this file")
    args = parser.parse_args(argv)

    lines: list[str] = ["# Replay buffer benchmark", ""]
    # Memory first, in a process that has allocated little yet.
    memory_lines, ok = bench_memory(args.memory_size, args.seed)
    lines += [*memory_lines, ""]
    print("\n".join(lines), flush=True)
    throughput = bench_throughput(args.size, 0.1 if args.quick else 0.5, args.seed)
    print("\n".join(throughput), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines + throughput) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
