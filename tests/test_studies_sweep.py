"""`qiter sweep`: planning and bad input, parallel runs, skipping finished runs and resuming the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

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
