"""The generic run loop: run folders, resume, logs that never repeat a step, events, several env copies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from dqn_helpers import small_config as base_config

from qiter import runs
from qiter.agent import Agent
from qiter.dqn import DQNConfig, train
from qiter.errors import QiterError, QiterWarning
from qiter.run_loop import RunEvents


def small_config(**kwargs: object) -> DQNConfig:
    """The tests' small config, evaluated every 500 steps."""
    return base_config(**{"evaluation_interval": 500, **kwargs})


class Crash(Exception):
    """Stands for a kill: the run stops between two checkpoints."""


def crash_at(step: int):  # type: ignore[no-untyped-def]
    def on_evaluation(at: int, mean: float, std: float, q_net: object) -> None:
        if at >= step:
            raise Crash

    return on_evaluation


def assert_steps_once_and_increasing(run_dir: Path, kind: str) -> None:
    steps = runs.read_csv(run_dir, kind)["step"]
    assert np.all(np.diff(steps) >= 0), f"{kind}.csv steps go backwards: {steps}"
    if kind != "episodes":  # two copies may end episodes at the same step; one row per step elsewhere
        assert len(np.unique(steps)) == len(steps), f"{kind}.csv repeats steps: {steps}"


def test_resume_after_a_crash_logs_each_step_once(tmp_path: Path) -> None:
    """A run stopped after its checkpoint at 1000 has logged up to 1500; the resumed run logs 1000..2000."""
    config = small_config(checkpoint_interval=1000, save_buffer=True)
    with pytest.raises(Crash):
        train(config, tmp_path, progress=False, verbose=0, on_evaluation=crash_at(1500))
    assert runs.read_csv(tmp_path, "eval")["step"][-1] == 1500
    result = train(config, tmp_path, resume=True, progress=False, verbose=0)
    assert result.steps == 2000
    for kind in ("episodes", "train", "eval"):
        assert_steps_once_and_increasing(tmp_path, kind)
    np.testing.assert_array_equal(runs.read_csv(tmp_path, "eval")["step"], [500, 1000, 1500, 2000])
    assert [e["step"] for e in result.eval_history] == [500, 1000, 1500, 2000]


def test_resume_hides_the_lost_steps_from_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = small_config(checkpoint_interval=1000, save_buffer=True)
    with pytest.raises(Crash):
        train(config, tmp_path, progress=False, verbose=0, on_evaluation=crash_at(1500))
    train(config, tmp_path, resume=True, progress=False, verbose=0)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("eval/mean_return")]
    assert steps == [500, 1000, 1500, 2000]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    rows = len(runs.read_csv(tmp_path, "episodes")["step"])
    with pytest.raises(QiterError, match=r"already holds a run.*--resume.*--overwrite"):
        train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    assert len(runs.read_csv(tmp_path, "episodes")["step"]) == rows, "the refused run wrote rows"
    (tmp_path / "notes.txt").write_text("mine")
    train(small_config(n_timesteps=500, seed=4), tmp_path, overwrite=True, progress=False, verbose=0)
    assert runs.load_run_config(tmp_path)["seed"] == 4
    assert_steps_once_and_increasing(tmp_path, "eval")
    assert (tmp_path / "notes.txt").read_text() == "mine", "overwrite removes only a run's own files"


def test_resume_without_a_saved_buffer_warns(tmp_path: Path) -> None:
    train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    with pytest.warns(QiterWarning, match="empty replay buffer"):
        train(small_config(n_timesteps=1000), tmp_path, resume=True, progress=False, verbose=0)


def test_resume_with_a_saved_buffer_does_not_warn(tmp_path: Path) -> None:
    import warnings

    train(small_config(n_timesteps=500, save_buffer=True), tmp_path, progress=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QiterWarning)
        train(
            small_config(n_timesteps=1000, save_buffer=True), tmp_path, resume=True, progress=False, verbose=0
        )


def test_resume_applies_changed_settings(tmp_path: Path) -> None:
    train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    changed = small_config(n_timesteps=1000, learning_rate=0.5, double_dqn=True)
    with pytest.warns(QiterWarning):
        result = train(changed, tmp_path, resume=True, progress=False, verbose=0)
    assert result.agent.learner.learning_rate == 0.5  # type: ignore[attr-defined]
    assert result.agent.learner.double_dqn  # type: ignore[attr-defined]
    state = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["config"]["learning_rate"] == 0.5
    assert state["agent"]["optimizer"]["lr"] == 0.5


def test_the_run_folder_gets_the_final_evaluation(tmp_path: Path) -> None:
    result = train(small_config(n_timesteps=500), tmp_path, progress=False, verbose=0)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert result.final_evaluation is not None
    assert saved["mean_return"] == pytest.approx(result.final_evaluation.mean_return)
    assert saved["episodes"] == 2 and saved["algo"] == "dqn" and saved["steps"] == 500


class Recorder(RunEvents):
    def __init__(self, stop_after: int | None = None) -> None:
        self.episodes: list[tuple[int, float, int]] = []
        self.evaluations: list[int] = []
        self.checkpoints: list[tuple[int, str, bool]] = []
        self.stop_after = stop_after

    def on_episode(self, step: int, episode_return: float, episode_length: int) -> None:
        self.episodes.append((step, episode_return, episode_length))

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: Agent) -> bool | None:
        self.evaluations.append(step)
        return self.stop_after is not None and len(self.evaluations) >= self.stop_after

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path.name, path.exists()))


def test_events_follow_the_run(tmp_path: Path) -> None:
    recorder = Recorder()
    result = train(
        small_config(checkpoint_interval=1000), tmp_path, progress=False, verbose=0, events=[recorder]
    )
    assert len(recorder.episodes) == result.episodes
    episodes = runs.read_csv(tmp_path, "episodes")
    np.testing.assert_allclose([r for _, r, _ in recorder.episodes], episodes["return"])
    assert recorder.evaluations == [500, 1000, 1500, 2000]
    latest = [(step, exists) for step, name, exists in recorder.checkpoints if name == "latest.pt"]
    assert latest[0] == (1000, False), "on_checkpoint comes before the file is written"


def test_an_event_can_stop_the_run() -> None:
    recorder = Recorder(stop_after=2)
    result = train(small_config(), progress=False, verbose=0, events=[recorder])
    assert result.stopped_early and result.steps == 1000


def test_several_env_copies_end_to_end(tmp_path: Path) -> None:
    config = small_config(n_envs=4, n_timesteps=4000, evaluation_interval=1000, n_steps=3, save_buffer=True)
    result = train(config, tmp_path, progress=False, verbose=0)
    assert result.steps == 4000
    agent = result.agent
    assert agent.num_timesteps == 4000 and len(agent.buffer) == 4000  # type: ignore[attr-defined]
    episodes = runs.read_csv(tmp_path, "episodes")
    assert len(episodes["return"]) == result.episodes > 4
    # Every step of every copy is in exactly one episode, but for the episodes still running at the end.
    assert episodes["length"].sum() <= 4000 and episodes["length"].sum() > 4000 - 4 * 500
    for kind in ("episodes", "train", "eval"):
        assert_steps_once_and_increasing(tmp_path, kind)
    # Updates every 2 steps after 200: 1900 gradient steps, counted by Adam.
    state = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert state["agent"]["optimizer"]["step"] == (4000 - 200) // 2
    assert math.isfinite(result.final_evaluation.mean_return)  # type: ignore[union-attr]


@pytest.mark.slow
def test_several_env_copies_learn_cartpole() -> None:
    """Four copies, the stable preset's settings: the agent balances the pole (seed 100, not a reported one)."""
    from qiter.resolve import resolve_config

    config = resolve_config(
        "CartPole-v1", "CartPole-v1-stable", overrides=["n_envs=4", "stop_at_return=none"], seed=100
    )
    result = train(config, progress=False, verbose=0)
    best = max(e["mean_return"] for e in result.eval_history)
    assert best >= 475, result.eval_history


def test_resume_without_buffer_waits_for_learning_starts_again(tmp_path: Path) -> None:
    train(small_config(n_timesteps=1000), tmp_path, progress=False, verbose=0)
    before = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["agent"]["optimizer"]["step"]
    with pytest.warns(QiterWarning, match="learning_starts"):
        train(small_config(n_timesteps=1300), tmp_path, resume=True, progress=False, verbose=0)
    after = runs.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["agent"]["optimizer"]["step"]
    # Steps 1001..1200 refill the buffer; updates every 2 steps from 1201 to 1300.
    assert after - before == 50


def test_a_wrong_environment_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(QiterError, match="DQN needs"):
        train(small_config(env_id="Pendulum-v1"), tmp_path / "run", progress=False, verbose=0)
    assert not (tmp_path / "run").exists()


def test_train_csv_logs_the_mean_and_max_q(tmp_path: Path) -> None:
    train(small_config(), tmp_path / "run", progress=False, verbose=0, tensorboard=False)
    logged = runs.read_csv(tmp_path / "run", "train")
    assert len(logged["max_q"]) > 0 and np.all(logged["max_q"] >= logged["mean_q"])


def test_q_value_bound() -> None:
    assert small_config(max_reward=1.0, gamma=0.99).q_value_bound() == pytest.approx(100.0)
    assert small_config().q_value_bound() is None  # no max_reward declared
    assert small_config(max_reward=1.0, gamma=1.0).q_value_bound() is None
    # Rewards all negative (MountainCar's -1 per step): the best return is one step, then the end.
    assert small_config(max_reward=-1.0, gamma=0.98).q_value_bound() == pytest.approx(-1.0)
    assert small_config(max_reward=0.0, gamma=0.99).q_value_bound() == 0.0


def test_a_mean_q_above_the_bound_warns_once(tmp_path: Path) -> None:
    # CartPole pays 1 per step; declaring 0.01 makes the bound 1, which the critic passes within 2000 steps.
    with pytest.warns(
        QiterWarning, match=r"mean Q-value is .*, while no return can exceed 1 \(max_reward / \(1 - gamma\)\)"
    ) as caught:
        train(small_config(max_reward=0.01), tmp_path / "run", progress=False, verbose=0, tensorboard=False)
    assert sum("mean Q-value" in str(w.message) for w in caught) == 1


def test_a_mean_q_within_the_bound_does_not_warn(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", QiterWarning)
        train(small_config(max_reward=1.0), tmp_path / "run", progress=False, verbose=0, tensorboard=False)
