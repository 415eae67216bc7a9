"""Where a DQN training step's time goes: qiter's loop and the seed's, component by component.

Each component of the loop (env step, acting, storing, sampling, the gradient update, the target copy)
is timed on its own, in microseconds per call, then weighted by how often the seed's CartPole schedule
calls it (greedy acting on ~91% of the steps of an 80k run, an update every 2 steps after step 1000, a
target copy every 10 steps). "Bookkeeping" is what a full training run costs per step beyond those
components (schedule, counters, Python glue), measured in the same process.

``--pyinstrument`` also profiles a full qiter run and a full seed run with pyinstrument and prints the
call trees (``--pyinstrument-out DIR`` writes them as HTML).

Usage: ``python benchmarks/profile_dqn.py [--steps 20000] [--pyinstrument]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_dqn
import seed_reference


def per_call_us(fn: Callable[[], object], n: int) -> float:
    """Best-of-3 mean time of ``fn()`` in microseconds."""
    for _ in range(min(n, 200)):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def schedule_weights(steps: int) -> dict[str, float]:
    """How often each component runs per environment step under the seed's CartPole schedule."""
    s = bench_dqn.SETTINGS
    anneal = int(s["exploration_fraction"] * steps)
    t = np.arange(1, steps + 1)
    eps = s["exploration_initial_eps"] + np.minimum(t / anneal, 1.0) * (
        s["exploration_final_eps"] - s["exploration_initial_eps"]
    )
    n_updates = sum(1 for k in range(1, steps + 1) if k % s["train_freq"] == 0 and k > s["learning_starts"])
    return {
        "greedy": float(1.0 - eps.mean()),
        "random": float(eps.mean()),
        "update": n_updates / steps,
        "target": (steps // s["target_update_interval"]) / steps,
    }


def stepper(env: gym.Env, actions: np.ndarray) -> Callable[[], object]:
    state = {"i": 0}
    env.reset(seed=0)

    def step() -> object:
        i = state["i"] = (state["i"] + 1) % len(actions)
        _, _, terminated, truncated, _ = env.step(int(actions[i]))
        if terminated or truncated:
            env.reset()
        return None

    return step


def filled(buffer: object, env: gym.Env, n: int) -> None:
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(n):
        action = int(rng.integers(2))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.store_transition(obs, next_obs, action, float(reward), terminated)  # type: ignore[attr-defined]
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()


def qiter_components(n: int) -> dict[str, float]:
    from qiter.dqn.agent import DQNAgent, linear_schedule
    from qiter.dqn.config import DQNConfig
    from qiter.envs import make_env

    config = bench_dqn.qiter_config(20_000, 2022, "numpy")
    assert isinstance(config, DQNConfig)
    env = make_env(config.env_id, flatten=True)
    agent = DQNAgent(config, env.observation_space, env.action_space)
    rng = agent.rng
    learner, buffer = agent.learner, agent.buffer
    filled(buffer, env, 50_000)
    obs, _ = env.reset(seed=0)
    samples = buffer.sample(64)
    out = {
        "env step": per_call_us(stepper(env, rng.integers(0, 2, 10_000)), n),
        "epsilon schedule": per_call_us(lambda: linear_schedule(1.0, 0.04, 5000, 8000), n),
        "epsilon coin (rng.random)": per_call_us(lambda: rng.random() < 0.04, n),
        "random action (rng.integers)": per_call_us(lambda: int(rng.integers(2)), n),
        "greedy action (learner.act)": per_call_us(lambda: learner.act(obs), n),
        "store transition": per_call_us(lambda: buffer.store_transition(obs, obs, 1, 1.0, False, False), n),
        "sample batch 64": per_call_us(lambda: buffer.sample(64), n),
        "gradient update (learner.update)": per_call_us(lambda: learner.update(samples), n // 4),
        "target copy": per_call_us(lambda: learner.update_target(1.0), n),
    }
    env.close()
    return out


def seed_components(n: int) -> dict[str, float]:
    th.manual_seed(0)
    np.random.seed(0)
    env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.FlattenObservation(gym.make("CartPole-v1")))
    q_net = seed_reference.QNetwork(env.observation_space, env.action_space, 64)
    q_target = seed_reference.QNetwork(env.observation_space, env.action_space, 64)
    optimizer = th.optim.Adam(q_net.parameters(), lr=1e-3)
    buffer = seed_reference.ReplayBuffer(100_000, env.observation_space, env.action_space)
    filled(buffer, env, 50_000)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    space = env.action_space
    greedy = lambda: seed_reference.epsilon_greedy_action_selection(q_net, obs, 0.0, space)  # noqa: E731
    random_action = lambda: seed_reference.epsilon_greedy_action_selection(q_net, obs, 1.0, space)  # noqa: E731
    sample_update = lambda: seed_reference.dqn_update(q_net, q_target, optimizer, buffer, 64, 0.99)  # noqa: E731
    out = {
        "env step": per_call_us(stepper(env, rng.integers(0, 2, 10_000)), n),
        "epsilon schedule": per_call_us(lambda: seed_reference.linear_schedule(1.0, 0.04, 5000, 8000), n),
        "random action (coin + action_space.sample)": per_call_us(random_action, n),
        "greedy action (coin + no_grad, as_tensor, forward, argmax)": per_call_us(greedy, n),
        "store transition": per_call_us(lambda: buffer.store_transition(obs, obs, 1, 1.0, False), n),
        "sample batch 64 (+ to_torch)": per_call_us(lambda: buffer.sample(64).to_torch(), n),
        "gradient update incl. sampling (dqn_update)": per_call_us(sample_update, n // 4),
        "target copy (load_state_dict)": per_call_us(lambda: q_target.load_state_dict(q_net.state_dict()), n),
    }
    env.close()
    return out


def breakdown_table(
    name: str, comp: dict[str, float], weights: dict[str, float], total_us: float
) -> list[str]:
    """Per-step cost of each component (us per call x calls per step), and the unexplained rest."""
    w = weights
    per_step: dict[str, float] = {}
    for key, us in comp.items():
        if (
            key.startswith("env step")
            or key.startswith("store")
            or key.startswith("epsilon schedule")
            or key.startswith("epsilon coin")
        ):
            weight = 1.0
        elif key.startswith("random"):
            weight = w["random"]
        elif key.startswith("greedy"):
            weight = w["greedy"]
        elif key.startswith("sample") or key.startswith("gradient update"):
            weight = w["update"]
        elif key.startswith("target"):
            weight = w["target"]
        else:  # pragma: no cover
            weight = 1.0
        per_step[key] = us * weight
    if "seed" in name:
        # dqn_update samples by itself: do not count sampling twice.
        sampled = [k for k in per_step if k.startswith("sample")]
        for k in sampled:
            per_step[k + " (part of the update below)"] = per_step.pop(k)
    accounted = sum(v for k, v in per_step.items() if "part of the update" not in k)
    lines = [
        f"**{name}**: {total_us:.1f} us per step measured over a full run ({1e6 / total_us:,.0f} steps/s)",
        "",
        "| component | us per call | calls per step | us per step | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, us in comp.items():
        k2 = key if key in per_step else key + " (part of the update below)"
        calls = per_step[k2] / us if us else 0.0
        share = "" if "part of the update" in k2 else f"{100 * per_step[k2] / total_us:.0f}%"
        lines.append(f"| {k2} | {us:.1f} | {calls:.3f} | {per_step[k2]:.1f} | {share} |")
    rest = total_us - accounted
    lines.append(f"| bookkeeping (rest of the loop) | | 1 | {rest:.1f} | {100 * rest / total_us:.0f}% |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-step cost breakdown of qiter's DQN loop and the seed's."
    )
    parser.add_argument(
        "--steps", type=int, default=20_000, help="steps of the full runs that give the per-step total"
    )
    parser.add_argument("--calls", type=int, default=20_000, help="calls per component timing")
    parser.add_argument(
        "--pyinstrument", action="store_true", help="also profile full runs with pyinstrument"
    )
    parser.add_argument("--pyinstrument-out", type=Path, default=None, help="write pyinstrument HTML here")
    args = parser.parse_args(argv)
    th.set_num_threads(1)

    weights = schedule_weights(args.steps)
    print(
        f"Calls per step for a {args.steps:,}-step run: "
        + ", ".join(f"{k} {v:.3f}" for k, v in weights.items())
    )
    totals = {}
    for variant in ("numpy", "seed"):
        m = bench_dqn.run_variant(variant, args.steps, 2022)
        totals[variant] = 1e6 * m.wall_time / m.steps
    lines = breakdown_table("qiter, numpy backend", qiter_components(args.calls), weights, totals["numpy"])
    lines += ["", *breakdown_table("seed loop", seed_components(args.calls), weights, totals["seed"])]
    print("\n".join(lines), flush=True)

    if args.pyinstrument or args.pyinstrument_out:
        from pyinstrument import Profiler

        for variant in ("numpy", "seed"):
            profiler = Profiler(interval=0.0005)
            profiler.start()
            bench_dqn.run_variant(variant, args.steps, 2022)
            profiler.stop()
            print(f"\n===== pyinstrument: {variant} =====")
            print(profiler.output_text(unicode=False, color=False, show_all=False))
            if args.pyinstrument_out:
                args.pyinstrument_out.mkdir(parents=True, exist_ok=True)
                (args.pyinstrument_out / f"profile_{variant}.html").write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
