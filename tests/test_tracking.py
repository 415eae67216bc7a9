"""Following a run from outside: periodic evaluation videos and Weights & Biases tracking (offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qiter.cli import main
from qiter.dqn import DQNConfig
from qiter.dqn.agent import DQNAgent
from qiter.run_loop import train
from qiter.runs import read_csv
from qiter.tracking import EvaluationVideos

SMALL = {
    "env_id": "CartPole-v1", "n_timesteps": 800, "learning_starts": 100, "evaluation_interval": 200,
    "target_network_update_interval": 200,
}  # fmt: skip


def test_video_every_records_every_nth_evaluation_and_changes_nothing(tmp_path: Path) -> None:
    config = DQNConfig(**SMALL, n_eval_episodes=1, seed=3)
    videos = EvaluationVideos(tmp_path / "with" / "videos", every=2, seed=3)
    train(DQNAgent, config, tmp_path / "with", progress=False, verbose=0, events=[videos], tensorboard=False)
    # Evaluations at 200, 400, 600, 800: videos at the 2nd and the 4th.
    assert [step for step, _ in videos.recorded] == [400, 800]
    assert sorted(p.name for p in (tmp_path / "with" / "videos").iterdir()) == [
        "dqn-CartPole-v1-step-400.mp4", "dqn-CartPole-v1-step-800.mp4",
    ]  # fmt: skip
    assert all(path.stat().st_size > 1000 for _, path in videos.recorded)
    # The videos draw from no stream of the training run: the same episodes and evaluations without them.
    train(DQNAgent, config, tmp_path / "without", progress=False, verbose=0, tensorboard=False)
    for kind, column in (("episodes", "return"), ("eval", "mean_return")):
        assert list(read_csv(tmp_path / "with", kind)[column]) == list(
            read_csv(tmp_path / "without", kind)[column]
        )


def test_video_every_is_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--steps", "2000", "--video-every"]
    assert main([*argv, "0"]) == 2
    assert main([*argv, "1", "--set", "evaluation_interval=0"]) == 2
    err = capsys.readouterr().err
    assert "--video-every must be at least 1" in err and "evaluation_interval is 0" in err
    assert not any(tmp_path.iterdir())


def test_track_without_wandb_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as on a machine without it: the import fails
    assert main(["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--track"]) == 2
    assert 'pip install "qiter[track]"' in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_track_sends_config_metrics_and_videos_to_wandb_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    wandb_cli = shutil.which("wandb")
    if wandb_cli is None:
        pytest.skip("the wandb command is not on PATH")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    argv = ["train", "CartPole-v1", "--run-dir", str(run), "--steps", "1200", "--set", "learning_starts=100"]
    argv += ["--set", "evaluation_interval=400", "--set", "n_eval_episodes=1", "--no-progress"]
    assert main([*argv, "--track", "--video-every", "2", "--video"]) == 0
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    # The run's transaction log, read back by wandb itself.
    done = subprocess.run([wandb_cli, "leet", "inspect", "--json", str(log)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    (start,) = [r["run"] for r in records if r["type"] == "run"]
    config = start["config"]["update"]
    assert config["algo"] == "dqn" and config["env_id"] == "CartPole-v1" and config["n_timesteps"] == 1200
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {key for item in history for key in item}
    assert {"global_step", "episodes/return", "train/loss", "train/mean_q", "eval/mean_return"} <= logged
    assert [item["global_step"] for item in history if "eval/mean_return" in item] == [400, 800, 1200]
    assert [item["global_step"] for item in history if "videos/evaluation.path" in item] == [800]
    assert any("videos/final.path" in item for item in history)
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"].get("update", {}))
    final = json.loads((run / "eval.json").read_text())
    assert summary["final/mean_return"] == pytest.approx(final["mean_return"])
    media = sorted(p.name.split("_")[0] for p in run.glob("wandb/offline-run-*/files/media/videos/**/*.mp4"))
    assert media == ["evaluation", "final"]
