"""Minari datasets: an exact round trip of OfflineData, the collect/fqi commands, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qiter.cli import main
from qiter.data import OfflineData, collect_data
from qiter.errors import QiterError
from qiter.minari_io import load_minari, save_minari

FIELDS = ("observations", "next_observations", "actions", "rewards", "terminateds", "truncateds")


@pytest.fixture(autouse=True)
def local_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every dataset in a temporary folder: nothing read from or written to ~/.minari, nothing downloaded."""
    folder = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(folder))
    return folder


def _assert_same(a: OfflineData, b: OfflineData) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name
    assert a.env_id == b.env_id


def test_round_trip_keeps_data_exactly(local_datasets: Path) -> None:
    data = collect_data("CartPole-v1", n_steps=700, seed=3)
    # A time-limit end in mid-data, so that terminated and truncated must be kept apart...
    data.truncateds[100] = 1.0
    assert data.terminateds[100] == 0.0
    assert save_minari(data, "cartpole-test") == "cartpole-test-v0"
    assert (local_datasets / "cartpole-test-v0" / "data").is_dir()
    _assert_same(data, load_minari("cartpole-test"))
    # ...and glued data (a break in the chain of observations without an episode end) round-trips too.
    glued = collect_data("CartPole-v1", n_steps=50, seed=4)
    both = OfflineData(
        *(np.concatenate([getattr(data, f)[:60], getattr(glued, f)]) for f in FIELDS), "CartPole-v1"
    )
    save_minari(both, "glued-v2")
    _assert_same(both, load_minari("glued-v2"))


def test_bad_names_and_missing_datasets() -> None:
    data = collect_data("CartPole-v1", n_steps=30, seed=0)
    save_minari(data, "taken")
    with pytest.raises(QiterError, match="already exists"):
        save_minari(data, "taken")
    save_minari(data, "taken", overwrite=True)
    with pytest.raises(QiterError, match="invalid Minari dataset name"):
        save_minari(data, "bad name!")
    with pytest.raises(QiterError, match="no local Minari dataset 'absent-v0'"):
        load_minari("absent")


def test_collect_and_fqi_commands(local_datasets: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "collect",
                "CartPole-v1",
                "--steps",
                "800",
                "--seed",
                "0",
                "--format",
                "minari",
                "--name",
                "rand",
            ]
        )
        == 0
    )
    assert "Minari dataset rand-v0" in capsys.readouterr().out
    # The same data as the .npz path collects.
    _assert_same(collect_data("CartPole-v1", n_steps=800, seed=0), load_minari("rand"))
    args = ["fqi", "--dataset", "minari:rand", "--regressor", "linear", "--iterations", "2"]
    assert main([*args, "--eval-episodes", "2", "--no-progress"]) == 0
    assert "FQI with linear on 800 transitions of CartPole-v1" in capsys.readouterr().out
    # Bad input: one line, exit 2, nothing written.
    assert main(["collect", "CartPole-v1", "--steps", "10", "--format", "minari", "--name", "rand"]) == 2
    assert main(["collect", "CartPole-v1", "--format", "minari"]) == 2
    assert main(["fqi", "--dataset", "d4rl:rand"]) == 2
    assert main(["fqi", "--dataset", "minari:missing"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "expected minari:NAME" in err and "no local Minari dataset" in err
    assert sorted(p.name for p in local_datasets.iterdir()) == ["rand-v0"]
