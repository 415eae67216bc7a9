"""Population training speed: agent-steps per second of N DQN agents in one population, against one qiter
agent alone, measured in the same process and run.

Every variant trains CartPole-v1 with the seed's settings (the ``CartPole-v1`` preset: update every 2
steps, batch 64, two hidden layers of 64, target copy every 10 steps, buffer 100k, learning_starts 1000)
with no evaluation in the timed part. "agent-steps" counts environment steps summed over agents, so one
agent alone has agent-steps/s = steps/s. Ratios are taken within the run, in wall time and in process CPU
time (the machine may be shared; CPU time counts only this process's own cores' work).

``--profile`` adds where a population step's time goes: each component (act, env step, store, sample,
update) timed alone on a warmed population, weighted by how often the schedule calls it.

Usage::

    python benchmarks/bench_population.py --quick                   # 3k steps, N = 1, 8, 64
    python benchmarks/bench_population.py --agents 64 --workers 1,2 # one process, then two
    python benchmarks/bench_population.py --agents 1,16,64,256 --steps 10000 --backends numpy,torch
    python benchmarks/bench_population.py --device cuda --agents 1024,4096 --steps 20000 --profile
    python benchmarks/bench_population.py --device cuda --agents 4096 --steps 3000 --no-single --cuda-graphs on,off
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from qiter.population.lockstep import Population
from qiter.population.train import agent_configs, train
from qiter.resolve import resolve_config


def _config(steps: int, device: str, backend: str) -> Any:
    return resolve_config(
        "CartPole-v1",
        overrides=[f"n_timesteps={steps}", "evaluation_interval=0", f"device={device}", f"backend={backend}"],
    )


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (a population's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def single_agent(steps: int) -> tuple[float, float]:
    """One qiter agent (``qiter.dqn.train``, numpy fast path): (steps/s of the run's own timer, steps per
    CPU-second of the whole call, setup and a 1-episode final evaluation included, as for a population)."""
    from qiter.dqn.trainer import train as train_single

    config = _config(steps, "cpu", "numpy")
    with tempfile.TemporaryDirectory() as folder:
        cpu0 = _cpu_seconds()
        result = train_single(
            config, folder, progress=False, verbose=0, tensorboard=False, final_eval_episodes=1
        )
        cpu = _cpu_seconds() - cpu0
    return result.steps_per_second, steps / max(cpu, 1e-9)


def population(
    n: int,
    steps: int,
    device: str,
    backend: str,
    threads: int | None,
    workers: int | None,
    graphs: bool = True,
) -> tuple[float, float, float, int]:
    """A population of ``n``: (agent-steps/s wall, agent-steps per CPU-second of all its processes, final
    mean return, processes)."""
    config = _config(steps, device, backend)
    cpu0 = _cpu_seconds()
    result = train(config, n, final_eval_episodes=1, threads=threads, workers=workers, cuda_graphs=graphs)
    cpu = _cpu_seconds() - cpu0
    return (
        result.agent_steps_per_second,
        n * steps / max(cpu, 1e-9),
        float(result.final_returns.mean()),
        result.workers,
    )


def _sync(device: str) -> None:
    if th.device(device).type == "cuda":
        th.cuda.synchronize()


def profile(n: int, device: str, backend: str, repeats: int = 200) -> list[tuple[str, float, float]]:
    """Per-component microseconds per population step: (name, us per call, calls per step)."""
    config = _config(10_000, device, backend)
    pop = Population(agent_configs(config, n), backend)
    for step in range(1500):  # past learning_starts: the buffer holds data and updates run
        pop.step(step)
    _sync(device)
    actions = pop.act(0)
    out = pop.env.step(actions)
    batch = pop.buffer.sample(config.batch_size)
    parts: list[tuple[str, Callable[[], Any], float]] = [
        ("act (epsilon-greedy, forward of N x 1)", lambda: pop.act(5000), 1.0),
        ("env step (N copies, autoreset)", lambda: pop.env.step(actions), 1.0),
        (
            "store",
            lambda: pop.buffer.add(
                pop.observations,
                actions,
                out.rewards,
                out.final_observations,
                out.terminateds,
                out.terminateds | out.truncateds,
            ),
            1.0,
        ),
        (
            "sample N minibatches of 64",
            lambda: pop.buffer.sample(config.batch_size),
            1.0 / config.update_interval,
        ),
        (
            "update (2 forwards, backward, Adam)",
            lambda: pop.learner.update(*batch),
            1.0 / config.update_interval,
        ),
        ("target copy", lambda: pop.learner.update_target(), 1.0 / config.target_network_update_interval),
    ]
    rows = []
    for name, fn, calls in parts:
        best = float("inf")
        for _ in range(3):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            _sync(device)
            best = min(best, (time.perf_counter() - t0) / repeats)
        rows.append((name, best * 1e6, calls))
    return rows


def update_breakdown(n: int, backend: str, repeats: int = 200) -> tuple[float, dict[str, float], float]:
    """Where an update's time goes on the CPU: (us per update, us per update by part, MFLOP of its matrix
    products). The parts are the learner's calls through its array backend, timed while it runs; "the
    rest" is what the learner does inline (bias additions, masks, the TD target) and Python."""
    config = _config(10_000, "cpu", backend)
    pop = Population(agent_configs(config, n), backend)
    for step in range(1500):  # past learning_starts
        pop.step(step)
    batch = pop.buffer.sample(config.batch_size)
    learner, ops = pop.learner, pop.learner.ops
    parts = {"matmul_into": "matrix products", "matmul_bt_into": "matrix products", "adam_": "Adam"}
    parts |= {"relu_": "activations", "tanh_": "activations", "gather_last": "gathers", "max": "max"}
    spent: dict[str, float] = dict.fromkeys(parts.values(), 0.0)
    depth = [0]  # a call made from inside another timed call is counted once, in the outer one

    def timed(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[part] += time.perf_counter() - t0

        return call

    for name, part in parts.items():
        setattr(ops, name, timed(part, getattr(ops, name)))  # the instance's attribute shadows the method
    for _ in range(20):
        learner.update(*batch)
    spent = dict.fromkeys(spent, 0.0)
    t0 = time.perf_counter()
    for _ in range(repeats):
        learner.update(*batch)
    total = (time.perf_counter() - t0) / repeats
    per_update = {part: seconds / repeats * 1e6 for part, seconds in spent.items()}
    per_update["the rest (bias additions, masks, TD target, Python)"] = total * 1e6 - sum(per_update.values())
    # Multiply-adds of one agent's update: two forward passes (three with Double DQN), then the backward
    # pass's weight gradients, bias gradients (a product with ones) and deltas (none into the input).
    sizes, b = learner.spec.sizes, config.batch_size
    layer_macs = [i * o for i, o in itertools.pairwise(sizes)]
    forwards = 3 if learner.any_double else 2
    macs = b * (forwards * sum(layer_macs) + sum(layer_macs) + sum(sizes[1:]) + sum(layer_macs[1:]))
    return total * 1e6, per_update, 2 * macs * n / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", default="1,8,64", help="comma-separated population sizes")
    parser.add_argument("--steps", type=int, default=10_000, help="steps per agent")
    parser.add_argument("--quick", action="store_true", help="3,000 steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backends", default="numpy", help="numpy and/or torch (CPU); torch on CUDA")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS/torch threads on the CPU (0: leave as is)"
    )
    parser.add_argument(
        "--workers",
        default="auto",
        help="comma-separated process counts to measure (auto: one per core, at least 16 agents each)",
    )
    parser.add_argument(
        "--cuda-graphs", default="on", help="on a GPU: on, off, or on,off to measure both (the same runs)"
    )
    parser.add_argument("--no-single", action="store_true", help="skip the single-agent reference")
    parser.add_argument("--profile", action="store_true", help="per-component breakdown at the largest N")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; each row keeps its best")
    args = parser.parse_args()
    steps = 3000 if args.quick else args.steps
    sizes = [int(x) for x in args.agents.split(",")]
    backends = ["torch"] if th.device(args.device).type == "cuda" else args.backends.split(",")
    threads = args.threads or None
    print(f"# bench_population: CartPole-v1, seed's settings, {steps} steps per agent, device {args.device}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"torch {th.__version__}, numpy {np.__version__}, threads {threads}")  # fmt: skip
    if th.device(args.device).type == "cuda":
        print(f"# GPU: {th.cuda.get_device_name()}")
    reference = None
    if not args.no_single:
        reference = single_agent(steps)
        print(
            f"single qiter agent (numpy fast path): {reference[0]:,.0f} steps/s, {reference[1]:,.0f} steps/CPU-s"
        )
    print(
        "| backend | agents | processes | agent-steps/s | vs single | agent-steps/CPU-s | vs single (CPU) "
        "| final mean return |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    worker_counts = [None if w == "auto" else int(w) for w in args.workers.split(",")]
    on_gpu = th.device(args.device).type == "cuda"
    graph_settings = [g == "on" for g in args.cuda_graphs.split(",")] if on_gpu else [False]
    rows: dict[tuple[Any, ...], list[tuple[float, float, float, int]]] = {}
    for _ in range(args.repeats):
        for backend in backends:
            for n in sizes:
                for workers in worker_counts:
                    for graphs in graph_settings:
                        measured = population(n, steps, args.device, backend, threads, workers, graphs)
                        rows.setdefault((backend, n, workers, graphs), []).append(measured)
    for (backend, n, _, graphs), runs in rows.items():
        rate, cpu_rate = max(r[0] for r in runs), max(r[1] for r in runs)
        final, used = runs[0][2], runs[0][3]
        ratio = f"{rate / reference[0]:.2f}x" if reference else ""
        cpu_ratio = f"{cpu_rate / reference[1]:.2f}x" if reference else ""
        label = f"{backend}{', CUDA graphs' if graphs else ''}"
        print(
            f"| {label} | {n} | {used} | {rate:,.0f} | {ratio} | {cpu_rate:,.0f} | {cpu_ratio} | {final:.1f} |"
        )
    if args.profile:
        n = max(sizes)
        for backend in backends:
            rows = profile(n, args.device, backend)
            total = sum(us * calls for _, us, calls in rows)
            print(f"\nprofile, {backend}, N = {n}: {total:,.0f} us per population step "
                  f"({n * 1e6 / total:,.0f} agent-steps/s from the components)")  # fmt: skip
            print("| component | us per call | calls per step | us per step | share |")
            print("|---|---:|---:|---:|---:|")
            for name, us, calls in rows:
                print(f"| {name} | {us:,.1f} | {calls:.2f} | {us * calls:,.1f} | {us * calls / total:.0%} |")
            if th.device(args.device).type != "cpu":
                continue
            update_us, by_part, mflop = update_breakdown(n, backend)
            matmul_us = by_part["matrix products"]
            print(
                f"\nan update of N = {n}, {backend}: {update_us:,.0f} us; its matrix products are {mflop:.1f} MFLOP"
            )
            print("| part | us per update | share |")
            print("|---|---:|---:|")
            for part, us in by_part.items():
                print(f"| {part} | {us:,.0f} | {us / update_us:.0%} |")
            rate = mflop / matmul_us * 1e3
            # One update every update_interval steps: the products alone would allow this many agent-steps/s.
            bound = n * _config(steps, "cpu", backend).update_interval / (matmul_us * 1e-6)
            print(f"matrix products at {rate:.0f} GFLOP/s: alone they would allow {bound:,.0f} agent-steps/s "
                  f"per process{f' ({bound / reference[0]:.1f}x the single agent)' if reference else ''}")  # fmt: skip


if __name__ == "__main__":
    main()
