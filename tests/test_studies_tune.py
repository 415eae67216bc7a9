"""`qiter tune` on SQLite: trials, pruning through run-loop events, export of the best trial, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from qiter.cli import main
from qiter.dqn.trainer import train
from qiter.resolve import resolve_config
from qiter.studies.tune import _Pruning

TINY = ["--set", "evaluation_interval=500", "--set", "learning_starts=200", "--set", "n_eval_episodes=2"]


def test_tune_sqlite_export_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, best = tmp_path / "tune", tmp_path / "tune" / "best.yaml"
    args = [
        "tune",
        "CartPole-v1",
        "--trials",
        "2",
        "--budget",
        "1000",
        "--seed",
        "0",
        "--out",
        str(out),
        *TINY,
    ]
    assert main([*args, "--export-best", str(best)]) == 0
    output = capsys.readouterr().out
    assert "study dqn-CartPole-v1: 2 complete" in output and f"best config: {best}" in output
    assert (out / "study.db").is_file() and (out / "optimization_history.png").stat().st_size > 10_000
    assert (out / "trials" / "trial-1" / "eval.json").is_file()
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1]
    # The exported preset is a config `qiter train --config` reads, with the best trial's values.
    config = resolve_config("CartPole-v1", config_file=best)
    assert config.learning_rate == pytest.approx(study.best_params["learning_rate"])
    assert config.n_timesteps == 1000 and config.seed == 0
    # The same command again: the study already holds 2 trials, nothing more runs.
    assert main(args) == 0
    assert "trial 2" not in capsys.readouterr().out


def test_pruning_through_run_events() -> None:
    """A trial the pruner gives up on ends at the evaluation that reported it."""
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1e9))
    trial = study.ask()
    config = resolve_config(
        "CartPole-v1", overrides=["n_timesteps=2000", "evaluation_interval=500", "n_eval_episodes=2"]
    )
    with pytest.raises(optuna.TrialPruned, match="pruned at step 500"):
        train(config, None, progress=False, verbose=0, events=[_Pruning(trial)])
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert list(study.trials[0].intermediate_values) == [500]


def test_bad_storage_and_direction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="taken", storage=url, direction="minimize")
    base = ["tune", "CartPole-v1", "--trials", "1", "--budget", "1500", "--out", str(tmp_path / "t")]
    assert main([*base, "--storage", url, "--study", "taken"]) == 2
    assert main([*base, "--storage", "postgresql+psycopg://nobody@127.0.0.1:1/none"]) == 2
    assert main([*base, "--storage", "not a url"]) == 2
    assert main([*base, "--storage", f"sqlite:///{tmp_path / 'missing' / 'x.db'}"]) == 2
    assert main([*base, "--pruner", "best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(line.startswith("qiter: error: ") for line in err)
    assert "already exists" in err[0] and "direction minimize" in err[0]
    assert (
        "cannot open storage" in err[1] and "malformed storage URL" in err[2] and "does not exist" in err[3]
    )
    assert "unknown pruner" in err[4]
    assert not (tmp_path / "t" / "trials").exists()


def test_every_search_space_fits_its_config() -> None:
    """Each algorithm's space names fields of its config, and a draw of it makes a valid config."""
    from qiter.agent import agent_class
    from qiter.config import config_from_dict
    from qiter.search_space import draw
    from qiter.studies.tune import SEARCH_SPACES, search_space

    assert set(SEARCH_SPACES) == {"dqn", "dqn-discretized", "td3", "ddpg", "naf", "cem"}
    for algo in SEARCH_SPACES:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        cls = agent_class(algo).config_class
        for _ in range(5):
            values = draw(study.ask(), search_space(algo))
            config_from_dict(cls, values).validate()
    td3 = search_space("td3")
    assert td3["tau"] == ("choice", [0.001, 0.005, 0.01, 0.02, 0.05, 0.08])  # the RL Zoo's
    assert td3["gradient_steps"] == ("fixed", -1)  # as many gradient steps as update_interval's steps


def test_tune_td3_and_export_a_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A short TD3 study on Pendulum; the best trial exported as a preset `qiter train --algo td3` reads."""
    out, best = tmp_path / "tune", tmp_path / "best.yaml"
    tiny = ["learning_starts=200", "evaluation_interval=200", "n_eval_episodes=1"]
    # 600 steps: the Zoo's space draws update_interval up to 512, and a trial must learn something.
    argv = ["tune", "Pendulum-v1", "--algo", "td3", "--trials", "2", "--budget", "600", "--seed", "0"]
    argv += [
        "--out",
        str(out),
        "--no-plots",
        "--export-best",
        str(best),
        *[x for s in tiny for x in ("--set", s)],
    ]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "study td3-Pendulum-v1: " in output
    study = optuna.load_study(study_name="td3-Pendulum-v1", storage=f"sqlite:///{out / 'study.db'}")
    # A draw whose first update comes after the budget (the Zoo's update intervals reach 512 steps) may
    # fail with its reason; the study goes on.
    states = [t.state for t in study.trials]
    assert len(states) == 2 and optuna.trial.TrialState.COMPLETE in states
    assert all(t.user_attrs.get("failure") for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert "hidden_sizes" in study.best_params and "exploration_noise" in study.best_params
    assert "qiter train Pendulum-v1 --algo td3 --config FILE" in best.read_text()
    config = resolve_config("Pendulum-v1", config_file=best, algo="td3")
    assert config.hidden_sizes == study.best_params["hidden_sizes"]
    assert config.learning_rate == pytest.approx(study.best_params["learning_rate"])
    assert config.gradient_steps == -1 and config.n_timesteps == 600 and config.n_critics == 2


def test_bad_trials_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["tune", "CartPole-v1", "--trials", "0", "--out", str(tmp_path / "t")]) == 2
    assert main(["tune", "CartPole-v1", "--trials", "1", "--out", str(blocker / "t")]) == 2
    assert (
        main(["tune", "CartPole-v1", "--out", str(tmp_path / "t"), "--export-best", str(blocker / "b.yaml")])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("qiter: error: ") for line in err)
    assert "--trials must be at least 1" in err[0]
    assert f"{blocker} is a file" in err[1] and f"{blocker} is a file" in err[2]
    # A budget in which DQN (whose space leaves learning_starts to the config) learns nothing.
    assert main(["tune", "CartPole-v1", "--budget", "500", "--out", str(tmp_path / "t")]) == 2
    err_budget = capsys.readouterr().err
    assert "nothing would be learned" in err_budget and "raise it (--budget)" in err_budget
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals as on Linux")
def test_sigterm_fails_the_running_trial(tmp_path: Path) -> None:
    """SIGTERM during a trial: its run saves, the trial is marked failed (not left running), exit 143."""
    out = tmp_path / "tune"
    argv = ["tune", "CartPole-v1", "--trials", "3", "--budget", "100000", "--out", str(out), "--no-plots"]
    argv += [*TINY, "--set", "checkpoint_interval=500"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "qiter.cli", *argv]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    latest = out / "trials" / "trial-0" / "checkpoints" / "latest.pt"
    start = time.monotonic()
    while not latest.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "trial 0 marked failed" in err and "Traceback" not in err
    assert "Continue with the same command: qiter tune CartPole-v1" in err
    study = optuna.load_study(study_name="dqn-CartPole-v1", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_a_trial_that_cannot_run_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trial whose values diverge (or cannot run) fails with its reason in one line; the study goes on."""
    import qiter.run_loop
    from qiter.run_loop import DivergenceError

    real_train = qiter.run_loop.train
    calls: list[int] = []

    def diverge_once(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise DivergenceError("training diverged at step 300: loss is nan")
        return real_train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(qiter.run_loop, "train", diverge_once)
    argv = ["tune", "CartPole-v1", "--trials", "2", "--budget", "600", "--seed", "0", "--no-plots"]
    assert main([*argv, "--out", str(tmp_path / "t"), *TINY]) == 0
    captured = capsys.readouterr()
    assert "trial 0 fail: training diverged at step 300: loss is nan" in captured.out
    assert "study dqn-CartPole-v1: 1 complete, 1 fail" in captured.out
    assert "Traceback" not in captured.err
