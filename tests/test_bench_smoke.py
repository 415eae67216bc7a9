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


def test_bench_population_prints_ratios_and_where_the_time_goes() -> None:
    stdout = run_script(
        "benchmarks/bench_population.py", "--agents", "4", "--steps", "1600", "--workers", "1", "--profile"
    )
    assert "single qiter agent (numpy fast path):" in stdout
    assert "| numpy | 4 | 1 |" in stdout
    assert "| update (2 forwards, backward, Adam) |" in stdout
    parts = dict(
        (line.split("|")[1].strip(), float(line.split("|")[2].replace(",", "")))
        for line in stdout.split("| part | us per update | share |")[1].splitlines()[2:]
        if line.startswith("|")
    )
    assert {"matrix products", "Adam", "the rest (bias additions, masks, TD target, Python)"} <= set(parts)
    assert parts["matrix products"] > 0 and parts["Adam"] > 0
    assert "GFLOP/s: alone they would allow" in stdout
