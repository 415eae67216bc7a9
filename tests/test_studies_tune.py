"""`qiter tune` on SQLite: trials, pruning through run-loop events, export of the best trial, bad input."""

from __future__ import annotations

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
    base = ["tune", "CartPole-v1", "--trials", "1", "--budget", "500", "--out", str(tmp_path / "t")]
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
