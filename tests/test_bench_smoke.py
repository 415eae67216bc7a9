"""Smoke test of the benchmark scripts: they run on a tiny budget and print their ratio lines.

Speed is not asserted (timings on a shared machine are noisy); only that the reports are complete.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def test_bench_dqn_prints_ratios(tmp_path: Path) -> None:
    out_file = tmp_path / "bench.md"
    stdout = run_script(
        "benchmarks/bench_dqn.py", "--steps", "2000", "--skip-sb3", "--variants", "seed,sb3,numpy,torch",
        "--eval-episodes", "1", "--out", str(out_file),
    )  # fmt: skip
    assert "CPU:" in stdout and "torch threads: 1" in stdout
    assert "| variant | steps | wall s | steps/s | vs seed | vs SB3 | CPU s | steps/CPU-s |" in stdout
    for label in ("seed loop (reference)", "qiter, numpy backend", "qiter, torch backend"):
        assert f"| {label} | 2,000 |" in stdout
    assert "Stable-Baselines3" not in stdout.split("| variant |")[1]
    assert "- ratio: qiter, numpy backend:" in stdout and "x seed" in stdout
    assert "- ratio: qiter, torch backend:" in stdout
    assert "| qiter, numpy backend |" in out_file.read_text()


def test_bench_buffer_reports_memory_ratio() -> None:
    stdout = run_script("benchmarks/bench_buffer.py", "--quick", "--size", "5000", "--memory-size", "200000")
    assert "ratio RSS increase / nbytes" in stdout
    assert "| qiter ReplayBuffer (uniform) |" in stdout
