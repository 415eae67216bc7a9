"""Environment creation and checks: clear errors, plug-in envs, flattening, every env family DQN supports."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium.error import DependencyNotInstalled
from messages import one_line

from qiter.cli import main
from qiter.dqn import DQNConfig, QNetwork, evaluate_policy, run_dqn, train
from qiter.envs import check_env_id, make_env, require_box_observations, require_discrete_actions
from qiter.errors import QiterError


def test_unknown_id_suggests_close_names() -> None:
    with pytest.raises(QiterError, match="Did you mean: CartPole-v1"):
        check_env_id("CartPol-v1")
    with pytest.raises(QiterError, match="qiter envs"):
        check_env_id("NoSuchThingAtAll-v0")


def test_removed_version_names_the_current_one() -> None:
    with pytest.raises(QiterError, match="use one of: Taxi-v4"):
        make_env("Taxi-v3")


def test_flatten_makes_a_flat_box() -> None:
    env = make_env("FrozenLake-v1", flatten=True)  # Discrete stays Discrete: tabular code needs it
    assert isinstance(env.observation_space, gym.spaces.Discrete)
    env = make_env("CartPole-v1", flatten=True)
    assert env.observation_space.shape == (4,)


def test_space_checks_explain_what_is_supported() -> None:
    with pytest.raises(QiterError, match=r"Discrete action space, but Pendulum-v1"):
        require_discrete_actions(make_env("Pendulum-v1"), "DQN")
    with pytest.raises(QiterError, match="tabular"):
        require_box_observations(make_env("FrozenLake-v1"), "DQN")


@pytest.mark.parametrize("env_id", ["FlappyBird-v0", "LunarLander-v3", "MountainCar-v0", "Acrobot-v1"])
def test_dqn_runs_on_the_seed_environments(env_id: str) -> None:
    config = DQNConfig(
        env_id=env_id,
        n_timesteps=400,
        learning_starts=100,
        evaluation_interval=400,
        n_eval_episodes=1,
        seed=0,
    )
    result = train(config, progress=False, verbose=0)
    assert result.steps == 400 and result.final_eval is not None


def test_flappy_bird_float64_observations_as_in_the_seed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The seed trains FlappyBird in float64 and loads its checkpoints into a `.double()` network."""
    q_net = run_dqn(
        env_id="FlappyBird-v0",
        n_timesteps=300,
        learning_starts=100,
        evaluation_interval=300,
        n_eval_episodes=1,
        n_hidden_units=32,
        checkpoint_folder=tmp_path,
        progress=False,
    )
    assert next(q_net.parameters()).dtype == th.float64
    env = make_env("FlappyBird-v0")
    assert env.observation_space.dtype == np.float64
    loaded = QNetwork(env.observation_space, env.action_space, n_hidden_units=32).double()
    loaded.load_state_dict(th.load(tmp_path / "q_net_checkpoint_FlappyBird-v0_300.pth"))
    mean, _ = evaluate_policy(env, loaded, 1)
    assert np.isfinite(mean)


BOX2D_IDS = sorted(
    env_id
    for env_id, spec in gym.registry.items()
    if isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.box2d")
)


@pytest.fixture
def without_box2d(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import Box2D`` fail, as on a machine without it, so gymnasium raises its real error."""
    monkeypatch.setitem(sys.modules, "Box2D", None)  # None in sys.modules: the import raises ImportError
    for name in [m for m in sys.modules if m.startswith("gymnasium.envs.box2d")]:
        monkeypatch.delitem(sys.modules, name)  # restored afterwards, so other tests keep the real modules


def test_box2d_ids_are_known() -> None:
    assert "LunarLander-v3" in BOX2D_IDS and "CarRacing-v3" in BOX2D_IDS


@pytest.mark.usefixtures("without_box2d")
@pytest.mark.parametrize("env_id", BOX2D_IDS)
def test_box2d_env_without_box2d_names_the_extra(env_id: str) -> None:
    with pytest.raises(DependencyNotInstalled):  # what gymnasium itself raises: the condition is real
        gym.make(env_id)
    with pytest.raises(QiterError) as info:
        make_env(env_id)
    message = one_line(str(info.value))
    assert env_id in message and 'pip install "qiter[box2d]"' in message


def test_other_missing_dependency_gives_gymnasiums_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def make(*args: object, **kwargs: object) -> gym.Env:
        raise DependencyNotInstalled('MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`\nmore')

    monkeypatch.setattr(gym, "make", make)
    with pytest.raises(QiterError) as info:
        make_env("CartPole-v1")
    message = one_line(str(info.value))
    assert "CartPole-v1" in message and "gymnasium[mujoco]" in message and "qiter[" not in message


@pytest.mark.usefixtures("without_box2d")
def test_cli_train_without_box2d_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "LunarLander-v3", "--steps", "100", "--runs-dir", str(tmp_path), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "qiter[box2d]"' in err
    assert list(tmp_path.iterdir()) == []  # no run folder


# -- environments as users bring them: keyword arguments of gymnasium.make, their own modules ------------

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_env_kwargs_reach_gymnasium_make_and_a_bad_one_is_one_line() -> None:
    from qiter.agent import agent_class

    config = DQNConfig(env_id="CartPole-v1", env_kwargs={"sutton_barto_reward": True})
    env = agent_class("dqn").make_env(config)
    assert env.unwrapped._sutton_barto_reward is True
    with pytest.raises(QiterError, match=r"CartPole-v1 does not accept the keyword arguments \['windy'\]"):
        make_env("CartPole-v1", windy=True)
    with pytest.raises(QiterError, match="env_kwargs must be"):
        DQNConfig(env_kwargs={"render_mode": "human"}).validate()


def test_env_kwargs_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qiter.cli import main
    from qiter.data import load_data
    from qiter.runs import load_run_config

    # tabular: a deterministic FrozenLake is solved by Q-learning's greedy policy on every episode
    argv = [
        "tabular",
        "FrozenLake-v1",
        "--env-kwargs",
        "is_slippery=false",
        "--episodes",
        "300",
        "--seed",
        "0",
    ]
    assert main([*argv, "--eval-episodes", "5", "--no-progress"]) == 0
    assert "Q-learning:      1.000 +/- 0.000" in capsys.readouterr().out
    # train: kept in config.yaml (what resume, eval and load_agent read)
    run = tmp_path / "run"
    argv = ["train", "CartPole-v1", "--env-kwargs", "sutton_barto_reward=true", "--run-dir", str(run)]
    argv += [
        "--steps",
        "200",
        "--set",
        "learning_starts=100",
        "--set",
        "evaluation_interval=0",
        "--no-progress",
    ]
    assert main([*argv, "--set", "n_eval_episodes=1"]) == 0
    assert load_run_config(run)["env_kwargs"] == {"sutton_barto_reward": True}
    # Sutton and Barto's reward is 0 a step and -1 at the end: the evaluation's return says which env ran.
    assert "over 1 episodes: -1.00" in capsys.readouterr().out
    assert main(["eval", str(run), "--episodes", "1", "--env-kwargs", "sutton_barto_reward=false"]) == 0
    assert "over 1 episodes: -1.00" not in capsys.readouterr().out
    # collect keeps them with the data, and fqi makes its env with them
    out = tmp_path / "data.npz"
    assert (
        main(
            [
                "collect",
                "CartPole-v1",
                "--steps",
                "50",
                "--out",
                str(out),
                "--env-kwargs",
                "sutton_barto_reward=true",
            ]
        )
        == 0
    )
    data = load_data(out)
    assert data.env_kwargs == {"sutton_barto_reward": True} and set(np.unique(data.rewards)) <= {0.0, -1.0}
    argv = [
        "fqi",
        str(out),
        "--iterations",
        "1",
        "--eval-episodes",
        "1",
        "--no-progress",
        "--regressor",
        "linear",
    ]
    assert main(argv) == 0
    assert "final greedy return over 1 episodes: -1.00" in capsys.readouterr().out


def test_a_users_own_environment_from_its_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from qiter.cli import main
    from qiter.runs import load_run_config

    monkeypatch.setattr(sys, "path", list(sys.path))  # the current folder is added to find the module
    monkeypatch.chdir(EXAMPLES)
    run = tmp_path / "run"
    argv = [
        "train",
        "corridor_env:Corridor-v0",
        "--env-kwargs",
        "length=4",
        "--run-dir",
        str(run),
        "--seed",
        "0",
    ]
    argv += [
        "--steps",
        "300",
        "--set",
        "learning_starts=100",
        "--set",
        "evaluation_interval=0",
        "--no-progress",
    ]
    assert main([*argv, "--set", "n_eval_episodes=1"]) == 0
    assert load_run_config(run)["env_id"] == "corridor_env:Corridor-v0"
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert "Evaluation of corridor_env:Corridor-v0 over 1 episodes" in capsys.readouterr().out
    env = make_env("corridor_env:Corridor-v0", length=4)
    assert env.unwrapped.length == 4
    with pytest.raises(
        QiterError, match=r"'corridor_env' registers no environment 'Corridr-v0'\. Did you mean"
    ):
        check_env_id("corridor_env:Corridr-v0")
    with pytest.raises(QiterError, match="no module named 'no_such_module'"):
        check_env_id("no_such_module:Corridor-v0")
