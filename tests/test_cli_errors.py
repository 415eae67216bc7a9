"""The command line as a new user meets it: budgets that learn nothing, folders that cannot be written,
options that do not apply, messages that must be true, and output that must say what happened.

Every check here runs before any work: nothing may be left behind by a refused command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from qiter.cli import build_parser, main
from qiter.errors import QiterWarning, one_line_warnings

QUICK = ["--no-progress", "--set", "n_eval_episodes=1", "--set", "evaluation_interval=0"]
# A tiny TD3 (small networks, learning from step 100): a run in about a second.
TINY_TD3 = ["--set", "hidden_sizes=16", "--set", "learning_starts=100", "--set", "batch_size=16"]


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, check it fails in one line with exit code 2, return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("qiter: error:") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def td3_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("td3") / "run"
    assert (
        main(
            [
                "train",
                "Pendulum-v1",
                "--algo",
                "td3",
                "--steps",
                "200",
                "--run-dir",
                str(run),
                *TINY_TD3,
                *QUICK,
            ]
        )
        == 0
    )
    return run


@pytest.fixture(scope="module")
def dqn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dqn") / "run"
    argv = ["train", "CartPole-v1", "--steps", "300", "--set", "learning_starts=100", "--run-dir", str(run)]
    assert main([*argv, *QUICK]) == 0
    return run


# -- 1. budgets that learn nothing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["Pendulum-v1", "--algo", "td3", "--steps", "3000"],  # the preset waits 10000 steps
        ["Pendulum-v1", "--algo", "ddpg", "--steps", "100", "--set", "learning_starts=100"],
        ["Pendulum-v1", "--algo", "naf", "--steps", "50", "--set", "learning_starts=100"],
        ["Pendulum-v1", "--algo", "cem", "--steps", "100", "--set", "learning_starts=100"],
        ["Pendulum-v1", "--discretize", "3", "--steps", "100", "--set", "learning_starts=100"],
        ["CartPole-v1", "--steps", "1000"],  # the preset's learning_starts is 1000
        # Below one update interval: learning could start, but no update falls within the budget.
        ["CartPole-v1", "--steps", "3", "--set", "learning_starts=0", "--set", "update_interval=4"],
        [
            "Pendulum-v1",
            "--algo",
            "td3",
            "--steps",
            "3",
            "--set",
            "learning_starts=0",
            "--set",
            "update_interval=4",
        ],
    ],
)
def test_a_budget_that_learns_nothing_is_refused_before_any_work(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = error_of(["train", *argv, "--runs-dir", str(tmp_path)], capsys)
    assert "nothing would be learned" in err and "first gradient step comes at step" in err
    assert not any(tmp_path.iterdir())


def test_first_update_step_follows_the_update_schedule() -> None:
    from qiter.continuous.config import TD3Config
    from qiter.continuous.ddpg import TD3Agent
    from qiter.dqn import DQNConfig
    from qiter.dqn.agent import DQNAgent

    assert DQNAgent.first_update_step(DQNConfig(learning_starts=100, update_interval=2)) == 102
    assert DQNAgent.first_update_step(DQNConfig(learning_starts=101, update_interval=2)) == 102
    # Four copies step 4 at a time: steps 4, 8, ..., the first above 100 with a multiple of 6 in (s-4, s].
    assert DQNAgent.first_update_step(DQNConfig(learning_starts=100, update_interval=6, n_envs=4)) == 104
    # A resume at step 500 without its buffer waits learning_starts again.
    assert DQNAgent.first_update_step(DQNConfig(learning_starts=100), 500, 600) == 602
    assert TD3Agent.first_update_step(TD3Config(learning_starts=100)) == 101
    assert (
        TD3Agent.first_update_step(TD3Config(learning_starts=100, update_unit="episodes", update_interval=3))
        == 101
    )


def test_a_resume_without_buffer_that_cannot_learn_is_refused(
    dqn_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Saved at 300 without its buffer: learning waits until step 400, beyond 350.
    err = error_of(["train", "--resume", str(dqn_run), "--steps", "350", "--no-progress"], capsys)
    assert "first gradient step comes at step 402" in err and "replay buffer" in err


def test_a_budget_that_learns_but_never_updates_the_target_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "train",
        "CartPole-v1",
        "--steps",
        "300",
        "--set",
        "learning_starts=100",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--set", "target_network_update_interval=1000", *QUICK]) == 0
    err = capsys.readouterr().err
    assert err.count("qiter: warning: the target network is never updated") == 1, err


# -- 4. folders that cannot be written, seeds out of range: one line, nothing left ---------------------


def test_unwritable_folders_are_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    long_name = "x" * 300
    for argv, message in [
        (["train", "CartPole-v1", "--run-dir", str(a_file / "run")], "is a file, not a folder"),
        (["train", "CartPole-v1", "--runs-dir", str(a_file / "runs")], "is a file, not a folder"),
        (
            ["train", "CartPole-v1", "--run-dir", str(tmp_path / long_name)],
            "longer than the file system allows",
        ),
        (
            ["train", "CartPole-v1", "--runs-dir", str(tmp_path / long_name)],
            "longer than the file system allows",
        ),
        (
            ["collect", "CartPole-v1", "--steps", "10", "--out", str(a_file / "data.npz")],
            "is a file, not a folder",
        ),
        (
            [
                "population",
                "CartPole-v1",
                "--agents",
                "2",
                "--steps",
                "200",
                "--set",
                "learning_starts=100",
                "--runs-dir",
                str(a_file / "p"),
            ],
            "not a folder",
        ),
    ]:
        assert message in error_of(argv, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc, a folder nobody can create in")
def test_a_folder_where_nothing_can_be_created_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # /proc refuses new entries even to root, for whom permission bits say nothing.
    assert "cannot write in /proc" in error_of(
        ["train", "CartPole-v1", "--run-dir", "/proc/qiter-run"], capsys
    )
    assert "cannot write in /proc" in error_of(["collect", "CartPole-v1", "--out", "/proc/qiter.npz"], capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "CartPole-v1", "--seed", "-1"],
        ["train", "CartPole-v1", "--seed", "4294967296"],
        ["tabular", "FrozenLake-v1", "--seed", "-1"],
        ["collect", "CartPole-v1", "--seed", "-1", "--out", "data.npz"],
        ["population", "CartPole-v1", "--agents", "2", "--seed", "-5"],
    ],
)
def test_seeds_out_of_range_are_one_line_and_leave_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    err = error_of(
        [*argv, "--runs-dir", str(tmp_path / "runs")] if argv[0] in ("train", "population") else argv, capsys
    )
    assert "seed must be" in err
    assert not any(tmp_path.iterdir())


# -- 5. options that do not apply ----------------------------------------------------------------------


def test_resume_refuses_another_algorithm(td3_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["train", "--resume", str(td3_run), "--algo", "ddpg"], capsys)
    assert "is a td3 run" in err
    assert "is a td3 run" in error_of(["train", "--resume", str(td3_run), "--discretize", "3"], capsys)


@pytest.mark.parametrize("epsilon", ["5", "-1", "nan"])
def test_eval_epsilon_must_be_a_probability(
    dqn_run: Path, epsilon: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--epsilon must be in [0, 1]" in error_of(["eval", str(dqn_run), "--epsilon", epsilon], capsys)


def test_eval_epsilon_is_refused_for_continuous_actions(
    td3_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = error_of(["eval", str(td3_run), "--epsilon", "0.1", "--episodes", "1"], capsys)
    assert "for discrete actions" in err and "td3" in err
    assert main(["eval", str(td3_run), "--episodes", "1"]) == 0


# -- 6. messages that must be true ---------------------------------------------------------------------


def test_collect_advises_only_what_exists(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = error_of(["collect", "Pendulum-v1", "--out", str(tmp_path / "d.npz")], capsys)
    # collect has no --algo: the advice is another command.
    assert "`qiter train ENV_ID --algo td3`" in err and "--discretize" not in err


def test_population_lists_only_the_envs_it_supports(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["population", "LunarLander-v3", "--agents", "2"], capsys)
    assert "CartPole-v1" in err and "Pendulum-v1" not in err
    assert "continuous actions" in error_of(["population", "Pendulum-v1", "--agents", "2"], capsys)


def test_divergence_without_checkpoint_says_so_and_no_resume_is_advised(tmp_path: Path) -> None:
    from qiter import runs
    from qiter.errors import QiterError
    from qiter.lifecycle import DivergenceError, check_finite

    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "train.csv").write_text("step,loss\n1000,nan\n")
    with pytest.raises(DivergenceError, match="No checkpoint was written before it") as info:
        check_finite(1000, {"loss": float("nan")}, run_path=run)
    assert "kept" not in str(info.value)
    # The next run in that folder is not told to --resume a run that has nothing to resume from.
    with pytest.raises(QiterError, match="replace it with --overwrite") as info:
        runs.claim_run_dir(run)
    assert "--resume" not in str(info.value)
    runs.save_checkpoint(run / "checkpoints" / "latest.pt", {"step": 500})
    with pytest.raises(DivergenceError, match=r"latest.pt, is kept: `qiter train --resume"):
        check_finite(1000, {"loss": float("inf")}, run_path=run)


def test_eval_of_a_population_folder_reads_its_best_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "population"
    argv = [
        "population",
        "CartPole-v1",
        "--agents",
        "2",
        "--steps",
        "300",
        "--run-dir",
        str(folder),
        "--quiet",
    ]
    assert (
        main([*argv, "--save-best", "--set", "learning_starts=100", "--set", "evaluation_interval=150"]) == 0
    )
    capsys.readouterr()
    assert main(["eval", str(folder), "--episodes", "2"]) == 0  # its best.pt
    assert "Evaluation of CartPole-v1 over 2 episodes" in capsys.readouterr().out
    # The population's own checkpoint holds every agent: not something eval or train can read.
    whole = str(folder / "checkpoints" / "latest.pt")
    assert "holds a whole population, not one agent" in error_of(["eval", whole], capsys)
    assert "continue it with `qiter population --resume" in error_of(
        ["train", "--resume", str(folder)], capsys
    )


def test_a_checkpoint_of_another_run_in_a_run_folder_is_refused(
    td3_run: Path, dqn_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(dqn_run, mixed)
    shutil.copy(td3_run / "checkpoints" / "latest.pt", mixed / "checkpoints" / "latest.pt")
    for argv in (["eval", str(mixed)], ["train", "--resume", str(mixed)]):
        err = error_of(argv, capsys)
        assert "does not belong to the run" in err and "td3 checkpoint of Pendulum-v1" in err


# -- 7. output that says what happened -----------------------------------------------------------------


def test_a_greedy_evaluation_shows_no_training_epsilon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "train",
        "CartPole-v1",
        "--steps",
        "400",
        "--set",
        "learning_starts=100",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert (
        main([*argv, "--no-progress", "--set", "evaluation_interval=200", "--set", "n_eval_episodes=1"]) == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Evaluation at step")]
    assert len(lines) == 2 and not any("epsilon" in line for line in lines)


def test_qiter_warnings_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        one_line_warnings()
        warnings.warn("the budget is small", QiterWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.startswith("qiter: warning: the budget is small\n")
    assert "something else" not in err  # other warnings keep Python's way (pytest records them here)


def test_integer_flags_take_scientific_notation(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["train", "CartPole-v1", "--steps", "1e5", "--seed", "1_000"]).steps == 100_000
    assert (
        parser.parse_args(["population", "CartPole-v1", "--agents", "6.4e1", "--steps", "2e4"]).agents == 64
    )
    assert parser.parse_args(["sweep", "CartPole-v1", "--out", "o", "--steps", "2e3"]).steps == 2000
    assert parser.parse_args(["tune", "CartPole-v1", "--budget", "1e4"]).budget == 10_000
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "CartPole-v1", "--steps", "1.5e0"])
    assert "invalid integer value: '1.5e0'" in capsys.readouterr().err


def test_help_names_every_algorithm_where_a_command_serves_them_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "TD3" in top
    for line in top.splitlines():
        if line.strip().startswith(("eval ", "presets ")):
            assert "DQN" not in line, line


def test_more_bad_input_is_one_line_before_any_work(
    dqn_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    runs_dir = tmp_path / "runs"
    # --eval-episodes -3 crashed after training with an AssertionError (and 0 silently meant the default).
    argv = ["train", "CartPole-v1", "--eval-episodes", "-3", "--runs-dir", str(runs_dir)]
    assert "--eval-episodes must be at least 0" in error_of(argv, capsys)
    assert not runs_dir.exists()
    # An unwritable --video-folder was a FileNotFoundError traceback after the episodes.
    argv = ["eval", str(dqn_run), "--video", "--video-folder", str(a_file / "videos"), "--episodes", "1"]
    assert "is a file" in error_of(argv, capsys)
    # A resume whose budget is already spent trained nothing and said "Trained 0 steps".
    argv = ["train", "--resume", str(dqn_run), "--steps", "200"]
    assert "already at step 300 of n_timesteps=200: nothing to train" in error_of(argv, capsys)


def test_envs_filter_that_matches_nothing_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs", "--filter", "NoSuchEnvironmentAnywhere"]) == 1
    assert "no registered environment id contains 'NoSuchEnvironmentAnywhere'" in capsys.readouterr().err


def test_python_dash_m_qiter_runs_the_cli_and_a_closed_pipe_is_no_traceback() -> None:
    # `python -m qiter envs | head -1`, with the reader gone before qiter writes anything: exit code 141
    # comes from qiter's main, so `python -m qiter` ran the CLI.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    child = subprocess.Popen(
        [sys.executable, "-m", "qiter", "envs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait() == 141 and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_qiter_warnings_are_one_line_in_sweep_workers() -> None:
    # A sweep's worker processes (spawned) printed Python's format, with the warn call's source line.
    code = (
        "import os, warnings\n"
        "from qiter.studies.sweep import _init_worker\n"
        "from qiter.errors import QiterWarning\n"
        "_init_worker(os.getppid(), None)\n"
        "warnings.warn('from a worker', QiterWarning, stacklevel=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stderr == "qiter: warning: from a worker\n", done.stderr


def test_a_population_budget_that_learns_nothing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 100 steps under the CartPole-v1 preset's learning_starts (1000): it trained and reported nothing learned.
    argv = ["population", "CartPole-v1", "--agents", "2", "--steps", "1e2", "--runs-dir", str(tmp_path)]
    assert "nothing would be learned" in error_of(argv, capsys)
    assert not any(tmp_path.iterdir())
