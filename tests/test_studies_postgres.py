"""Studies shared through a real PostgreSQL server, by worker processes started at the same moment.

`.ci/run` starts a server (`.ci/postgres.sh`) and exports QITER_TEST_POSTGRES_URL; without it these tests
skip. Each test gets a database of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from qiter.studies.storage import RunTable

SERVER = os.environ.get("QITER_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not SERVER,
    reason="no PostgreSQL server: QITER_TEST_POSTGRES_URL is unset (`. .ci/postgres.sh` starts one)",
)
SETS = ["--set", "evaluation_interval=500", "--set", "learning_starts=200", "--set", "n_eval_episodes=2"]


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the server; its URL."""
    import sqlalchemy as sa

    assert SERVER is not None
    name = f"qiter_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = sa.engine.make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def _qiter(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "qiter.cli", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process: subprocess.Popen[str], timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out
    return out


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return [t for t in study.trials if not t.user_attrs.get("surplus")]


def test_two_tune_workers_record_each_trial_once(database: str, tmp_path: Path) -> None:
    args = ["tune", "CartPole-v1", "--trials", "4", "--budget", "800", "--storage", database, "--study", "s",
            "--no-plots", "--seed", "0", *SETS]  # fmt: skip
    workers = [_qiter(*args, "--out", str(tmp_path / f"w{i}"), cwd=tmp_path) for i in range(2)]
    outputs = [_finish(w) for w in workers]
    trials = _trials(database, "s")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in trials)
    # Each trial ran in exactly one worker.
    started = [
        line.split()[1]
        for out in outputs
        for line in out.splitlines()
        if line.endswith("started") or " started:" in line
    ]
    assert sorted(started) == ["0", "1", "2", "3"]


def test_killed_worker_trial_fails_and_study_goes_on(database: str, tmp_path: Path) -> None:
    args = ["tune", "CartPole-v1", "--trials", "4", "--budget", "1500", "--storage", database, "--study", "k",
            "--no-plots", "--heartbeat", "1", "--seed", "1", *SETS]  # fmt: skip
    victim = _qiter(*args, "--out", str(tmp_path / "victim"), cwd=tmp_path)
    assert victim.stdout is not None
    line = victim.stdout.readline()
    while line and " started:" not in line:
        line = victim.stdout.readline()
    assert " started:" in line, "the worker never started a trial"
    killed_trial = int(line.split()[1])
    victim.send_signal(signal.SIGKILL)  # mid-trial: its heartbeat thread dies with it
    victim.wait(timeout=30)
    assert {t.number: t.state for t in _trials(database, "k")}[
        killed_trial
    ] == optuna.trial.TrialState.RUNNING
    survivor = _qiter(*args, "--out", str(tmp_path / "survivor"), cwd=tmp_path)
    _finish(survivor)
    trials = {t.number: t for t in _trials(database, "k")}
    assert trials[killed_trial].state == optuna.trial.TrialState.FAIL  # not RUNNING forever
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]
    assert sorted(trials) == [0, 1, 2, 3]
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert sum(t.state in finished for t in trials.values()) == 3


def test_two_sweep_workers_split_the_runs(database: str, tmp_path: Path) -> None:
    args = ["sweep", "CartPole-v1", "--seeds", "0-3", "--steps", "600", "--storage", database, "--name", "sw",
            "--no-progress", *SETS]  # fmt: skip
    workers = [_qiter(*args, "--out", str(tmp_path / f"machine{i}"), cwd=tmp_path) for i in range(2)]
    for worker in workers:
        _finish(worker)
    done = [{p.parent.name for p in (tmp_path / f"machine{i}").rglob("eval.json")} for i in range(2)]
    assert not done[0] & done[1]  # none done twice
    assert done[0] | done[1] == {f"seed-{s}" for s in range(4)}  # none lost
    statuses = RunTable(database, "sw").statuses()
    assert sorted(statuses) == [f"default/seed-{s}" for s in range(4)]
    assert {status for status, _ in statuses.values()} == {"done"}
