"""`qiter plot` and `qiter report`: runs grouped by setting, rliable's IQM and intervals, bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import trim_mean

from qiter.cli import main
from qiter.studies.report import group_runs, iqm_curve, iqm_interval, load_runs, summarize


def _fake_run(folder: Path, seed: int, lr: float, finals: float, stop: int = 3000) -> None:
    """A run folder as the run loop writes it: config.yaml, eval.csv, eval.json."""
    folder.mkdir(parents=True)
    config = {"env_id": "CartPole-v1", "seed": seed, "learning_rate": lr, "device": "cpu"}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    steps = range(500, stop + 1, 500)
    rows = ["step,mean_return,std_return"] + [f"{s},{finals * s / 3000:.3f},1.0" for s in steps]
    (folder / "eval.csv").write_text("\n".join(rows) + "\n")
    (folder / "eval.json").write_text(json.dumps({"mean_return": finals, "wall_time_s": 2.0}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for seed in range(5):
        _fake_run(tmp_path / "sweep" / "lr=0.001" / f"seed-{seed}", seed, 1e-3, 100.0 + 10 * seed)
        # One run of the other setting stopped early: its last evaluation is carried to the end.
        stop = 1500 if seed == 0 else 3000
        _fake_run(tmp_path / "sweep" / "lr=0.0003" / f"seed-{seed}", seed, 3e-4, 400.0 + 25 * seed, stop)
    return tmp_path / "sweep"


def test_iqm_interval_is_rliables_iqm() -> None:
    scores = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 100.0]
    iqm, low, high = iqm_interval(scores, reps=2000)
    assert iqm == pytest.approx(trim_mean(scores, 0.25))
    assert low < iqm < high
    assert iqm_interval(scores, reps=2000) == (iqm, low, high)  # seeded: the same data, the same interval


def test_groups_and_report(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    groups = group_runs(load_runs([sweep]))
    assert sorted(g.label for g in groups) == ["learning_rate=0.0003", "learning_rate=0.001"]
    rows = {r.label: r for r in summarize(groups, threshold=450, reps=500)}
    fast = rows["learning_rate=0.0003"]
    assert fast.n_runs == 5 and fast.mean == pytest.approx(450.0) and fast.above == pytest.approx(0.6)
    assert fast.iqm == pytest.approx(trim_mean([400, 425, 450, 475, 500], 0.25))
    assert main(["report", str(sweep), "--threshold", "450"]) == 0
    out = capsys.readouterr().out
    assert "| learning_rate=0.001 | 5 | 120.0 [" in out and "120.0 ± 14.1" in out and "| 60% | 2.0 |" in out


def test_plot_writes_png(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "curves.png"
    assert main(["plot", str(sweep / "lr=0.001"), str(sweep / "lr=0.0003"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot of 2 settings" in capsys.readouterr().out


def test_bad_folders(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "notes.txt").write_text("hello")
    out = tmp_path / "x.png"
    assert main(["plot", str(tmp_path / "not-a-run"), "--out", str(out)]) == 2
    assert main(["plot", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert main(["report", str(tmp_path / "not-a-run" / "notes.txt")]) == 2
    assert main(["plot", str(sweep), "--out", str(tmp_path / "no-folder" / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("qiter: error: ") for line in err)
    assert "is not a qiter run or sweep folder" in err[0] and "does not exist" in err[1]
    assert not out.exists()


def test_curve_carries_last_evaluation(sweep: Path) -> None:
    from qiter.studies.report import iqm_curve

    group = next(g for g in group_runs(load_runs([sweep])) if g.label == "learning_rate=0.0003")
    steps, point, low, high = iqm_curve(group, reps=500)
    assert list(steps) == [500, 1000, 1500, 2000, 2500, 3000]
    assert np.all(low <= point) and np.all(point <= high)


def test_report_gives_the_peak_mean_q_and_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for seed, peak in enumerate([90.0, 130.0]):
        folder = tmp_path / "runs" / f"seed-{seed}"
        _fake_run(folder, seed, 1e-3, 500.0)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "max_reward": 1.0, "gamma": 0.99}))
        (folder / "train.csv").write_text(
            f"step,loss,mean_q\n1000,0.5,{peak - 40}\n2000,0.4,{peak}\n3000,0.3,80\n"
        )
    (row,) = summarize(group_runs(load_runs([tmp_path / "runs"])), reps=200)
    assert row.peak_mean_q == pytest.approx(130.0)  # the largest of any run, at any step
    assert row.q_bound == pytest.approx(100.0)
    assert main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "peak mean Q (bound)" in out and "| 130 (100) |" in out


def test_plot_of_the_mean_q_with_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for seed in range(3):
        for name, peak in (("a", 90.0), ("b", 300.0)):
            folder = tmp_path / name / f"seed-{seed}"
            _fake_run(folder, seed, 1e-3 if name == "a" else 3e-4, 500.0)
            rows = [f"{s},0.1,{peak * s / 3000}" for s in range(1000, 3001, 1000)]
            (folder / "train.csv").write_text("step,loss,mean_q\n" + "\n".join(rows) + "\n")
    groups = group_runs(load_runs([tmp_path / "a", tmp_path / "b"]), labels=["slow", "fast"])
    steps, iqm, low, high = iqm_curve(groups[1], reps=200, metric="mean_q")
    assert np.all(low <= iqm) and np.all(iqm <= high)
    np.testing.assert_allclose(steps, [1000, 2000, 3000])
    np.testing.assert_allclose(iqm, [100.0, 200.0, 300.0])
    out = tmp_path / "q.png"
    argv = ["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "mean_q", "--out", str(out)]
    assert main([*argv, "--labels", "slow", "fast"]) == 0
    assert out.stat().st_size > 10_000
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "slow", "fast"]) == 0
    assert "| slow | 3 |" in capsys.readouterr().out
    assert main([*argv, "--labels", "only-one"]) == 2
    assert "1 labels for 2 settings" in capsys.readouterr().err


def _short_run(folder: Path, seed: int, final: float, algo: str = "dqn") -> None:
    """A run shorter than its evaluation interval: config.yaml and eval.json only (no eval.csv)."""
    folder.mkdir(parents=True)
    config = {"env_id": "CartPole-v1", "seed": seed, "n_timesteps": 2000, "evaluation_interval": 5000}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = {"algo": algo, "steps": 2000, "mean_return": final, "wall_time_s": 1.0}
    (folder / "eval.json").write_text(json.dumps(result))


def test_runs_shorter_than_the_evaluation_interval_are_plotted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for seed in range(4):
        _short_run(tmp_path / "sweep" / "default" / f"seed-{seed}", seed, 20.0 + 10 * seed)
    (group,) = group_runs(load_runs([tmp_path / "sweep"]))
    steps, point, _, _ = iqm_curve(group, reps=200)
    assert list(steps) == [2000] and point[0] == pytest.approx(trim_mean([20, 30, 40, 50], 0.25))
    out = tmp_path / "p.png"
    assert main(["plot", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_curve_ends_with_the_reports_final_value(sweep: Path) -> None:
    """The last point of a curve is the final evaluation (eval.json), the number the report gives, even
    where a periodic evaluation (other episodes) was made at the same step."""
    for seed in range(5):
        run = sweep / "lr=0.001" / f"seed-{seed}"
        result = json.loads((run / "eval.json").read_text())
        (run / "eval.json").write_text(json.dumps({**result, "steps": 3000, "algo": "dqn"}))
    (group,) = group_runs(load_runs([sweep / "lr=0.001"]))
    # The periodic evaluations at step 3000 were 100, 110, ... as the finals: make them differ.
    for record in group.runs:
        record.eval_returns = record.eval_returns - 50.0
    steps, point, _, _ = iqm_curve(group, reps=200)
    (row,) = summarize([group], reps=200)
    assert steps[-1] == 3000 and point[-1] == pytest.approx(row.iqm)
    assert point[-2] == pytest.approx(
        trim_mean([100 * 2500 / 3000 + 10 * s * 2500 / 3000 - 50 for s in range(5)], 0.25)
    )


def test_plot_checks_out_before_the_work(
    sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import qiter.studies.report

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("runs read before --out was checked")

    monkeypatch.setattr(qiter.studies.report, "load_runs", no_work)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["plot", str(sweep), "--out", str(blocker / "p.png")]) == 2
    assert (
        capsys.readouterr().err
        == f"qiter: error: --out {blocker / 'p.png'}: {blocker} is a file, not a folder\n"
    )


def test_runs_of_several_algorithms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs of equal configs but different algorithms are different settings; --algo keeps one."""
    for seed in range(3):
        _short_run(tmp_path / "td3" / f"seed-{seed}", seed, -200.0 - seed, algo="td3")
        _short_run(tmp_path / "ddpg" / f"seed-{seed}", seed, -400.0 - seed, algo="ddpg")
    groups = group_runs(load_runs([tmp_path]))
    assert sorted(g.label for g in groups) == ["algo=ddpg", "algo=td3"]
    assert main(["report", str(tmp_path), "--algo", "td3"]) == 0
    assert "| td3 CartPole-v1 | 3 | -201.0" in capsys.readouterr().out
    assert main(["plot", str(tmp_path), "--algo", "naf", "--out", str(tmp_path / "p.png")]) == 2
    assert "no naf run" in capsys.readouterr().err
