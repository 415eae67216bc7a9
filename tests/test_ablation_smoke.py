"""The ablation script end to end on tiny budgets (``--smoke``): every variant trains and every output is written."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qiter_ablation", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ablation_smoke(tmp_path: Path) -> None:
    ablation = load_script()
    assert ablation.main(["--smoke", "--out", str(tmp_path)]) == 0
    for name in ("evaluations.csv", "runs.csv", "ablation.md", "ablation.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with (tmp_path / "runs.csv").open() as f:
        runs = list(csv.DictReader(f))
    assert [r["variant"] for r in runs] == list(ablation.VARIANTS)
    assert all(r["env"] == "CartPole-v1" and int(r["steps"]) == 600 for r in runs)
    with (tmp_path / "evaluations.csv").open() as f:
        evaluations = list(csv.DictReader(f))
    # Three evaluations (steps 200, 400, 600) per variant.
    assert len(evaluations) == 3 * len(ablation.VARIANTS)
    table = (tmp_path / "ablation.md").read_text()
    assert all(f"| {variant} |" in table for variant in ablation.VARIANTS)


def test_variant_configs_change_only_their_keys() -> None:
    ablation = load_script()
    base = ablation.make_config("Acrobot-v1", "dqn", 3)
    # The Acrobot preset's Huber loss and clipping are switched off in the base...
    assert base.loss == "mse" and base.max_grad_norm is None and base.seed == 3
    rainbow = ablation.make_config("Acrobot-v1", "rainbow-lite", 3)
    assert rainbow.double_dqn and rainbow.n_steps == 3 and rainbow.dueling and rainbow.prioritized_replay
    # ... and everything else is the preset's.
    assert rainbow.n_hidden_units == base.n_hidden_units == 256
    assert rainbow.learning_rate == base.learning_rate


def test_bootstrap_band_brackets_the_mean() -> None:
    ablation = load_script()
    curves = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    low, high = ablation.bootstrap_band(curves, np.random.default_rng(0))
    assert np.all(low <= curves.mean(axis=0)) and np.all(curves.mean(axis=0) <= high)
    # Seeds that agree give a zero-width band; resampled means stay within the seeds' range.
    assert low[1] == high[1] == 10.0
    assert 0.0 <= low[0] < 2.0 < high[0] <= 4.0
