"""Recording videos: no "XDG_RUNTIME_DIR is invalid or not set" noise, and the user's environment left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qiter.envs import make_env

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
