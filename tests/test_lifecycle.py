"""The shared run lifecycle (:mod:`qiter.lifecycle`): schedules, checks, and a run stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qiter.cli import main
from qiter.errors import RunInterrupted
from qiter.lifecycle import DivergenceError, Every, check_finite
from qiter.runs import load_checkpoint, read_csv


def test_every_meets_each_point_once_from_any_start() -> None:
    every = Every(1000, 2500)
    assert [s for s in range(2500, 6001, 250) if every.due(s)] == [3000, 4000, 5000, 6000]
    never = Every(0)
    assert not any(never.due(s) for s in range(0, 10_000, 500))


def test_check_finite_names_the_metric_and_the_agent() -> None:
    check_finite(5, {"loss": 1.0})
    with pytest.raises(DivergenceError, match="at step 7: agent 3: loss is nan"):
        check_finite(7, {"loss": float("nan")}, who="agent 3: ")


def test_run_interrupted_names_the_signal_and_the_command(tmp_path: Path) -> None:
    error = RunInterrupted(tmp_path, signal.SIGTERM, 1200, f"qiter train --resume {tmp_path}")
    assert error.exit_code == 143
    assert str(error).startswith("interrupted by SIGTERM at step 1200")
    assert str(error).endswith(f"continue with: qiter train --resume {tmp_path}")


def start_and_signal(argv: list[str], run: Path, sig: int) -> subprocess.CompletedProcess[str]:
    """Start ``qiter *argv`` in a subprocess, send ``sig`` once it logs training rows; its outcome."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "qiter.cli", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
            if (run / "train.csv").exists() and len(read_csv(run, "train")["step"]) >= 2:
                break
        else:
            pytest.fail(f"the run ended or never logged: {process.poll()}")
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_says_how_to_resume_and_resume_continues(tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    argv = ["train", "CartPole-v1", "--run-dir", str(run), "--steps", "500000", "--no-progress", "--quiet"]
    argv += [
        "--set",
        "checkpoint_interval=100000",
        "--set",
        "evaluation_interval=0",
        "--set",
        "save_buffer=true",
    ]
    done = start_and_signal(argv, run, sig)
    assert done.returncode == 128 + sig, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith(f"continue with: qiter train --resume {run}"), last
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    step = int(state["step"])
    assert read_csv(run, "train")["step"][-1] <= step < 100_000, (
        "saved at the interrupted step, not a periodic one"
    )
    assert f"at step {step};" in last
    assert "buffer" in state["agent"], "the run saves its buffer, so the interrupted checkpoint holds it"
    if sig == signal.SIGTERM:
        return
    assert main(["train", "--resume", str(run), "--steps", str(step + 1000), "--no-progress", "--quiet"]) == 0
    assert int(load_checkpoint(run / "checkpoints" / "latest.pt")["step"]) == step + 1000
    assert (run / "eval.json").exists()
