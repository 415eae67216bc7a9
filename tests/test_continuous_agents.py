"""The continuous-action agents in the run loop: checkpoints, resume, load_agent, the CLI, bad input, and a
short learning check."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium import spaces

import qiter
from qiter.agent import agent_class
from qiter.cli import main
from qiter.continuous.ddpg import TD3Agent
from qiter.errors import QiterError
from qiter.run_loop import train

ALGOS = ["td3", "ddpg", "naf", "cem", "dqn-discretized"]


def _config(algo: str, **values: object):  # type: ignore[no-untyped-def]
    cls = agent_class(algo).config_class
    small = {"n_hidden_units": 16} if algo == "dqn-discretized" else {"hidden_sizes": "16,16"}
    if algo == "cem":
        small.update(cem_samples=8, cem_elites=2, cem_iterations=1)  # type: ignore[dict-item]
    base = {"env_id": "Pendulum-v1", "seed": 3, "learning_starts": 50, "batch_size": 16, "n_eval_episodes": 1}
    return cls(**{**base, **small, **values})  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:resuming .* with an empty replay buffer")
@pytest.mark.parametrize("algo", ALGOS)
def test_every_agent_trains_saves_resumes_and_loads(algo: str, tmp_path: Path) -> None:
    run_dir = tmp_path / algo
    config = _config(algo, n_timesteps=200, evaluation_interval=100)
    result = train(agent_class(algo), config, run_dir, progress=False, verbose=0, final_eval_episodes=1)
    assert result.steps == 200 and np.isfinite(result.final_evaluation.mean_return)  # type: ignore[union-attr]
    assert len((run_dir / "eval.csv").read_text().splitlines()) == 1 + 2  # header, evaluations at 100 and 200
    assert (run_dir / "checkpoints" / "latest.pt").exists()
    # Resume with a longer budget: it continues from the checkpoint's step.
    longer = _config(algo, n_timesteps=300, evaluation_interval=100)
    resumed = train(
        agent_class(algo), longer, run_dir, resume=True, progress=False, verbose=0, final_eval_episodes=1
    )
    assert resumed.steps == 300
    trained = qiter.load_agent(run_dir)
    assert trained.algo == algo
    obs = np.zeros(3, np.float32)
    action = trained.predict(obs)
    batch = trained.predict(np.zeros((4, 3), np.float32))
    if algo == "dqn-discretized":
        assert 0 <= int(action) < 5 and batch.shape == (4,)
    else:
        assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0 and batch.shape == (4, 1)
        if algo != "cem":  # CEM's argmax is itself sampled
            np.testing.assert_allclose(batch[0], action, atol=1e-6)  # one observation or a batch: same policy
    assert np.isfinite(trained.evaluate(n_episodes=1).mean_return)


def test_resume_refuses_a_change_of_the_networks(tmp_path: Path) -> None:
    config = _config("td3", n_timesteps=120, evaluation_interval=60)
    train(TD3Agent, config, tmp_path, progress=False, verbose=0, final_eval_episodes=0)
    with pytest.raises(QiterError, match="cannot change hidden_sizes"):
        train(TD3Agent, _config("td3", n_timesteps=200, hidden_sizes="8,8"), tmp_path, resume=True, verbose=0)


def test_exploration_stays_in_bounds_and_random_until_learning_starts() -> None:
    agent = TD3Agent(_config("td3", learning_starts=10, exploration_noise_std=5.0),
                     spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-2, 2, (1,), np.float32))  # fmt: skip
    obs = np.zeros((64, 3), np.float32)
    random_actions = agent.act(obs)
    assert random_actions.std() > 0.5  # uniform over [-2, 2], not the untrained actor's near-constant
    agent.num_timesteps = 10
    noisy = agent.act(obs)
    assert noisy.min() >= -2.0 and noisy.max() <= 2.0 and noisy.dtype == np.float32
    greedy = agent.act(obs, explore=False)
    assert np.ptp(greedy) == 0  # the same observation, no noise: one action


class _UnboundedEnv(gym.Env):
    action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)


@pytest.mark.parametrize("algo", ["td3", "ddpg", "naf", "cem"])
def test_bad_spaces_are_refused_with_one_line_naming_what_fits(algo: str) -> None:
    cls = agent_class(algo)
    with pytest.raises(QiterError, match="For discrete actions use --algo dqn") as info:
        cls.check_spaces(gym.make("CartPole-v1"))
    assert "\n" not in str(info.value)
    with pytest.raises(QiterError, match="bounded Box action space"):
        cls.check_spaces(_UnboundedEnv())


def test_cli_trains_evaluates_and_lists_every_algorithm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for algo in ("dqn", "td3", "ddpg", "naf", "cem", "--discretize"):
        assert algo in help_text
    run_dir = tmp_path / "run"
    args = ["train", "Pendulum-v1", "--algo", "td3", "--steps", "150", "--run-dir", str(run_dir), "--no-progress",
            "--eval-episodes", "1", "--set", "learning_starts=50", "--set", "hidden_sizes=8,8"]  # fmt: skip
    assert main(args) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["policy_delay"] == 2 and saved["gamma"] == 0.98  # the td3/Pendulum-v1 preset, then --set
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    assert "Evaluation of Pendulum-v1 over 1 episodes" in capsys.readouterr().out
    assert main(["presets", "td3/Pendulum-v1"]) == 0
    assert "hidden_sizes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "CartPole-v1", "--algo", "naf"], "NAF needs a continuous (Box) action space"),
        (["train", "Pendulum-v1"], "--algo td3, ddpg, naf or cem, or discretize them"),
        (["train", "Pendulum-v1", "--discretize", "1"], "at least 2 bins"),
        (["train", "Pendulum-v1", "--algo", "td3", "--discretize", "3"], "--discretize is for --algo dqn"),
        (["train", "CartPole-v1", "--discretize", "3"], "needs a Box action space"),
        (["train", "Pendulum-v1", "--algo", "td3", "--set", "hidden_sizes=4,x"], "hidden_sizes"),
    ],
)
def test_cli_bad_input_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*args, "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qiter: error:") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())  # nothing left behind


class _TargetEnv(gym.Env):
    """One-step task: observe s in [-1, 1], reward -(a - s)^2 for an action a in [-2, 2]; the best action
    is a = s, worth 0, where a uniform random action scores about -1.7."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (1,), np.float32)

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.state = np.zeros(1, np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-1, 1, (1,)).astype(np.float32)
        return self.state, {}

    def step(self, action):  # type: ignore[no-untyped-def]
        reward = -float((np.asarray(action)[0] - self.state[0]) ** 2)
        return self.state, reward, True, False, {}


gym.register(id="QiterTestTarget-v0", entry_point=_TargetEnv)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["td3", "ddpg", "naf", "cem"])
def test_every_agent_learns_the_best_action_of_a_one_step_task(algo: str) -> None:
    config = _config(algo, env_id="QiterTestTarget-v0", n_timesteps=800, learning_starts=100, batch_size=32,
                     hidden_sizes="32,32", evaluation_interval=0, n_eval_episodes=50, seed=0)  # fmt: skip
    result = train(agent_class(algo), config, None, progress=False, verbose=0, final_eval_episodes=50)
    assert result.final_evaluation is not None
    assert result.final_evaluation.mean_return > -0.05, result.final_evaluation  # random: about -1.7


def test_results_table_script_smoke(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    jsonl, out = tmp_path / "runs.jsonl", tmp_path / "table.md"
    script = Path(__file__).parents[1] / "scripts" / "continuous_table.py"
    args = [sys.executable, str(script), "--smoke", "--runs", "naf/Pendulum-v1", "dqn-discretized/Pendulum-v1",
            "--jsonl", str(jsonl), "--out", str(out)]  # fmt: skip
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [row["preset"] for row in rows] == ["naf/Pendulum-v1", "dqn-discretized/Pendulum-v1"]
    assert all(row["steps"] == 300 for row in rows)
    assert "| naf/Pendulum-v1 | 300 |" in out.read_text()
