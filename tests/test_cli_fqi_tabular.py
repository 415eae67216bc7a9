"""The `qiter tabular`, `qiter collect` and `qiter fqi` commands, through qiter.cli.main."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qiter.cli import main
from qiter.cli.fqi_commands import REGRESSOR_NAMES
from qiter.config import config_from_dict
from qiter.fqi import REGRESSORS, collect_data, save_data
from qiter.fqi_config import CollectConfig, FQIConfig


def test_regressor_names_in_sync() -> None:
    assert tuple(REGRESSORS) == REGRESSOR_NAMES


def test_tabular_grid(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["tabular", "FrozenLake-v1", "--no-slippery", "--episodes", "300", "--lr", "0.5", "--seed", "0"]
    assert main([*args, "--epsilon", "0.2", "--eval-episodes", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "over 5 episodes seeded 0..4, the same for each policy; mean +/- 95% interval:" in out
    assert "  Q-learning:      1.000 +/- 0.000" in out and "  value iteration: 1.000 +/- 0.000" in out
    assert "undiscounted within 100 steps (what the episodes estimate): Q-learning 1.0000" in out
    assert "Q-learning greedy policy:" in out and "value iteration greedy policy:" in out
    assert "H" in out and "G" in out and "→" in out


def _interval(out: str, label: str) -> tuple[float, float]:
    """``(mean, half-width)`` from a line ``  LABEL: MEAN +/- HALF``."""
    line = next(line for line in out.splitlines() if line.strip().startswith(label + ":"))
    mean, half = line.split(":", 1)[1].split("+/-")
    return float(mean), float(half)


@pytest.mark.slow
def test_tabular_slippery_frozen_lake(capsys: pytest.CaptureFixture[str]) -> None:
    """1000 evaluation episodes by default, on the same seeds for both: the optimal policy is not beaten."""
    assert main(["tabular", "FrozenLake-v1", "--episodes", "2000", "--seed", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "over 1000 episodes seeded 0..999" in out
    learned, learned_half = _interval(out, "Q-learning")
    optimal, optimal_half = _interval(out, "value iteration")
    difference, difference_half = _interval(out, "value iteration - Q-learning (paired)")
    assert 0.02 < learned_half < 0.035 and 0.02 < optimal_half < 0.035  # 1.96 * sqrt(0.74 * 0.26 / 1000)
    assert difference == pytest.approx(optimal - learned, abs=1e-3) and difference > -difference_half
    assert "Q-learning 0.7298, value iteration 0.7402; best of any policy 0.7442" in out
    assert "discounted, gamma=0.99, no time limit (what value iteration maximises)" in out


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
        (["tabular", "FrozenLake-v1", "--epsilon", "1.5"], "epsilon must be in [0, 1], got 1.5"),
        (["tabular", "FrozenLake-v1", "--eval-episodes", "0"], "eval_episodes must be at least 1, got 0"),
        (["tabular", "FrozenLake-v1", "--lr", "0"], "lr must be in (0, 1], got 0.0"),
        (
            ["tabular", "FrozenLake-v1", "--episodes", "2.5"],
            "bad value for episodes: '2.5' (expected an integer)",
        ),
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


def test_fqi_settings_are_typed_configs() -> None:
    assert config_from_dict(FQIConfig, {}) == FQIConfig()
    config = config_from_dict(
        FQIConfig,
        {"regressor": "Extra-Trees", "iterations": "1e2", "gamma": "1", "encoding": "ONE-HOT", "seed": "3"},
    )
    assert (config.regressor, config.iterations, config.gamma) == ("extra-trees", 100, 1.0)
    assert (config.encoding, config.seed, config.env) == ("one-hot", 3, None)
    assert config_from_dict(CollectConfig, {"env_id": "CartPole-v1", "steps": "5e4"}).steps == 50_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fqi", "missing.npz", "--iterations", "-1"], "iterations must be at least 0, got -1"),
        (["fqi", "missing.npz", "--eval-episodes", "0"], "eval_episodes must be at least 1, got 0"),
        (["fqi", "missing.npz", "--eval-freq", "-2"], "eval_freq must be at least 0"),
        (["fqi", "missing.npz", "--gamma", "1.5"], "gamma must be in [0, 1], got 1.5"),
        (
            ["fqi", "missing.npz", "--iterations", "2.5"],
            "bad value for iterations: '2.5' (expected an integer)",
        ),
        (
            ["fqi", "missing.npz", "--regressor", "knnn"],
            "bad value for regressor: 'knnn' (did you mean 'knn'?)",
        ),
        (["fqi", "missing.npz", "--encoding", "onehot"], "(did you mean 'one-hot'?)"),
        (["fqi", "missing.npz", "--seed", "abc"], "bad value for seed: 'abc' (expected an integer or none)"),
        (["collect", "CartPole-v1", "--out", "x", "--steps", "0"], "steps must be at least 1, got 0"),
        (["collect", "CartPole-v1", "--out", "x", "--steps", "many"], "bad value for steps: 'many'"),
    ],
)
def test_fqi_settings_errors_are_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    # The settings are checked first: the missing data file is not what is reported.
    assert err.startswith("qiter: error:") and message in err and "\n" not in err
    assert not any(tmp_path.iterdir()), "a bad setting writes nothing"


def test_fqi_help_shows_the_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fqi", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {FQIConfig.iterations})" in out and "gradient-boosting" in out
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    assert f"(default: {CollectConfig.steps})" in capsys.readouterr().out
