"""Run folders, CSV/TensorBoard logging, atomic checkpoints, config.yaml and eval.json."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from messages import assert_damage_message

from qiter import runs
from qiter.errors import QiterError


def test_make_run_dir_layout_and_uniqueness(tmp_path: Path) -> None:
    first = runs.make_run_dir(tmp_path, "CartPole-v1", "dqn", 7)
    second = runs.make_run_dir(tmp_path, "CartPole-v1", "dqn", 7)
    third = runs.make_run_dir(tmp_path, "CartPole-v1", "dqn", 7)
    assert len({first, second, third}) == 3
    for d in (first, second, third):
        assert d.is_dir() and not any(d.iterdir())
        assert d.parent == tmp_path / "CartPole-v1"
        assert d.name.startswith("dqn-7-")
    assert first.name.split("-")[3].isdigit() and len(first.name.split("-")[2]) == 8  # YYYYmmdd-HHMMSS


def test_make_run_dir_sanitizes_env_id(tmp_path: Path) -> None:
    d = runs.make_run_dir(tmp_path, "ALE/Pong-v5", "dqn", 0)
    assert d.parent == tmp_path / "ALE_Pong-v5"


def test_csv_log_append_and_resume_keeps_one_header(tmp_path: Path) -> None:
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("episodes", 10, {"return": 1.5, "length": 10, "epsilon": 0.9})
        logger.log("episodes", 25, {"return": np.float32(2.0), "length": 15, "epsilon": 0.8})
        # Flushed after each row: readable before close.
        assert runs.read_csv(tmp_path, "episodes")["step"].tolist() == [10, 25]
    # A resumed run appends to the same file.
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("episodes", 40, {"return": 3.0, "length": 15, "epsilon": 0.7})
        logger.log("eval", 40, {"mean_return": 3.0, "std_return": 0.5})
    lines = (tmp_path / "episodes.csv").read_text().splitlines()
    assert lines[0] == "step,return,length,epsilon,wall_time"
    assert sum(line.startswith("step,") for line in lines) == 1
    data = runs.read_csv(tmp_path, "episodes")
    assert data["step"].tolist() == [10, 25, 40]
    assert data["return"].tolist() == [1.5, 2.0, 3.0]
    assert np.all(np.diff(data["wall_time"]) >= 0)
    assert runs.read_csv(tmp_path, "eval")["std_return"].tolist() == [0.5]


def test_csv_missing_and_extra_keys(tmp_path: Path) -> None:
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("train", 1, {"loss": 1.0, "mean_q": 2.0})
        logger.log("train", 2, {"loss": 0.5})  # missing -> empty cell -> NaN
        with pytest.warns(UserWarning, match="no column"):
            logger.log("train", 3, {"loss": 0.25, "mean_q": 1.0, "new": 3.0})
    data = runs.read_csv(tmp_path, "train")
    assert data["loss"].tolist() == [1.0, 0.5, 0.25]
    assert math.isnan(data["mean_q"][1])
    assert "new" not in data


def test_read_csv_skips_torn_row_and_missing_file(tmp_path: Path) -> None:
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:
        logger.log("eval", 1, {"mean_return": 1.0, "std_return": 0.0})
    with (tmp_path / "eval.csv").open("a") as f:
        f.write("2,3.0")  # a crash in the middle of a row
    assert runs.read_csv(tmp_path, "eval")["step"].tolist() == [1]
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:  # resume after the crash
        logger.log("eval", 3, {"mean_return": 3.0, "std_return": 0.0})
    assert runs.read_csv(tmp_path, "eval")["step"].tolist() == [1, 3]
    with pytest.raises(QiterError, match="no episodes log"):
        runs.read_csv(tmp_path, "episodes")


def test_tensorboard_event_file(tmp_path: Path) -> None:
    with runs.RunLogger(tmp_path, tensorboard=True) as logger:
        logger.log("eval", 100, {"mean_return": 1.0, "std_return": 0.1})
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"eval/mean_return", "eval/std_return"}
    assert [e.step for e in acc.Scalars("eval/mean_return")] == [100]


def _state(value: float) -> dict:
    rng = np.random.default_rng(3)
    rng.random(5)
    return {
        "format": runs.CHECKPOINT_FORMAT,
        "step": 10,
        "weights": torch.full((3,), value),
        "rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "history": [{"step": 1.0, "mean_return": 2.0}],
        "opt": None,
    }


def test_checkpoint_round_trip_weights_only_with_rng_state(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "latest.pt"
    rng = np.random.default_rng(3)
    rng.random(5)
    state = _state(1.0)
    state["array"] = np.arange(4.0)  # numpy values are converted for weights_only loading
    state["scalar"] = np.float64(0.5)
    state["generator"] = rng
    runs.save_checkpoint(path, state)
    # Loads with the strictest unpickler.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == runs.CHECKPOINT_FORMAT
    loaded = runs.load_checkpoint(path)
    assert torch.equal(loaded["weights"], torch.ones(3))
    assert torch.equal(loaded["array"], torch.arange(4.0, dtype=torch.float64))
    assert loaded["scalar"] == 0.5 and loaded["history"] == state["history"]
    expected = rng.random(3)
    for key in ("rng", "generator"):
        restored = np.random.default_rng()
        restored.bit_generator.state = loaded[key]
        assert np.array_equal(restored.random(3), expected)
    torch.set_rng_state(loaded["torch_rng"])
    assert list(path.parent.iterdir()) == [path]


def test_save_checkpoint_adds_format_and_refuses_unsafe_objects(tmp_path: Path) -> None:
    runs.save_checkpoint(tmp_path / "a.pt", {"x": 1})
    assert runs.load_checkpoint(tmp_path / "a.pt")["format"] == runs.CHECKPOINT_FORMAT
    with pytest.raises(TypeError, match=r"state\['bad'\] is a object"):
        runs.save_checkpoint(tmp_path / "b.pt", {"bad": object()})
    assert not (tmp_path / "b.pt").exists()


def test_atomic_save_survives_a_crash_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoints" / "latest.pt"
    runs.save_checkpoint(path, _state(1.0))
    real_save = torch.save

    def crashing_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]
        f.write(b"partial garbage")  # type: ignore[attr-defined]
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        runs.save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert torch.equal(runs.load_checkpoint(path)["weights"], torch.ones(3))  # the previous one is intact
    runs.save_checkpoint(path, _state(2.0))
    assert torch.equal(runs.load_checkpoint(path)["weights"], torch.full((3,), 2.0))


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(QiterError, match="does not exist"):
        runs.load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    runs.save_checkpoint(good, _state(1.0))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(QiterError, match="not a readable qiter checkpoint"):
        runs.load_checkpoint(truncated)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(QiterError, match="not a readable qiter checkpoint"):
        runs.load_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(QiterError, match="not a qiter checkpoint"):
        runs.load_checkpoint(tmp_path / "foreign.pt")
    torch.save(torch.zeros(2), tmp_path / "tensor.pt")
    with pytest.raises(QiterError, match="not a qiter checkpoint"):
        runs.load_checkpoint(tmp_path / "tensor.pt")


def test_load_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    torch.save({"format": runs.CHECKPOINT_FORMAT, "obj": Path("x")}, tmp_path / "pickle.pt")
    with pytest.raises(QiterError, match="not a readable qiter checkpoint"):
        runs.load_checkpoint(tmp_path / "pickle.pt")


def test_latest_checkpoint(tmp_path: Path) -> None:
    assert runs.latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    assert runs.latest_checkpoint(tmp_path) is None
    runs.save_checkpoint(tmp_path / "checkpoints" / "best.pt", _state(1.0))
    assert runs.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "best.pt"
    runs.save_checkpoint(tmp_path / "checkpoints" / "latest.pt", _state(1.0))
    assert runs.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "latest.pt"


def test_config_yaml_and_eval_json(tmp_path: Path) -> None:
    config = {"env_id": "CartPole-v1", "learning_rate": 1e-3, "learning_rate_final": None, "dueling": False}
    runs.save_config(tmp_path, config)
    assert runs.load_run_config(tmp_path) == config
    assert list(runs.load_run_config(tmp_path)) == list(config)  # order kept
    with pytest.raises(QiterError, match="not a run folder"):
        runs.load_run_config(tmp_path / "nope")
    (tmp_path / "config.yaml").write_text("- a list\n")
    with pytest.raises(QiterError, match="mapping"):
        runs.load_run_config(tmp_path)
    (tmp_path / "config.yaml").write_text("a: [unclosed\n")
    with pytest.raises(QiterError, match="not valid YAML"):
        runs.load_run_config(tmp_path)
    path = runs.write_eval(tmp_path, {"mean_return": np.float64(500.0), "returns": np.array([1.0, 2.0])})
    assert path == tmp_path / "eval.json"
    assert json.loads(path.read_text()) == {"mean_return": 500.0, "returns": [1.0, 2.0]}


def test_random_bytes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(QiterError) as info:
        runs.load_checkpoint(path)
    assert_damage_message(str(info.value), path)
    assert "corrupt or truncated" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_checkpoint(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "latest.pt"
    runs.save_checkpoint(path, {"weights": torch.randn(64, 64), "step": 3})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(QiterError) as info:
        runs.load_checkpoint(path)
    assert_damage_message(str(info.value), path)
    assert "corrupt or truncated" in str(info.value)


def test_empty_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(QiterError, match="the file is empty") as info:
        runs.load_checkpoint(path)
    assert_damage_message(str(info.value), path)


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _write_all(run_dir: Path) -> list[Path]:
    return [
        runs.save_config(run_dir, {"env_id": "CartPole-v1"}),
        runs.write_eval(run_dir, {"mean_return": 1.0}),
        _checkpoint(run_dir / "checkpoints" / "latest.pt"),
    ]


def _checkpoint(path: Path) -> Path:
    runs.save_checkpoint(path, {"weights": torch.zeros(2)})
    return path


@pytest.mark.parametrize(
    ("umask", "mode"),
    [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
    indirect=["umask"],
    ids=["022", "077", "002"],
)
def test_atomic_files_follow_the_umask(umask: int, mode: int, tmp_path: Path) -> None:
    for path in _write_all(tmp_path):
        assert path.stat().st_mode & 0o777 == mode, path.name  # as open() gives the CSV logs


@pytest.mark.parametrize("umask", [0o027], indirect=True, ids=["027"])
def test_umask_fallback_without_proc(umask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: object, **kwargs: object) -> None:
        raise OSError("no /proc here")

    monkeypatch.setattr(runs, "open", no_proc, raising=False)  # shadows the builtin inside runs only
    for path in _write_all(tmp_path):
        assert path.stat().st_mode & 0o777 == 0o640, path.name
    assert os.umask(umask) == umask  # the umask was read, not changed


def test_a_log_kind_in_a_subfolder_closed_after_each_row(tmp_path: Path) -> None:
    """A population's per-agent logs: in agents/, one header, no file left open between rows."""
    with runs.RunLogger(tmp_path, tensorboard=False) as logger:
        for step in (1000, 2000, 3000):
            logger.log("agents/agent_0007", step, {"train_return": step / 100}, keep_open=False)
            assert not logger._files
    lines = (tmp_path / "agents" / "agent_0007.csv").read_text().splitlines()
    assert lines[0] == "step,train_return,wall_time" and [line.split(",")[0] for line in lines[1:]] == [
        "1000",
        "2000",
        "3000",
    ]
    runs.truncate_logs(tmp_path, 2000)
    assert len((tmp_path / "agents" / "agent_0007.csv").read_text().splitlines()) == 3
