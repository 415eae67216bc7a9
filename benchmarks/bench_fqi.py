"""FQI speed: the seed tutorial's loop against :func:`qiter.fqi.fitted_q_iteration`, on the same data.

Usage::

    python benchmarks/bench_fqi.py [--regressor knn] [--steps 50000] [--iterations 20] [--seed 0]

Both runs start from the same seeded random CartPole transitions and run the same number of iterations
without evaluations (they are the same greedy rollouts in both and would only dilute the comparison).
The script checks that the final models give the same Q-values (and the same targets at every iteration),
then prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from qiter.fqi import collect_data, fitted_q_iteration, make_regressor


def seed_get_q_values(model: Any, obs: np.ndarray, n_actions: int) -> np.ndarray:
    """The seed's get_q_values: one ``predict`` per action."""
    batch_size = len(obs)
    q_values = np.zeros((batch_size, n_actions))
    for action_idx in range(n_actions):
        actions = action_idx * np.ones((batch_size, 1))
        model_input = np.concatenate((obs, actions), axis=1)
        q_values[:, action_idx] = model.predict(model_input)
    return q_values


def seed_fqi(
    data: Any, model_class: Any, n_iterations: int, gamma: float, n_actions: int
) -> tuple[Any, list[float]]:
    """The seed's FQI loop (solution cell), without its periodic evaluations."""
    targets = data.rewards.copy()
    current_obs_input = np.concatenate((data.observations, data.actions), axis=1)
    model = model_class().fit(current_obs_input, targets)
    target_means = [float(targets.mean())]
    for _ in range(n_iterations):
        q_values_next = seed_get_q_values(model, data.next_observations, n_actions)
        max_q_values_next = np.max(q_values_next, axis=1)
        targets = data.rewards + gamma * max_q_values_next * np.logical_not(data.terminateds)
        model = model_class().fit(current_obs_input, targets)
        target_means.append(float(targets.mean()))
    return model, target_means


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--regressor", default="knn", help="a name of qiter.fqi.REGRESSORS")
    parser.add_argument("--steps", type=int, default=50_000, help="number of random CartPole transitions")
    parser.add_argument("--iterations", type=int, default=20, help="FQI iterations")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data collection")
    args = parser.parse_args()

    data = collect_data("CartPole-v1", n_steps=args.steps, seed=args.seed)
    model_class = make_regressor(args.regressor, seed=args.seed)
    n_actions, gamma = 2, 0.99

    start = time.perf_counter()
    seed_model, seed_means = seed_fqi(data, model_class, args.iterations, gamma, n_actions)
    seed_time = time.perf_counter() - start

    start = time.perf_counter()
    model, history = fitted_q_iteration(
        data,
        model_class,
        n_iterations=args.iterations,
        gamma=gamma,
        eval_freq=0,
        n_actions=n_actions,
        verbose=False,
    )
    our_time = time.perf_counter() - start

    rng = np.random.default_rng(args.seed)
    test_obs = np.concatenate((data.next_observations, data.observations[rng.permutation(len(data))[:1000]]))
    seed_q = seed_get_q_values(seed_model, test_obs, n_actions)
    our_q = seed_get_q_values(model, test_obs, n_actions)
    q_diff = float(np.max(np.abs(seed_q - our_q)))
    mean_diff = max(abs(a - h.target_mean) for a, h in zip(seed_means, history))
    scale = float(np.max(np.abs(seed_q)))
    ok = q_diff <= 1e-6 * max(1.0, scale) and mean_diff <= 1e-6 * max(1.0, scale)

    print(f"regressor={args.regressor} steps={args.steps} iterations={args.iterations}")
    print(f"seed loop      : {seed_time:8.2f} s")
    print(f"qiter FQI      : {our_time:8.2f} s")
    print(f"speed-up       : {seed_time / our_time:8.1f}x")
    print(f"max |dQ|       : {q_diff:.2e} (Q up to {scale:.1f}); max |d mean target| {mean_diff:.2e}")
    print("Q-values agree" if ok else "Q-VALUES DIFFER")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
