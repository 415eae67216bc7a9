"""User errors around a run's life: missing extras, unusable devices, damaged files, file modes, video noise.

Each one used to end in a long traceback, unsafe advice, or a stray message; each must now be one line (or
nothing at all) that the user can act on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.error import DependencyNotInstalled

from qiter import runs
from qiter.cli import main
from qiter.data import collect_data, load_data, save_data
from qiter.devices import check_device
from qiter.envs import make_env
from qiter.errors import QiterError
from qiter.run_config import RunConfig

BOX2D_IDS = sorted(
    env_id
    for env_id, spec in gym.registry.items()
    if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.box2d")
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


# ---------------------------------------------------------------------------------------------------------
# 6. A missing Box2D, an unusable --device
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def without_box2d(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import Box2D`` fail, as on a machine without it, so gymnasium raises its real error."""
    monkeypatch.setitem(sys.modules, "Box2D", None)  # None in sys.modules: the import raises ImportError
    for name in [m for m in sys.modules if m.startswith("gymnasium.envs.box2d")]:
        monkeypatch.delitem(sys.modules, name)  # restored afterwards, so other tests keep the real modules


def test_box2d_ids_are_known() -> None:
    assert "LunarLander-v3" in BOX2D_IDS and "CarRacing-v3" in BOX2D_IDS


@pytest.mark.usefixtures("without_box2d")
@pytest.mark.parametrize("env_id", BOX2D_IDS)
def test_box2d_env_without_box2d_names_the_extra(env_id: str) -> None:
    with pytest.raises(DependencyNotInstalled):  # what gymnasium itself raises: the condition is real
        gym.make(env_id)
    with pytest.raises(QiterError) as info:
        make_env(env_id)
    message = _one_line(str(info.value))
    assert env_id in message and 'pip install "qiter[box2d]"' in message


def test_other_missing_dependency_gives_gymnasiums_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(*args: object, **kwargs: object) -> gym.Env:
        raise DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`\nmore')

    monkeypatch.setattr(gym, "make", make)
    with pytest.raises(QiterError) as info:
        make_env("CartPole-v1")
    message = _one_line(str(info.value))
    assert "CartPole-v1" in message and "gymnasium[mujoco]" in message and "qiter[" not in message


@pytest.mark.usefixtures("without_box2d")
def test_cli_train_without_box2d_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "LunarLander-v3", "--steps", "100", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "qiter[box2d]"' in err
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_check_device_refuses_what_torch_cannot_parse() -> None:
    check_device("cpu")
    for name in ("gpu", "", "cuda:x"):
        with pytest.raises(QiterError, match="must be a torch device"):
            check_device(name)
    with pytest.raises(QiterError, match="device"):
        RunConfig(device="gpu").validate()


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_check_device_without_cuda(name: str) -> None:
    with pytest.raises(QiterError) as info:
        check_device(name)
    message = _one_line(str(info.value))
    assert name in message and "not available" in message and "--device cpu" in message
    with pytest.raises(QiterError, match="--device cpu"):
        RunConfig(device=name).validate()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_check_device_with_cuda() -> None:
    check_device("cuda")
    check_device("cuda:0")
    count = torch.cuda.device_count()
    with pytest.raises(QiterError, match=f"has {count} CUDA device"):
        check_device(f"cuda:{count}")


@no_cuda
def test_cli_train_on_cuda_without_cuda_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "CartPole-v1", "--device", "cuda", "--steps", "100", "--runs-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qiter: error: ") and "--device cpu" in err
    assert list(tmp_path.iterdir()) == []  # no run folder


# ---------------------------------------------------------------------------------------------------------
# 7. Damaged checkpoints and data files
# ---------------------------------------------------------------------------------------------------------


def _assert_damage_message(message: str, path: Path) -> None:
    _one_line(message)
    assert str(path) in message
    assert "weights_only" not in message and "pickle" not in message.lower()


def test_random_bytes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(QiterError) as info:
        runs.load_checkpoint(path)
    _assert_damage_message(str(info.value), path)
    assert "corrupt or truncated" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.1])
def test_truncated_checkpoint(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "latest.pt"
    runs.save_checkpoint(path, {"weights": torch.randn(64, 64), "step": 3})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(QiterError) as info:
        runs.load_checkpoint(path)
    _assert_damage_message(str(info.value), path)
    assert "corrupt or truncated" in str(info.value)


def test_empty_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(QiterError, match="the file is empty") as info:
        runs.load_checkpoint(path)
    _assert_damage_message(str(info.value), path)


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = save_data(collect_data("CartPole-v1", n_steps=50, seed=0), tmp_path_factory.mktemp("npz") / "d")
    return path.read_bytes()


def test_truncated_npz(npz_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "half.npz"
    path.write_bytes(npz_bytes[: len(npz_bytes) // 2])
    with pytest.raises(QiterError) as info:
        load_data(path)
    _assert_damage_message(str(info.value), path)


def test_random_bytes_npz_gives_no_unpickling_advice(tmp_path: Path) -> None:
    # np.load takes a non-zip file for a pickle, and its message advises loading it with allow_pickle
    path = tmp_path / "random.npz"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(QiterError) as info:
        load_data(path)
    _assert_damage_message(str(info.value), path)
    assert "allow_pickle" not in str(info.value)


def test_npy_named_npz(tmp_path: Path) -> None:
    # np.load returns a bare array for a .npy, which used to end in a TypeError traceback
    path = tmp_path / "array.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(QiterError) as info:
        load_data(path)
    _assert_damage_message(str(info.value), path)


# ---------------------------------------------------------------------------------------------------------
# 8. Files written atomically follow the umask, like the CSV logs
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# 9. No "XDG_RUNTIME_DIR is invalid or not set" when recording a video
# ---------------------------------------------------------------------------------------------------------

_RECORD = textwrap.dedent(
    """
    import os, sys
    from qiter.envs import make_env
    from qiter.evaluation import run_episodes

    env = make_env("CartPole-v1", render_mode="rgb_array")
    run_episodes(env, lambda o: 0, 1, video_name="t", video_folder=sys.argv[1])
    env.close()
    print([k for k in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER") if k in os.environ])
    """
)


def test_video_without_xdg_runtime_dir_is_quiet(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER")
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RECORD, str(tmp_path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "XDG_RUNTIME_DIR" not in proc.stderr
    assert (tmp_path / "t.mp4").stat().st_size > 0
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # the user's environment is left as it was


def test_video_keeps_the_users_xdg_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qiter.evaluation import run_episodes

    runtime_dir = tmp_path / "xdg"
    runtime_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    env = make_env("CartPole-v1", render_mode="rgb_array")
    run_episodes(env, lambda o: 0, 1, video_name="t", video_folder=tmp_path / "videos")
    env.close()
    assert os.environ["XDG_RUNTIME_DIR"] == str(runtime_dir)
    assert (tmp_path / "videos" / "t.mp4").is_file()
