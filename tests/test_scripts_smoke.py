"""The docs' scripts run end to end (tiny budgets): the tables and plots in the docs can be re-made by anyone."""

from __future__ import annotations

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
