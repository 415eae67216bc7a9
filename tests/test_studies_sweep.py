"""`qiter sweep`: planning and bad input, parallel runs, skipping finished runs and resuming the others."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from qiter.cli import main
from qiter.errors import QiterError, QiterWarning
from qiter.studies.storage import RunTable
from qiter.studies.sweep import parse_grid, parse_seeds, plan_sweep, run_sweep, sweep_name

TINY = ["n_timesteps=1200", "evaluation_interval=400", "learning_starts=200", "n_eval_episodes=2"]


def test_parse_seeds_and_grid() -> None:
    assert parse_seeds("0-2,7") == [0, 1, 2, 7]
    assert parse_grid(["double_dqn=false,true", "n_steps=1"]) == {
        "double_dqn": ["false", "true"],
        "n_steps": ["1"],
    }
    for bad in ("3-1", "a", "1,1"):
        with pytest.raises(QiterError, match="--seeds"):
            parse_seeds(bad)
    for bad_grid in (["double_dqn"], ["n_steps=1,"]):
        with pytest.raises(QiterError, match="--grid"):
            parse_grid(bad_grid)


def test_bad_grid_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "CartPole-v1", "--grid", "learning_rte=1e-3", "--out", str(out)]) == 2
    assert main(["sweep", "CartPole-v1", "--grid", "n_steps=1,three", "--out", str(out)]) == 2
    assert main(["sweep", "CartPole-v1", "--storage", "nosuchdb://x", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("qiter: error: ") for line in err)
    assert "learning_rate" in err[0]  # the closest valid key
    assert "setting n_steps=three" in err[1] and "n_steps" in err[1]
    assert "unsupported database" in err[2] or "malformed" in err[2]
    assert not out.exists()


def test_sweep_runs_skips_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    grid = {"double_dqn": ["false", "true"]}
    planned = plan_sweep("CartPole-v1", [0, 1], grid, out, preset="CartPole-v1", overrides=TINY)
    assert [r.key for r in planned] == [
        "double_dqn=false/seed-0", "double_dqn=false/seed-1", "double_dqn=true/seed-0", "double_dqn=true/seed-1",
    ]  # fmt: skip
    assert planned[3].config["double_dqn"] is True and planned[3].config["seed"] == 1
    first = run_sweep(planned, jobs=2, progress=False)
    assert [r["status"] for r in first] == ["done"] * 4
    assert all((r.run_dir / "eval.json").is_file() for r in planned)
    # Started again: finished runs are skipped; an interrupted one (a checkpoint, no eval.json) resumes;
    # one that never reached a checkpoint starts over.
    (planned[0].run_dir / "eval.json").unlink()
    shutil.rmtree(planned[1].run_dir / "checkpoints")
    (planned[1].run_dir / "eval.json").unlink()
    with pytest.warns(QiterWarning, match="empty replay buffer"):  # a resume without --save-buffer
        second = run_sweep(planned, jobs=1, progress=False)
    assert [r["status"] for r in second] == ["resumed", "done", "skipped", "skipped"]
    assert second[2]["mean_return"] == first[2]["mean_return"]
    assert sweep_name(planned) == sweep_name(
        plan_sweep("CartPole-v1", [0, 1], grid, out, preset="CartPole-v1", overrides=TINY)
    )


def test_sweep_with_sqlite_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = tmp_path / "sweep"
    args = ["sweep", "CartPole-v1", "--seeds", "0-1", "--out", str(out), "--storage", url, "--name", "s1"]
    sets = [x for s in TINY for x in ("--set", s)]
    assert main([*args, *sets, "--no-progress", "--threshold", "20"]) == 0
    output = capsys.readouterr().out
    assert "runs: 2 done" in output and "| CartPole-v1 | 2 |" in output
    statuses = RunTable(url, "s1").statuses()
    assert {key: status for key, (status, _) in statuses.items()} == {
        "default/seed-0": "done",
        "default/seed-1": "done",
    }
    # The same command again: nothing to do.
    assert main([*args, *sets, "--no-progress"]) == 0
    assert "runs: 2 skipped" in capsys.readouterr().out


def test_run_table_claims(tmp_path: Path) -> None:
    """A run is claimed once; a dead owner's claim on this machine, or a stale one, is taken over."""
    import socket

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first, second = RunTable(url, "s"), RunTable(url, "s")
    second.owner = f"{socket.gethostname()}:1"  # init: alive, as is any machine's pid 1
    first.add(["a", "b", "c"])
    second.add(["a", "b", "c"])  # registering twice keeps one row each
    assert first.claim("a") and not second.claim("a")
    first.finish("a")
    assert not second.claim("a")  # done
    dead = RunTable(url, "s")
    dead.owner = f"{socket.gethostname()}:999999999"  # no such process
    assert dead.claim("b") and second.claim("b")  # taken over at once
    assert second.claim("c")
    assert not first.claim("c")  # its owner is alive and beating
    first.grace = -1.0
    assert first.claim("c")  # ...until its heartbeat is older than the grace period
    assert {k: s for k, (s, _) in first.statuses().items()} == {"a": "done", "b": "running", "c": "running"}


# TD3 on Pendulum in seconds: few steps, small networks, one evaluation episode.
TD3_TINY = [
    "n_timesteps=400", "learning_starts=200", "evaluation_interval=200", "n_eval_episodes=1",
    "hidden_sizes=32,32", "batch_size=64",
]  # fmt: skip


def test_sweep_of_td3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`qiter sweep --algo td3` on Pendulum: the advice of a DQN sweep on a Box action space now works."""
    out = tmp_path / "sweep"
    assert main(["sweep", "Pendulum-v1", "--out", str(out)]) == 2
    assert "--algo td3" in capsys.readouterr().err and not out.exists()
    sets = [x for s in TD3_TINY for x in ("--set", s)]
    args = ["sweep", "Pendulum-v1", "--algo", "td3", "--seeds", "0-1", "--out", str(out), "--no-progress"]
    assert main([*args, *sets, "--env-kwargs", "gravity=9.0"]) == 2  # Pendulum's is g
    assert "does not accept the keyword arguments ['gravity']" in capsys.readouterr().err
    assert main([*args, *sets, "--set", "learning_starts=400"]) == 2
    assert "nothing would be learned" in capsys.readouterr().err and not out.exists()
    assert main([*args, *sets, "--env-kwargs", "g=9.0"]) == 0
    output = capsys.readouterr().out
    assert "sweep of 2 td3 runs" in output and "runs: 2 done" in output
    assert "| td3 Pendulum-v1 | 2 |" in output
    for seed in (0, 1):
        result = json.loads((out / "default" / f"seed-{seed}" / "eval.json").read_text())
        assert result["algo"] == "td3" and result["steps"] == 400
        config = yaml.safe_load((out / "default" / f"seed-{seed}" / "config.yaml").read_text())
        assert config["n_critics"] == 2 and config["hidden_sizes"] == "32,32"  # TD3's config, the preset's
        assert config["env_kwargs"] == {"g": 9.0}
    assert main(["report", str(out), "--algo", "td3"]) == 0
    assert "| td3 Pendulum-v1 | 2 |" in capsys.readouterr().out
    assert main(["report", str(out), "--algo", "ddpg"]) == 2
    assert "no ddpg run" in capsys.readouterr().err


def test_unwritable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["sweep", "CartPole-v1", "--out", str(blocker / "sweep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"qiter: error: --out {blocker / 'sweep'}: {blocker / 'sweep'} cannot be made: {blocker} is a file, not a folder"
    ]
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main(["sweep", "CartPole-v1", "--out", str(locked / "sweep")]) == 2
        assert "cannot write in" in capsys.readouterr().err
        assert list(locked.iterdir()) == []


def test_runs_done_elsewhere_make_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A machine whose runs were all done by another: it says so, and makes no folder and no progress bar."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sets = [x for s in TINY for x in ("--set", s)]
    base = ["sweep", "CartPole-v1", "--seeds", "0-1", "--storage", url, "--name", "shared", *sets]
    assert main([*base, "--out", str(tmp_path / "first"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "second")]) == 0
    captured = capsys.readouterr()
    assert "runs: 2 done elsewhere" in captured.out
    assert "step" not in captured.err  # no progress bar
    assert not (tmp_path / "second").exists()


def _children(pid: int) -> list[int]:
    """The pids of the processes whose parent is ``pid`` (Linux's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], limit: float = 10.0) -> None:
    """Wait until none of ``pids`` is alive; fail after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), f"orphaned processes after {limit} s"


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, limit: float) -> None:
    start = time.monotonic()
    while not condition():
        assert proc.poll() is None, f"the sweep ended before {what}: {proc.communicate()}"
        assert time.monotonic() - start < limit, f"no {what} after {limit} s"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_signals_stop_the_workers_and_the_sweep_resumes(tmp_path: Path) -> None:
    """SIGINT to a `--jobs 2` sweep: passed on to the workers, whose runs save; exit 130 with the command
    that continues. SIGKILL: the workers (and multiprocessing's resource tracker) die with the sweep.
    Started again, the sweep resumes both runs."""
    out = tmp_path / "sweep"
    sets = ["n_timesteps=12000", "evaluation_interval=500", "n_eval_episodes=1", "learning_starts=200"]
    argv = ["sweep", "CartPole-v1", "--seeds", "0-1", "--jobs", "2", "--out", str(out), "--no-progress"]
    argv += [x for s in sets for x in ("--set", s)]
    latest = [out / "default" / f"seed-{seed}" / "checkpoints" / "latest.pt" for seed in (0, 1)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def start() -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "qiter.cli", *argv]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    proc = start()
    _wait_for(lambda: all(p.exists() for p in latest), proc, "checkpoints", 120)
    children = _children(proc.pid)
    assert len(children) == 3  # two workers and the resource tracker
    saved = [p.stat().st_mtime_ns for p in latest]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "2 interrupted" in err and "Traceback" not in err
    assert f"Continue with the same command: qiter sweep CartPole-v1 --seeds 0-1 --jobs 2 --out {out}" in err
    assert [p.stat().st_mtime_ns for p in latest] != saved  # each run saved when it stopped
    assert not any((p.parent.parent / "eval.json").exists() for p in latest)
    _wait_gone(children)

    proc = start()
    before = [p.stat().st_mtime_ns for p in latest]
    _wait_for(
        lambda: [p.stat().st_mtime_ns for p in latest] != before, proc, "a resumed run's checkpoint", 120
    )
    children = _children(proc.pid)
    assert len(children) == 3
    proc.kill()
    proc.communicate()
    _wait_gone(children)

    planned = plan_sweep("CartPole-v1", [0, 1], {}, out, preset="CartPole-v1", overrides=sets)
    with pytest.warns(QiterWarning, match="empty replay buffer"):  # checkpoints without --save-buffer
        results = run_sweep(planned, jobs=1, progress=False)
    assert [r["status"] for r in results] == ["resumed", "resumed"]


def test_progress_counts_the_steps_trained_here() -> None:
    """A resumed run's earlier steps leave the bar's total (no jump, no false rate); runs not trained here
    leave it whole."""
    from qiter.studies.sweep import SweepRun, _Follow, _Tally

    class Bar:
        total: float | None = 30_000
        n = 0

        def update(self, steps: int) -> None:
            self.n += steps

    bar = Bar()
    tally = _Tally(bar)
    runs = [SweepRun(f"default/seed-{s}", "default", s, Path(), {"n_timesteps": 10_000}) for s in range(3)]
    follow = _Follow(runs[0].key, tally, None)
    follow.on_episode(8_200, -150.0, 200)  # resumed at 8000: the first episode after it
    follow.on_episode(8_400, -150.0, 200)
    assert (bar.total, bar.n) == (22_000, 400)
    _Follow(runs[1].key, tally, None, n_envs=4).on_episode(800, 20.0, 200)  # a new run, 4 env copies
    assert (bar.total, bar.n) == (22_000, 1_200)
    tally.drop(runs[2])  # done elsewhere
    tally.finish(runs[0])
    assert (bar.total, bar.n) == (12_000, 2_000 + 800)


def test_sweeps_of_every_algorithm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each algorithm's sweep plans with its own config class and presets; DQN on discretized actions
    runs as a sweep too."""
    for algo, key, starts in (
        ("ddpg", "n_critics", 10_000),
        ("naf", "hidden_sizes", 5_000),
        ("cem", "cem_samples", 1_000),
    ):
        (run,) = plan_sweep("Pendulum-v1", [0], {}, tmp_path / algo, algo=algo)
        assert run.algo == algo and key in run.config
        assert run.config["learning_starts"] == starts  # the algorithm's Pendulum-v1 preset
    out = tmp_path / "discretized"
    sets = ["n_timesteps=400", "learning_starts=200", "evaluation_interval=200", "n_eval_episodes=1"]
    argv = ["sweep", "Pendulum-v1", "--discretize", "3", "--seeds", "0", "--out", str(out), "--no-progress"]
    assert main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    assert "runs: 1 done" in capsys.readouterr().out
    result = json.loads((out / "default" / "seed-0" / "eval.json").read_text())
    assert result["algo"] == "dqn-discretized"
    assert yaml.safe_load((out / "default" / "seed-0" / "config.yaml").read_text())["discretize"] == 3
    assert main([*argv, "--algo", "td3"]) == 2
    assert "--discretize is for --algo dqn" in capsys.readouterr().err
