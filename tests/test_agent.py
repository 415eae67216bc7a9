"""Using a trained agent from Python: ``qiter.load_agent`` -> ``predict`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th

import qiter
from qiter import runs
from qiter.dqn import DQNConfig, train
from qiter.errors import QiterError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    config = DQNConfig(
        n_timesteps=1000, learning_starts=100, evaluation_interval=500, n_eval_episodes=2, seed=5
    )
    train(config, folder, progress=False, verbose=0)
    return folder


def test_predict_one_observation_and_a_batch(run_dir: Path) -> None:
    agent = qiter.load_agent(run_dir)
    assert agent.algo == "dqn" and agent.config.env_id == "CartPole-v1"
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    batch = agent.predict(observations)
    assert batch.shape == (5,)
    one = [agent.predict(obs) for obs in observations]
    assert all(isinstance(a, int) for a in one)
    # The same greedy actions as the network's own argmax.
    q_net = agent.agent.q_net  # type: ignore[attr-defined]
    with th.no_grad():
        expected = q_net(th.as_tensor(observations)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(batch, expected)
    np.testing.assert_array_equal(one, expected)
    with pytest.raises(QiterError, match="does not fit"):
        agent.predict(np.zeros(3))


def test_evaluate_by_id_by_env_and_from_a_checkpoint(run_dir: Path) -> None:
    agent = qiter.load_agent(run_dir / "checkpoints" / "latest.pt")
    by_id = agent.evaluate("CartPole-v1", n_episodes=3, seed=1)
    env = gym.make("CartPole-v1")
    by_env = agent.evaluate(env, n_episodes=3, seed=1)
    env.close()
    assert len(by_id.returns) == 3
    np.testing.assert_array_equal(by_id.returns, by_env.returns)
    assert "over 3 episodes" in str(by_id)


def test_the_final_evaluation_is_reproduced(run_dir: Path) -> None:
    """The run's eval.json figure comes back from the loaded agent with the same episodes."""
    import json

    saved = json.loads((run_dir / "eval.json").read_text())
    agent = qiter.load_agent(run_dir)
    again = agent.evaluate(n_episodes=saved["episodes"], seed=5 + 10_000)
    assert again.mean_return == pytest.approx(saved["mean_return"])


def test_bad_paths_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(QiterError, match="does not exist"):
        qiter.load_agent(tmp_path / "nope")
    with pytest.raises(QiterError, match="no checkpoint"):
        qiter.load_agent(tmp_path)
    runs.save_checkpoint(tmp_path / "other.pt", {"format": "qiter-other-v9", "algo": "sarsa"})
    with pytest.raises(QiterError, match="unknown algorithm 'sarsa'"):
        qiter.load_agent(tmp_path / "other.pt")
    runs.save_checkpoint(tmp_path / "old.pt", {"format": "qiter-dqn-v1", "algo": "dqn"})
    with pytest.raises(QiterError, match="reads 'qiter-dqn-v2'"):
        qiter.load_agent(tmp_path / "old.pt")
