"""The DQN commands as a user runs them: train, eval (with video), resume, presets, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from qiter.cli import build_parser, main

SMALL = ["--steps", "1500", "--set", "evaluation_interval=500", "--set", "n_eval_episodes=2", "--no-progress"]


def run_folder(root: Path) -> Path:
    (folder,) = (root / "CartPole-v1").iterdir()
    return folder


def test_train_eval_video_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--seed", "1", *SMALL]) == 0
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
    assert "Resuming" in out and "Trained 2000 steps" in out


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
    assert '"n_timesteps": 80000' in capsys.readouterr().out


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: qiter" in capsys.readouterr().out


def test_algorithm_flags_reach_the_config(tmp_path: Path) -> None:
    from qiter.runs import load_run_config

    argv = ["train", "CartPole-v1", "--runs-dir", str(tmp_path), "--steps", "600", "--no-progress", "--quiet"]
    flags = ["--double-dqn", "--dueling", "--prioritized-replay", "--n-steps", "3", "--n-step-cut", "greedy"]
    flags += ["--loss", "huber", "--max-grad-norm", "5", "--tau", "0.01", "--learning-rate-final", "0"]
    assert main([*argv, *flags, "--set", "evaluation_interval=300", "--set", "n_eval_episodes=1"]) == 0
    config = load_run_config(run_folder(tmp_path))
    assert config["double_dqn"] and config["dueling"] and config["prioritized_replay"]
    assert config["n_steps"] == 3 and config["n_step_cut"] == "greedy" and config["loss"] == "huber"
    assert config["max_grad_norm"] == 5.0 and config["tau"] == 0.01 and config["learning_rate_final"] == 0.0
