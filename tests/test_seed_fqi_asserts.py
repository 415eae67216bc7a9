"""The seeds' FQI cells (tutorial and RLSS notebook), run on qiter's names: every ``assert`` they make holds."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsRegressor

from qiter.errors import QiterError
from qiter.fqi import OfflineData, collect_data, evaluate, get_q_values, load_data, save_data


@pytest.fixture(scope="module")
def seed_data() -> OfflineData:
    return collect_data(env_id="CartPole-v1", n_steps=50_000, seed=0)


def test_collect_data_cell(seed_data: OfflineData) -> None:
    env_id, n_steps, data = "CartPole-v1", 50_000, seed_data
    # Check the length of the collected data
    assert len(data.observations) == n_steps
    assert len(data.actions) == n_steps
    # Check that there are multiple episodes in the data
    assert not np.all(data.terminateds)
    assert np.any(data.terminateds)
    # Check the shape of the collected data
    if env_id == "CartPole-v1":
        assert data.observations.shape == (n_steps, 4)
        assert data.next_observations.shape == (n_steps, 4)
    assert data.actions.shape == (n_steps, 1)
    assert data.rewards.shape == (n_steps,)


def test_collect_data_asserts_box_observations() -> None:
    # The seed: assert isinstance(env.observation_space, spaces.Box)
    with pytest.raises(QiterError):
        collect_data("FrozenLake-v1", n_steps=10)


def test_save_load_and_q_values_cells(
    seed_data: OfflineData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_id = "CartPole-v1"
    output_filename = tmp_path / "data" / f"{env_id}_data"
    output_filename.parent.mkdir(parents=True, exist_ok=True)
    save_data(seed_data, output_filename)
    assert f"Saving to {output_filename}.npz" in capsys.readouterr().out

    model_class = partial(KNeighborsRegressor, n_neighbors=30)
    env = gym.make(env_id, render_mode="rgb_array")
    data = load_data(tmp_path / "data" / f"{env_id}_data.npz")
    assert isinstance(data, OfflineData)
    assert data.observations.shape == (50_000, 4)

    # First iteration
    targets = data.rewards.copy()
    current_obs_input = np.concatenate((data.observations, data.actions), axis=1)
    model = model_class().fit(current_obs_input, targets)

    n_observations = 2
    n_actions = int(env.action_space.n)
    q_values = get_q_values(model, data.observations[:n_observations], n_actions)
    assert q_values.shape == (n_observations, n_actions)

    # Evaluate the first iteration: the seed prints it, qiter also returns it
    mean, std = evaluate(model, env, n_eval_episodes=3, seed=0)
    assert "Total reward = " in capsys.readouterr().out
    assert mean > 0 and std >= 0

    # Two iterations of the solution loop, scored as the seed does
    gamma = 0.99
    for _ in range(2):
        q_values_next = get_q_values(model, data.next_observations, n_actions)
        max_q_values_next = np.max(q_values_next, axis=1)
        targets = data.rewards + gamma * max_q_values_next * np.logical_not(data.terminateds)
        model = model_class().fit(current_obs_input, targets)
    assert 0.0 < model.score(current_obs_input, targets) <= 1.0
    env.close()


def test_evaluate_asserts_discrete_actions(seed_data: OfflineData) -> None:
    # The seed: assert isinstance(env.action_space, spaces.Discrete), "FQI only support discrete actions"
    model = KNeighborsRegressor(n_neighbors=1).fit(np.zeros((2, 4)), np.zeros(2))
    with pytest.raises(QiterError, match="Discrete action"):
        evaluate(model, gym.make("MountainCarContinuous-v0"), n_eval_episodes=1)
