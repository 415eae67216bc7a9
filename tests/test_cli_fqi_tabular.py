"""The `qiter tabular`, `qiter collect` and `qiter fqi` commands, through qiter.cli.main."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qiter.cli import main
from qiter.cli.fqi_commands import REGRESSOR_NAMES
from qiter.fqi import REGRESSORS, collect_data, save_data


def test_regressor_names_in_sync() -> None:
    assert tuple(REGRESSORS) == REGRESSOR_NAMES


def test_tabular_grid(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tabular", "FrozenLake-v1", "--no-slippery", "--episodes", "300", "--lr", "0.5", "--seed", "0"]
    assert main([*args, "--epsilon", "0.2", "--eval-episodes", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Q-learning greedy return over 5 episodes: 1.00 +/- 0.00" in out
    assert "value iteration greedy return" in out
    assert "Q-learning greedy policy:" in out and "value iteration greedy policy:" in out
    assert "H" in out and "G" in out and "→" in out


def test_tabular_taxi_has_no_arrows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tabular", "Taxi-v4", "--episodes", "50", "--eval-episodes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "greedy return" in out and "policy:" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tabular", "CartPole-v1"], "Discrete observation"),
        (["tabular", "Taxi-v3"], "Taxi-v4"),
        (["tabular", "FrozenLak-v1"], "Did you mean"),
        (["tabular", "Taxi-v4", "--slippery"], "does not accept"),
        (["collect", "Pendulum-v1", "--out", "x"], "Discrete action"),
        (["collect", "FrozenLake-v1", "--out", "x"], "Box observation"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qiter: error:") and message in err and "\n" not in err


def test_collect_then_fqi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "cartpole"
    assert main(["collect", "CartPole-v1", "--steps", "2000", "--out", str(out_file), "--seed", "0"]) == 0
    assert (tmp_path / "cartpole.npz").is_file()
    assert "collected 2000 transitions" in capsys.readouterr().out
    argv = ["fqi", str(tmp_path / "cartpole.npz"), "--regressor", "knn", "--iterations", "4"]
    assert main([*argv, "--eval-freq", "2", "--eval-episodes", "2", "--seed", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "iter   4/4" in out and "return" in out
    assert "final greedy return over 2 episodes" in out


def test_fqi_video_and_env_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = collect_data("CartPole-v1", n_steps=1000, seed=0)
    data.env_id = None  # an old file without the env id: --env is needed
    path = save_data(data, tmp_path / "old")
    assert main(["fqi", str(path), "--iterations", "1", "--no-progress"]) == 2
    assert "pass --env" in capsys.readouterr().err
    argv = ["fqi", str(path), "--env", "CartPole-v1", "--regressor", "linear", "--iterations", "2"]
    folder = tmp_path / "videos"
    assert (
        main([*argv, "--eval-episodes", "1", "--video", "--video-folder", str(folder), "--no-progress"]) == 0
    )
    assert (folder / "FQI_CartPole-v1.mp4").stat().st_size > 0


def test_fqi_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    assert main(["fqi", str(corrupt)]) == 2
    assert "corrupt.npz" in capsys.readouterr().err

    data = collect_data("CartPole-v1", n_steps=100, seed=0)
    path = save_data(data, tmp_path / "cartpole")
    assert main(["fqi", str(path), "--env", "Acrobot-v1"]) == 2
    err = capsys.readouterr().err
    assert "observation shape (4,)" in err and "(6,)" in err

    np.savez(tmp_path / "partial.npz", observations=np.zeros((3, 4)))
    assert main(["fqi", str(tmp_path / "partial.npz"), "--env", "CartPole-v1"]) == 2
    assert "'next_observations'" in capsys.readouterr().err

    assert main(["fqi", str(tmp_path / "missing.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
