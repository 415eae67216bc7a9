"""qiter.fqi: Q-values, evaluation, FQI and its fast paths (same Q-values as the seed's refit loop)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from qiter.envs import make_env
from qiter.errors import QiterError
from qiter.fqi import (
    REGRESSORS,
    OfflineData,
    collect_data,
    evaluate,
    fitted_q_iteration,
    get_q_values,
    make_regressor,
)


def seed_get_q_values(model: Any, obs: np.ndarray, n_actions: int) -> np.ndarray:
    """The seed's loop over actions."""
    q_values = np.zeros((len(obs), n_actions))
    for action_idx in range(n_actions):
        model_input = np.concatenate((obs, action_idx * np.ones((len(obs), 1))), axis=1)
        q_values[:, action_idx] = model.predict(model_input)
    return q_values


def seed_fqi(data: OfflineData, model_class: Any, n_iterations: int, gamma: float, n_actions: int) -> Any:
    """The seed's FQI loop, refitting every iteration."""
    inputs = np.concatenate((data.observations, data.actions), axis=1)
    model = model_class().fit(inputs, data.rewards)
    for _ in range(n_iterations):
        next_q = seed_get_q_values(model, data.next_observations, n_actions).max(axis=1)
        targets = data.rewards + gamma * next_q * np.logical_not(data.terminateds)
        model = model_class().fit(inputs, targets)
    return model


@pytest.fixture(scope="module")
def cartpole() -> OfflineData:
    return collect_data("CartPole-v1", n_steps=3_000, seed=0)


@pytest.fixture(scope="module")
def acrobot() -> OfflineData:
    return collect_data("Acrobot-v1", n_steps=2_000, seed=0)


def test_get_q_values_batches_like_the_seed(cartpole: OfflineData) -> None:
    inputs = np.concatenate((cartpole.observations, cartpole.actions), axis=1)
    model = KNeighborsRegressor(n_neighbors=5).fit(inputs, cartpole.rewards + inputs[:, 0])
    obs = cartpole.next_observations[:100]
    np.testing.assert_array_equal(get_q_values(model, obs, 2), seed_get_q_values(model, obs, 2))


@pytest.mark.parametrize(
    "model_class",
    [
        partial(KNeighborsRegressor, n_neighbors=30),
        partial(KNeighborsRegressor, n_neighbors=7, algorithm="ball_tree"),
        LinearRegression,
        make_regressor("poly"),
        partial(make_pipeline, StandardScaler(), KNeighborsRegressor(n_neighbors=10)),
        make_regressor("tree", seed=0),
    ],
    ids=["knn30", "knn7-balltree", "linear", "poly", "scaled-knn", "tree"],
)
def test_fast_path_matches_seed_loop(cartpole: OfflineData, model_class: Any) -> None:
    ours, history = fitted_q_iteration(cartpole, model_class, n_iterations=6, eval_freq=3, verbose=False)
    theirs = seed_fqi(cartpole, model_class, 6, 0.99, 2)
    obs = np.concatenate((cartpole.next_observations, cartpole.observations[:200] + 0.01))
    np.testing.assert_allclose(get_q_values(ours, obs, 2), seed_get_q_values(theirs, obs, 2), atol=1e-9)
    # The R^2 the seed prints: the iteration-6 fit scored on its own targets
    inputs = np.concatenate((cartpole.observations, cartpole.actions), axis=1)
    before = seed_fqi(cartpole, model_class, 5, 0.99, 2)
    next_q = seed_get_q_values(before, cartpole.next_observations, 2).max(axis=1)
    targets = cartpole.rewards + 0.99 * next_q * np.logical_not(cartpole.terminateds)
    assert history[6].score == pytest.approx(
        model_class().fit(inputs, targets).score(inputs, targets), abs=1e-9
    )
    assert [h.iteration for h in history] == list(range(7))
    assert history[1].target_max <= 1.0 + 0.99 + 1e-12


def test_fast_and_slow_paths_agree_with_one_hot(acrobot: OfflineData) -> None:
    model_class = partial(KNeighborsRegressor, n_neighbors=10)
    fast, _ = fitted_q_iteration(acrobot, model_class, n_iterations=4, eval_freq=2, verbose=False)
    slow, _ = fitted_q_iteration(acrobot, model_class, n_iterations=4, eval_freq=2, verbose=False, fast=False)
    obs = acrobot.next_observations[:300]
    np.testing.assert_allclose(get_q_values(fast, obs, 3), get_q_values(slow, obs, 3), atol=1e-9)
    # 3 actions: one-hot inside the model, so the 3-argument get_q_values still works
    assert type(fast).__name__ == "Pipeline"
    with pytest.raises(QiterError, match="action indices"):
        fast.predict(np.concatenate((obs[:2], np.full((2, 1), 3.0)), axis=1))


def test_knn_ties_fall_back_to_the_regressors_own_search() -> None:
    # A lattice of states: many exactly equal distances, the hard case for matching neighbour sets
    grid = np.stack(np.meshgrid(np.arange(6.0), np.arange(6.0)), -1).reshape(-1, 2)
    obs = np.repeat(grid, 2, axis=0)
    actions = np.tile([[0.0], [1.0]], (len(grid), 1))
    rng = np.random.default_rng(0)
    data = OfflineData(obs, obs[rng.permutation(len(obs))], actions, rng.random(len(obs)), np.zeros(len(obs)))
    model_class = partial(KNeighborsRegressor, n_neighbors=4)
    ours, _ = fitted_q_iteration(data, model_class, n_iterations=5, eval_freq=0, verbose=False)
    theirs = seed_fqi(data, model_class, 5, 0.99, 2)
    np.testing.assert_allclose(get_q_values(ours, grid, 2), seed_get_q_values(theirs, grid, 2), atol=1e-12)


def test_registry_builds_every_regressor() -> None:
    for name in REGRESSORS:
        assert hasattr(make_regressor(name, seed=0)(), "fit")
    with pytest.raises(QiterError, match="unknown regressor"):
        make_regressor("svm")
    extra = make_regressor("extra-trees")()
    assert (extra.n_estimators, extra.min_samples_split, extra.max_features) == (50, 2, 1.0)


def test_evaluate_returns_mean_std_and_resets(
    cartpole: OfflineData, capsys: pytest.CaptureFixture[str]
) -> None:
    model = LinearRegression().fit(
        np.concatenate((cartpole.observations, cartpole.actions), axis=1), cartpole.rewards
    )
    mean, std = evaluate(model, make_env("CartPole-v1"), n_eval_episodes=3, seed=0)
    assert "Total reward = " in capsys.readouterr().out
    assert mean > 0 and std >= 0


def test_evaluate_records_video(cartpole: OfflineData, tmp_path: Path) -> None:
    model = LinearRegression().fit(
        np.concatenate((cartpole.observations, cartpole.actions), axis=1), cartpole.rewards
    )
    env = make_env("CartPole-v1", render_mode="rgb_array")
    evaluate(model, env, n_eval_episodes=2, video_name="fqi", video_folder=tmp_path, seed=0)
    assert (tmp_path / "fqi.mp4").stat().st_size > 0


def test_bad_inputs(cartpole: OfflineData) -> None:
    with pytest.raises(QiterError, match="Discrete action"):
        fitted_q_iteration(cartpole, LinearRegression, env=make_env("MountainCarContinuous-v0"))
    with pytest.raises(QiterError, match="observation shape"):
        fitted_q_iteration(cartpole, LinearRegression, env=make_env("Acrobot-v1"))
    with pytest.raises(QiterError, match="encoding"):
        fitted_q_iteration(cartpole, LinearRegression, action_encoding="binary")  # type: ignore[arg-type]


@pytest.mark.slow
def test_fqi_knn_learns_cartpole() -> None:
    """The seed's setting: kNN (k=30), 50k random transitions, 20 iterations, gamma 0.99."""
    data = collect_data("CartPole-v1", n_steps=50_000, seed=1)
    model, history = fitted_q_iteration(
        data, make_regressor("knn"), n_iterations=20, gamma=0.99, eval_freq=0, verbose=False
    )
    mean, _ = evaluate(model, make_env("CartPole-v1"), n_eval_episodes=10, seed=1)
    assert mean >= 300, f"mean return {mean}"
    assert len(history) == 21
