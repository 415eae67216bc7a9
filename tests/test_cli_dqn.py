"""The DQN commands as a user runs them: train, eval (with video), resume, presets, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from qiter.cli import build_parser, main

SMALL = ["--steps", "1500", "--set", "evaluation_interval=500", "--set", "n_eval_episodes=2", "--no-progress"]
# Budgets this small learn only if learning starts early (the CartPole-v1 preset waits 1000 steps).
SMALL += ["--set", "learning_starts=100", "--set", "target_network_update_interval=250"]


def run_folder(root: Path) -> Path:
    (folder,) = (root / "CartPole-v1").iterdir()
    return folder


def test_train_eval_video_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # With its buffer saved, so that the resume below learns at once (without, it waits learning_starts).
    argv = ["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--seed", "1", "--save-buffer", *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Evaluation of CartPole-v1 over 2 episodes:" in out
    run = run_folder(tmp_path)
    assert run.name.startswith("dqn-1-")
    assert (run / "eval.json").exists() and (run / "config.yaml").exists()

    assert main(["eval", str(run), "--episodes", "2", "--video"]) == 0
    assert "Evaluation of CartPole-v1 over 2 episodes:" in capsys.readouterr().out
    assert (run / "videos" / "eval-CartPole-v1.mp4").stat().st_size > 1000

    assert main(["train", "--resume", str(run), "--steps", "2000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    # The steps this command trained, not the run's total (it resumed at 1500).
    assert "Resuming" in out and "Trained 500 steps (steps 1500-2000 of the run)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "CartPol-v1"], "Did you mean: CartPole-v1"),
        (["train", "Pendulum-v1"], "DQN needs a Discrete action space"),
        (["train", "FrozenLake-v1"], "DQN needs a Box observation space"),
        (["train", "CartPole-v1", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "CartPole-v1", "--set", "learning_rat=3"], "did you mean 'learning_rate'"),
        (["train"], "give an environment id"),
        (["eval", "does-not-exist"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--runs-dir", str(tmp_path)] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("qiter: error:") and message in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir()), "a failed start must not leave a run folder"


def test_presets_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    assert "CartPole-v1" in capsys.readouterr().out.split()
    assert main(["presets", "CartPole-v1"]) == 0
    assert "n_timesteps: 80000" in capsys.readouterr().out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    # The top-level help lists every command's one-line help (argparse %-formats those lines).
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "IQM with 95%" in capsys.readouterr().out
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: qiter" in capsys.readouterr().out


def test_algorithm_flags_reach_the_config(tmp_path: Path) -> None:
    from qiter.runs import load_run_config

    argv = ["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--steps", "600", "--no-progress", "--quiet"]
    argv += ["--set", "learning_starts=100", "--set", "target_network_update_interval=300"]
    flags = ["--double-dqn", "--dueling", "--prioritized-replay", "--n-steps", "3", "--n-step-cut", "greedy"]
    flags += ["--loss", "huber", "--max-grad-norm", "5", "--tau", "0.01", "--learning-rate-final", "0"]
    assert main([*argv, *flags, "--set", "evaluation_interval=300", "--set", "n_eval_episodes=1"]) == 0
    config = load_run_config(run_folder(tmp_path))
    assert config["double_dqn"] and config["dueling"] and config["prioritized_replay"]
    assert config["n_steps"] == 3 and config["n_step_cut"] == "greedy" and config["loss"] == "huber"
    assert config["max_grad_norm"] == 5.0 and config["tau"] == 0.01 and config["learning_rate_final"] == 0.0


def test_resume_applies_and_records_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qiter.runs import load_checkpoint, load_run_config

    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--run-dir", str(run), *SMALL, "--steps", "500", "--quiet"]) == 0
    argv = ["train", "--resume", str(run), "--steps", "1000", "--set", "learning_rate=0.5", "--double-dqn"]
    assert main([*argv, "--no-progress", "--quiet"]) == 0
    config = load_run_config(run)
    assert config["learning_rate"] == 0.5 and config["double_dqn"] is True and config["n_timesteps"] == 1000
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["agent"]["optimizer"]["lr"] == 0.5
    capsys.readouterr()

    # A change of the network's shape cannot be resumed: one line naming the key, the run untouched.
    assert main(["train", "--resume", str(run), "--steps", "2000", "--set", "n_hidden_units=32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot change n_hidden_units" in err
    assert load_run_config(run)["n_timesteps"] == 1000


def test_resume_without_buffer_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "CartPole-v1", "--run-dir", str(run), *SMALL, "--steps", "500", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "1000", "--no-progress", "--quiet"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("qiter: warning:") and "--save-buffer" in warning[0]


def test_a_run_folder_is_not_trained_into_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qiter.runs import read_csv

    run = tmp_path / "run"
    argv = ["train", "CartPole-v1", "--run-dir", str(run), *SMALL, "--steps", "500", "--quiet"]
    assert main(argv) == 0
    rows = len(read_csv(run, "episodes")["step"])
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and err.count("\n") == 1
    assert len(read_csv(run, "episodes")["step"]) == rows
    assert main([*argv, "--overwrite"]) == 0
    assert len(read_csv(run, "episodes")["step"]) == rows, "the same seed again, from a clean folder"


def test_kill_9_then_resume_logs_each_step_once(tmp_path: Path) -> None:
    """A real ``kill -9`` between two checkpoints, then ``--resume``: no step logged twice, none backwards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    from qiter.runs import load_checkpoint, read_csv

    run = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "qiter.cli",
        "train",
        "CartPole-v1",
        "--run-dir",
        str(run),
        "--steps",
        "200000",
    ]
    argv += [
        "--set",
        "checkpoint_interval=3000",
        "--set",
        "evaluation_interval=1000",
        "--set",
        "n_eval_episodes=1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([*argv, "--no-progress", "--quiet"], env=env, stdout=subprocess.DEVNULL)
    checkpoint = run / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if not checkpoint.exists() or not (run / "train.csv").exists():
                continue
            saved_step = int(load_checkpoint(checkpoint)["step"])
            logged = read_csv(run, "train")["step"]
            if len(logged) and logged[-1] > saved_step:
                break
        else:
            pytest.fail("the run never logged past its checkpoint")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved_step = int(load_checkpoint(checkpoint)["step"])
    assert read_csv(run, "train")["step"][-1] > saved_step, (
        "the kill came after the logs went past the checkpoint"
    )
    target = int(read_csv(run, "train")["step"][-1]) + 2000
    assert main(["train", "--resume", str(run), "--steps", str(target), "--no-progress", "--quiet"]) == 0
    for kind in ("train", "eval", "episodes"):
        steps = read_csv(run, kind)["step"]
        assert np.all(np.diff(steps) >= 0), kind
        if kind != "episodes":
            assert len(np.unique(steps)) == len(steps), kind


def test_quiet_prints_only_the_final_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--steps", "300", "--quiet"]
    argv += ["--set", "learning_starts=100", "--set", "target_network_update_interval=150"]
    assert main([*argv, "--set", "evaluation_interval=150", "--set", "n_eval_episodes=1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Evaluation of CartPole-v1 over 1 episodes:") and out.count("\n") == 1
    assert err == ""  # no progress bar either
