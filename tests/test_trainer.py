"""The DQN trainer: options, run folder, checkpoints, resume, divergence, and the two learners agreeing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch as th
from dqn_helpers import small_config

from qiter import runs
from qiter.dqn import DivergenceError, train
from qiter.dqn.trainer import load_agent
from qiter.errors import QiterError


def test_run_folder_holds_config_logs_checkpoints(tmp_path: Path) -> None:
    result = train(small_config(), tmp_path, progress=False, verbose=0)
    assert result.steps == 2000 and result.episodes > 0
    assert (tmp_path / "config.yaml").exists()
    for kind in ("episodes", "train", "eval"):
        assert (tmp_path / f"{kind}.csv").exists(), kind
    assert list((tmp_path / "tb").iterdir())
    assert (tmp_path / "checkpoints" / "latest.pt").exists()
    episodes = runs.read_csv(tmp_path, "episodes")
    assert len(episodes["return"]) == result.episodes
    assert len(result.eval_history) == 2


def test_both_learners_train_to_the_same_network() -> None:
    """The numpy fast path and autograd make the same updates: the same network after 100 gradient steps.

    Over thousands of steps float rounding drifts apart (Adam amplifies it where a gradient is near zero),
    which then changes the actions and the data; ``test_core.py`` checks each update on its own.
    """
    config = {"evaluation_interval": 0, "n_timesteps": 400}
    fast = train(small_config(backend="numpy", **config), progress=False, verbose=0)
    reference = train(small_config(backend="torch", **config), progress=False, verbose=0)
    for p_fast, p_ref in zip(fast.q_net.parameters(), reference.q_net.parameters()):
        assert th.allclose(p_fast, p_ref, atol=1e-5), (p_fast - p_ref).abs().max()


def test_exponential_exploration_per_episode(tmp_path: Path) -> None:
    config = small_config(
        exploration_schedule="exponential",
        exploration_initial_eps=0.7,
        exploration_final_eps=0.001,
        exploration_decay_episodes=10.0,
        target_update_unit="episodes",
        target_network_update_interval=5,
    )
    train(config, tmp_path, progress=False, verbose=0)
    episodes = runs.read_csv(tmp_path, "episodes")
    # The epsilon logged with episode k (k = 1, 2, ...) was the one used during it: decayed k - 1 times.
    k = np.arange(len(episodes["epsilon"]))
    expected = 0.001 + (0.7 - 0.001) * np.exp(-k / 10.0)
    np.testing.assert_allclose(episodes["epsilon"], expected, rtol=1e-6)


def test_stop_at_return_ends_training_early() -> None:
    result = train(small_config(stop_at_return=5.0, evaluation_interval=500), progress=False, verbose=0)
    assert result.stopped_early
    assert result.steps == 500


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    config = small_config(learning_rate=1e6, learning_starts=300, checkpoint_interval=300, n_timesteps=20_000)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+"):
        train(config, tmp_path, progress=False, verbose=0)
    state = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert all(th.isfinite(v).all() for v in state["agent"]["q_net"].values())


def test_resume_continues_the_run(tmp_path: Path) -> None:
    first = train(small_config(n_timesteps=1000, save_buffer=True), tmp_path, progress=False, verbose=0)
    assert first.steps == 1000
    resumed = train(
        small_config(n_timesteps=2000, save_buffer=True), tmp_path, resume=True, progress=False, verbose=0
    )
    assert resumed.steps == 2000
    assert [e["step"] for e in resumed.eval_history] == [1000.0, 2000.0]
    state = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    # 1800 steps after learning_starts, one update every 2 steps: the optimizer's count went on.
    assert state["agent"]["optimizer"]["step"] == 900
    steps = runs.read_csv(tmp_path, "eval")["step"]
    np.testing.assert_array_equal(steps, [1000, 2000])


def test_checkpoint_from_another_network_or_env_is_refused(tmp_path: Path) -> None:
    train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    with pytest.raises(QiterError, match="cannot change n_hidden_units when resuming"):
        train(
            small_config(n_timesteps=1000, n_hidden_units=32),
            tmp_path,
            resume=True,
            progress=False,
            verbose=0,
        )
    with pytest.raises(QiterError, match="cannot change env_id when resuming"):
        train(
            small_config(env_id="Acrobot-v1", n_timesteps=1000),
            tmp_path,
            resume=True,
            progress=False,
            verbose=0,
        )


def test_load_agent_from_run_dir(tmp_path: Path) -> None:
    train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    config, q_net = load_agent(tmp_path)
    assert config.env_id == "CartPole-v1"
    assert q_net(th.zeros(1, 4)).shape == (1, 2)


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "FrozenLake-v1"])
def test_unsupported_spaces_get_a_clear_message(env_id: str) -> None:
    with pytest.raises(QiterError, match="DQN needs"):
        train(small_config(env_id=env_id), progress=False, verbose=0)


def test_variants_run_end_to_end() -> None:
    for options in (
        {"double_dqn": True, "dueling": True, "n_steps": 3, "loss": "huber", "max_grad_norm": 10.0},
        {"tau": 0.01, "target_network_update_interval": 1, "learning_rate_final": 0.0},
        {"n_steps": 3, "n_step_cut": "greedy", "activation": "tanh"},
        {"backend": "torch", "activation": "gelu", "dueling": True},
    ):
        result = train(
            small_config(n_timesteps=600, evaluation_interval=600, **options), progress=False, verbose=0
        )
        assert result.final_eval is not None and math.isfinite(result.final_eval[0])


def test_learning_rate_decay_starts_late(tmp_path: Path) -> None:
    # Constant for the first half of the run, then linear to learning_rate_final at the last step.
    config = small_config(
        n_timesteps=4000, learning_rate=1e-3, learning_rate_final=0.0, learning_rate_decay_start=0.5
    )
    train(config, tmp_path, progress=False, verbose=0, tensorboard=False)
    logged = runs.read_csv(tmp_path, "train")
    rates = dict(zip(logged["step"].astype(int), logged["learning_rate"]))
    assert rates[1000] == pytest.approx(1e-3) and rates[2000] == pytest.approx(1e-3)
    assert rates[3000] == pytest.approx(5e-4, rel=1e-3) and rates[4000] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(QiterError, match="learning_rate_decay_start"):
        small_config(learning_rate_decay_start=1.0).validate()
