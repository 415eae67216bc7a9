"""qiter.data: OfflineData, collection, validation and .npz I/O."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from messages import assert_damage_message

from qiter.data import OfflineData, collect_data, load_data, save_data
from qiter.envs import make_env
from qiter.errors import QiterError


@pytest.fixture(scope="module")
def small_data() -> OfflineData:
    return collect_data("CartPole-v1", n_steps=500, seed=0)


def test_positional_construction_and_len() -> None:
    n = 3
    data = OfflineData(np.zeros((n, 2)), np.zeros((n, 2)), np.zeros((n, 1)), np.zeros(n), np.zeros(n))
    assert len(data) == n
    assert data.truncateds is None and data.env_id is None
    data.validate()


def test_collect_shapes_seed_and_flags(small_data: OfflineData) -> None:
    data = small_data
    assert data.observations.shape == (500, 4) and data.actions.shape == (500, 1)
    assert data.env_id == "CartPole-v1"
    assert data.truncateds is not None and data.truncateds.shape == (500,)
    # After a transition that ended an episode, the next one starts from a reset, elsewhere it follows on
    ends = np.flatnonzero(np.logical_or(data.terminateds, data.truncateds))
    inside = np.setdiff1d(np.arange(499), ends)
    np.testing.assert_array_equal(data.next_observations[inside], data.observations[inside + 1])
    again = collect_data("CartPole-v1", n_steps=500, seed=0)
    np.testing.assert_array_equal(again.observations, data.observations)
    np.testing.assert_array_equal(again.actions, data.actions)


def test_collect_with_policy() -> None:
    data = collect_data("CartPole-v1", n_steps=50, seed=0, policy=lambda obs: 1)
    assert np.all(data.actions == 1)


@pytest.mark.parametrize(
    ("env_id", "match"), [("Pendulum-v1", "Discrete action"), ("FrozenLake-v1", "Box observation")]
)
def test_collect_rejects_unsupported_spaces(env_id: str, match: str) -> None:
    with pytest.raises(QiterError, match=match):
        collect_data(env_id, n_steps=10)


def test_collect_unknown_env() -> None:
    with pytest.raises(QiterError, match="CartPole-v1"):
        collect_data("CartPole-v9", n_steps=10)


def test_save_load_roundtrip(
    small_data: OfflineData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_data(small_data, tmp_path / "cartpole")
    assert path == tmp_path / "cartpole.npz"
    assert f"Saving to {path}" in capsys.readouterr().out
    for name in (tmp_path / "cartpole", tmp_path / "cartpole.npz", str(path)):
        loaded = load_data(name)
        for field in ("observations", "next_observations", "actions", "rewards", "terminateds", "truncateds"):
            np.testing.assert_array_equal(getattr(loaded, field), getattr(small_data, field))
        assert loaded.env_id == "CartPole-v1"


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _fields(n: int = 4, m: int = 4) -> dict[str, np.ndarray]:
    return {
        "observations": np.zeros((n, 2)),
        "next_observations": np.zeros((n, 2)),
        "actions": np.zeros((m, 1)),
        "rewards": np.zeros(n),
        "terminateds": np.zeros(n),
    }


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(QiterError, match="does not exist"):
        load_data(tmp_path / "nothing")


def test_load_missing_field(tmp_path: Path) -> None:
    fields = _fields()
    del fields["rewards"]
    path = _write(tmp_path / "f.npz", **fields)
    with pytest.raises(QiterError, match=r"f\.npz.*'rewards'"):
        load_data(path)


def test_load_mismatched_lengths(tmp_path: Path) -> None:
    path = _write(tmp_path / "f.npz", **_fields(m=3))
    with pytest.raises(QiterError, match=r"f\.npz.*'actions' has length 3"):
        load_data(path)


def test_load_non_numeric_field(tmp_path: Path) -> None:
    fields = _fields()
    fields["rewards"] = np.array(["a", "b", "c", "d"])
    path = _write(tmp_path / "f.npz", **fields)
    with pytest.raises(QiterError, match=r"f\.npz.*'rewards' must be numeric"):
        load_data(path)


def test_load_object_array_is_refused(tmp_path: Path) -> None:
    fields = _fields()
    fields["rewards"] = np.array([None, 1, 2, 3], dtype=object)
    path = _write(tmp_path / "f.npz", **fields)
    with pytest.raises(QiterError, match=r"f\.npz"):
        load_data(path)


@pytest.mark.parametrize("keep", [0, 100, 600])
def test_load_truncated_or_corrupt_file(small_data: OfflineData, tmp_path: Path, keep: int) -> None:
    good = save_data(small_data, tmp_path / "good")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good.read_bytes()[:keep] if keep else b"not a zip file at all")
    with pytest.raises(QiterError, match=r"bad\.npz"):
        load_data(bad)


def test_validate_shapes_and_env() -> None:
    fields = _fields()
    fields["actions"] = np.zeros(4)
    with pytest.raises(QiterError, match="'actions' must have shape"):
        OfflineData(**fields).validate()
    fields = _fields()
    fields["actions"] = np.full((4, 1), 0.5)
    with pytest.raises(QiterError, match="'actions' must hold discrete"):
        OfflineData(**fields).validate()
    with pytest.raises(QiterError, match="observation shape"):
        OfflineData(**_fields()).validate(make_env("CartPole-v1"))


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = save_data(collect_data("CartPole-v1", n_steps=50, seed=0), tmp_path_factory.mktemp("npz") / "d")
    return path.read_bytes()


def test_truncated_npz(npz_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "half.npz"
    path.write_bytes(npz_bytes[: len(npz_bytes) // 2])
    with pytest.raises(QiterError) as info:
        load_data(path)
    assert_damage_message(str(info.value), path)


def test_random_bytes_npz_gives_no_unpickling_advice(tmp_path: Path) -> None:
    # np.load takes a non-zip file for a pickle, and its message advises loading it with allow_pickle
    path = tmp_path / "random.npz"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(QiterError) as info:
        load_data(path)
    assert_damage_message(str(info.value), path)
    assert "allow_pickle" not in str(info.value)


def test_npy_named_npz(tmp_path: Path) -> None:
    # np.load returns a bare array for a .npy, which used to end in a TypeError traceback
    path = tmp_path / "array.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(QiterError) as info:
        load_data(path)
    assert_damage_message(str(info.value), path)
