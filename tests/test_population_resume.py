"""A population's run on the shared lifecycle: checkpoints, resume to the bit, signals, bad resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch as th
from threadpoolctl import threadpool_limits

from qiter.cli import main
from qiter.runs import load_checkpoint

# Small and quick: 3 agents over 2 processes, a checkpoint every 1000 steps, an evaluation every 1000.
ARGS = ["CartPole-v1", "--agents", "3", "--workers", "2", "--steps", "5000", "--quiet"]
ARGS += ["--set", "learning_starts=300", "--set", "evaluation_interval=1000", "--set", "n_eval_episodes=2"]
ARGS += ["--set", "checkpoint_interval=1000", "--set", "target_network_update_interval=50"]


def start(run: Path, *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "qiter.cli", "population", *ARGS, "--run-dir", str(run), *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen[str], run: Path, at_least: int) -> int:
    """Poll until ``latest.pt`` holds a step of at least ``at_least`` (the run still going); that step."""
    path = run / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended first: {process.communicate()}"
        if path.exists():
            try:
                step = int(load_checkpoint(path)["step"])
            except Exception:  # replaced while being read: read it again
                continue
            if step >= at_least:
                return step
        time.sleep(0.02)
    pytest.fail("no checkpoint came")


def rows(path: Path) -> list[list[str]]:
    """A CSV's rows without the wall_time column (the one thing a resumed run may not repeat)."""
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    keep = [i for i, name in enumerate(table[0]) if name != "wall_time"]
    return [[r[i] for i in keep] for r in table]


def assert_same_run(a: Path, b: Path) -> None:
    """Equal logs, evaluations, final checkpoints (every array and counter) and reports."""
    logs = ["train.csv", "eval.csv", *(f"agents/agent_{i:04d}.csv" for i in range(3))]
    for name in logs:
        assert rows(a / name) == rows(b / name), name
    ja, jb = (json.loads((r / "eval.json").read_text()) for r in (a, b))
    for key in ("wall_time_s", "agent_steps_per_second"):
        ja.pop(key), jb.pop(key)
    assert ja == jb
    sa, sb = (load_checkpoint(r / "checkpoints" / "latest.pt") for r in (a, b))
    assert sa["population"]["counters"] == sb["population"]["counters"]
    arrays_a, arrays_b = sa["population"]["arrays"], sb["population"]["arrays"]
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        assert th.equal(arrays_a[key], arrays_b[key]), key
    assert (a / "agents.csv").read_text() == (b / "agents.csv").read_text()


@pytest.fixture(scope="module")
def left_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("alone") / "run"
    assert main(["population", *ARGS, "--run-dir", str(run)]) == 0
    return run


def test_sigkill_then_ctrl_c_then_resume_ends_as_the_run_left_alone(left_alone: Path, tmp_path: Path) -> None:
    """A real SIGKILL after a checkpoint, a resume in a process of its own stopped by Ctrl-C (saved,
    exit 130, the command to continue), a second resume: the logs, evaluations and every array of the
    final checkpoint equal those of the same run left alone."""
    run = tmp_path / "run"
    process = start(run)
    try:
        killed_at = wait_for_checkpoint(process, run, 2000)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed_at < 5000 and not (run / "eval.json").exists()
    argv = [sys.executable, "-m", "qiter.cli", "population", "--resume", str(run), "--quiet"]
    # Its own process group, signalled as a whole, as Ctrl-C in a terminal signals the workers too.
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for_checkpoint(process, run, killed_at + 1000)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.endswith(f"continue with: qiter population --resume {run}"), last
    step = int(load_checkpoint(run / "checkpoints" / "latest.pt")["step"])
    assert f"at step {step};" in last and killed_at + 1000 <= step < 5000
    assert main(["population", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(left_alone, run)


def test_resume_extends_a_finished_population(left_alone: Path, tmp_path: Path) -> None:
    """A finished run's last checkpoint continues with more steps (while the buffers keep their size), on
    another split over processes."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(left_alone, run)
    argv = ["population", "--resume", str(run), "--steps", "5500", "--workers", "1", "--quiet"]
    assert main([*argv, "--set", "replay_buffer_size=5000"]) == 0
    assert int(load_checkpoint(run / "checkpoints" / "latest.pt")["step"]) == 5500
    assert json.loads((run / "eval.json").read_text())["steps"] == 5500


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--agents", "4"], "cannot change n_agents when resuming (3 -> 4)"),
        (["--set", "n_hidden_units=32"], "cannot change n_hidden_units when resuming"),
        (["--set", "replay_buffer_size=1000"], "cannot change replay_buffer_size when resuming"),
        (["--seed", "7"], "cannot change seed when resuming"),
    ],
)
def test_a_resume_that_changes_a_shape_key_is_one_line_naming_it(
    left_alone: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (left_alone / "eval.json").read_text()
    assert main(["population", "--resume", str(left_alone), *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert (left_alone / "eval.json").read_text() == before


def test_resume_of_something_else_is_one_line(
    left_alone: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    single = tmp_path / "single"
    argv = [
        "train",
        "CartPole-v1",
        "--steps",
        "300",
        "--set",
        "learning_starts=100",
        "--run-dir",
        str(single),
    ]
    assert main([*argv, "--quiet", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["population", "--resume", str(single)]) == 2
    assert "is not a population" in capsys.readouterr().err
    assert main(["population", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    # A checkpoint of another format version.
    import shutil

    from qiter.runs import save_checkpoint

    other = tmp_path / "other"
    shutil.copytree(left_alone, other)
    state = load_checkpoint(other / "checkpoints" / "latest.pt")
    save_checkpoint(other / "checkpoints" / "latest.pt", {**state, "format": "qiter-population-v0"})
    assert main(["population", "--resume", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "format 'qiter-population-v0'" in err and "latest.pt" in err


def test_the_agents_csv_holds_one_row_per_point(left_alone: Path) -> None:
    table = rows(left_alone / "agents" / "agent_0002.csv")
    assert table[0] == ["step", "train_return", "eval_return", "loss", "mean_q"]
    assert [r[0] for r in table[1:]] == ["1000", "2000", "3000", "4000", "5000"]
    assert all(r[2] != "" for r in table[1:])
    np.testing.assert_array_less(0, [float(r[3]) for r in table[1:]])


def test_a_diverged_agent_is_named_and_the_others_go_on_until_all_have() -> None:
    from qiter.errors import QiterWarning
    from qiter.lifecycle import DivergenceError
    from qiter.population.train import train
    from qiter.resolve import resolve_config

    config = resolve_config(
        "CartPole-v1", overrides=["n_timesteps=3000", "evaluation_interval=0", "learning_starts=200"]
    )
    with pytest.warns(QiterWarning, match=r"agent\(s\) 1 diverged"):
        result = train(config, 2, {"learning_rate": ["0.001", "1e12"]}, workers=1)
    assert np.isfinite(result.layers[0][0][0]).all()
    with pytest.raises(DivergenceError, match="every agent"):
        train(config, 2, {"learning_rate": ["1e12", "1e13"]}, workers=1)


@pytest.mark.parametrize("extra", [(), ("n_envs=2", "n_steps=3", "n_step_cut=greedy")])
@pytest.mark.parametrize("backend", ["numpy", "torch-device-counters"])
def test_a_restored_population_steps_as_the_original(backend: str, extra: tuple[str, ...]) -> None:
    """``Population.state_dict`` into a fresh population (numpy; torch with every counter on the device, as
    a CUDA graph replays them): the next steps, updates, target copies and draws are the same, to the bit."""
    from qiter.population.lockstep import Population
    from qiter.population.train import agent_configs
    from qiter.resolve import resolve_config

    config = resolve_config(
        "Acrobot-v1",
        overrides=["n_timesteps=400", "learning_starts=100", "replay_buffer_size=200", "double_dqn=true",
                   "learning_rate_final=0", "target_network_update_interval=30", *extra],
    )  # fmt: skip
    configs = agent_configs(config, 2)

    def make() -> Population:
        pop = Population(configs, "numpy" if backend == "numpy" else "torch")
        if backend != "numpy":
            pop.use_device_counters()
        return pop

    original, restored = make(), make()
    with threadpool_limits(1, user_api="blas"):  # BLAS threads on a shared machine only wait for each other
        original.run(0, 280)
        restored.load_state_dict(original.state_dict(280))
        original.run(280, 400)
        restored.run(280, 400)
    a, b = original.state_dict(400), restored.state_dict(400)
    assert a["counters"] == b["counters"]
    for key in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key], err_msg=key)
    np.testing.assert_array_equal(original.evaluate(2, 400), restored.evaluate(2, 400))
