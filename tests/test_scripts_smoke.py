"""The docs' scripts run end to end (tiny budgets): the tables and plots in the docs can be re-made by anyone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_results_script_smoke(tmp_path: Path) -> None:
    # QITER_SMOKE: 2500 steps, seeds 0-1, plots into the output folder (not docs/).
    env = {
        **os.environ,
        "QITER_SMOKE": "1",
        "JOBS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "results.sh"), str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # One report per task, the CartPole one with its five settings labelled and the peak mean Q.
    assert "| CartPole-v1-stable | 2 |" in proc.stdout and "peak mean Q (bound)" in proc.stdout
    assert "| previous stable, no early stop | 2 |" in proc.stdout
    for name in ("results-cartpole", "results-cartpole-q", "results-classic", "results-lunarlander"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    assert len(list(tmp_path.glob("*/*/seed-*/eval.json"))) == 2 * 9


def test_sb3_reference_script_smoke(tmp_path: Path) -> None:
    """SB3's TD3 with a qiter preset's settings, 600 steps (learning from 400), scored by qiter's protocol."""
    pytest.importorskip("stable_baselines3")
    jsonl = tmp_path / "sb3.jsonl"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "sb3_td3_reference.py"), "Pendulum-v1", "--steps", "600",
            "--set", "learning_starts=400", "--set", "evaluation_interval=300", "--eval-episodes", "2",
            "--jsonl", str(jsonl),
        ],
        capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert row["preset"] == "sb3-td3/Pendulum-v1" and row["steps"] == 600
    assert [step for step, _ in row["curve"]] == [300, 600]
    assert -2000 < row["final_return"] < 0  # Pendulum's returns are negative, about -1200 untrained
