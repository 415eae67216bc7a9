"""Smoke runs of both pixel paths as a user runs them: train, checkpoint, resume, ``qiter eval --video``.

A few hundred steps of MinAtar Breakout and of Atari Pong (with the ROMs ale-py's wheel ships), through the CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qiter.cli import main
from qiter.runs import load_checkpoint

pytest.importorskip("ale_py")
pytest.importorskip("minatar")

SMALL = [
    "--set", "learning_starts=100", "--set", "batch_size=8", "--set", "replay_buffer_size=1000",
    "--set", "update_interval=4", "--set", "evaluation_interval=100000", "--set", "n_eval_episodes=1",
    "--set", "checkpoint_interval=100", "--save-buffer", "--no-progress",
]  # fmt: skip


def first_frame(video: Path) -> np.ndarray:
    from moviepy import VideoFileClip

    with VideoFileClip(str(video)) as clip:
        return np.asarray(clip.get_frame(min(0.5, clip.duration / 2)))


@pytest.mark.parametrize(
    ("env_id", "name", "memory"),
    [
        ("MinAtar/Breakout-v1", "MinAtar_Breakout-v1", "0.00044 GB"),
        ("ALE/Pong-v5", "ALE_Pong-v5", "0.0075 GB"),
    ],
)
def test_train_resume_eval_video(
    env_id: str, name: str, memory: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", env_id, "--run-dir", str(run), "--steps", "200", *SMALL]) == 0
    out = capsys.readouterr().out
    assert f"replay buffer: 1000 transitions, {memory}" in out
    assert (run / "checkpoints" / "latest.pt").is_file()
    argv = ["train", "--resume", str(run), "--steps", "300", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Resuming" in out and "at step 200" in out
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] == 300
    assert main(["eval", str(run), "--episodes", "1", "--video"]) == 0
    videos = list((run / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == [f"eval-{name}.mp4"] and videos[0].stat().st_size > 1000
    frame = first_frame(videos[0]).astype(int)
    # In colour: some pixels' red, green and blue differ (a grayscale frame has none).
    assert frame.ndim == 3 and frame.shape[2] == 3
    assert (np.abs(frame[..., 0] - frame[..., 1]) > 30).mean() > 0.01
