"""scripts/stability.py runs end to end (tiny budgets): the table of docs/stability.md can be re-made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_stability_smoke(tmp_path: Path) -> None:
    out = tmp_path / "stability.md"
    log = tmp_path / "log.jsonl"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "stability.py"), "--smoke",
            "--out", str(out), "--log", str(log),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    # Side by side: the stable preset (A) and the seed's settings (B), seeds 0 and 1, 2000 steps each.
    assert "| | `CartPole-v1-stable`" in table and "`CartPole-v1` `n_timesteps=2000`" in table
    assert "| seed 0 |" in table and "| seed 1 |" in table and "| seed 2 |" not in table
    assert "seeds with final return ≥ 475" in table
    assert "| training steps per run (min-max) | 2000 | 2000 |" in table
    assert len(log.read_text().splitlines()) == 2
    assert "[A] seed 1: final" in proc.stdout and "[B] seed 1: final" in proc.stdout
