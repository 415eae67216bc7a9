"""Population training end to end on the CPU: learning, determinism, files, checkpoints, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qiter
from qiter.cli import main
from qiter.core.mlp import Parameters
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.population.array_envs import CartPole
from qiter.population.lockstep import Population
from qiter.population.shards import Shards, WorkerSlice
from qiter.population.train import agent_configs, check_memory, train
from qiter.resolve import resolve_config


def _config(steps: int, *overrides: str) -> DQNConfig:
    return resolve_config(
        "CartPole-v1", overrides=[f"n_timesteps={steps}", "evaluation_interval=1000", *overrides]
    )


@pytest.mark.slow
def test_population_learns_cartpole_and_is_deterministic(tmp_path: Path) -> None:
    """Eight agents with the seed's settings learn in 6k steps (random play scores ~20); the folder holds per-agent curves, the table and the plot; the best agent is a checkpoint
    that qiter.load_agent evaluates to its population score."""
    config = _config(6000)
    result = train(config, 8, run_dir=tmp_path / "run")
    assert result.backend == "numpy"
    assert np.mean(result.final_returns) > 100
    assert result.eval_steps == [1000, 2000, 3000, 4000, 5000, 6000]
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "agents", "agents.csv", "checkpoints", "config.yaml", "curves.png", "eval.csv", "eval.json",
        "summary.md", "tb", "train.csv",
    ]  # fmt: skip
    assert len(list((run / "agents").glob("agent_*.csv"))) == 8
    rows = (run / "agents" / "agent_0003.csv").read_text().splitlines()
    assert rows[0] == "step,train_return,eval_return,loss,mean_q,wall_time" and len(rows) == 7
    from qiter.population.train import save_agent

    best = result.best_agent
    save_agent(result, best, tmp_path / "best.pt")
    trained = qiter.load_agent(tmp_path / "best.pt")
    evaluation = trained.evaluate(None, 5, seed=0)
    # Another set of episodes than the population's evaluation: close, not equal.
    assert evaluation.mean_return > 0.5 * result.final_returns[best]


def test_dueling_layer_norm_gelu_agents_save_as_their_networks(tmp_path: Path) -> None:
    """Options the DQN core brings to populations (dueling head, layer norm, GELU, Huber) train, and an
    agent saved with save_agent is a checkpoint whose network computes the population's Q-values."""
    import torch as th

    from qiter.core.arrays import NumpyOps
    from qiter.core.dqn import AgentSettings, BatchedDQN
    from qiter.population.lockstep import network_spec
    from qiter.population.train import save_agent

    overrides = ["learning_starts=200", "dueling=true", "layer_norm=true", "activation=gelu", "loss=huber"]
    result = train(_config(800, *overrides), 2)
    assert np.all(np.isfinite(result.final_returns))
    save_agent(result, 1, tmp_path / "agent.pt")
    q_net = qiter.load_agent(tmp_path / "agent.pt").agent.q_net  # type: ignore[attr-defined]
    one = BatchedDQN(
        NumpyOps(), 1, network_spec(result.configs[1], CartPole), AgentSettings.make(1, 1e-3, 0.99)
    )
    tensors = [t for layer in result.agent_layers(1) for t in layer]
    for view, tensor in zip(one.online.tensors, tensors, strict=True):
        view[0] = tensor.reshape(view.shape[1:])
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with th.no_grad():
        expected = q_net(th.from_numpy(obs)).numpy()
    np.testing.assert_allclose(one.q_values(obs[None])[0], expected, rtol=1e-5, atol=1e-5)


def test_same_seed_same_run() -> None:
    config = _config(1200, "learning_starts=300")
    np.testing.assert_array_equal(train(config, 3).final_returns, train(config, 3).final_returns)


def test_an_agent_runs_the_same_alone_or_among_others() -> None:
    """Per-agent random streams: agent seed 5 alone, and agent 2 of a population seeded 3 whose neighbours
    differ in seed and target interval (masked target copies), end with the same weights and scores."""
    alone = train(_config(1500, "learning_starts=200", "seed=5"), 1)
    among = train(
        _config(1500, "learning_starts=200", "seed=3"), 4, {"target_network_update_interval": ["10", "20"]}
    )
    assert [c.target_network_update_interval for c in among.configs] == [10, 20, 10, 20]
    for (w, b), (w2, b2) in zip(alone.agent_layers(0), among.agent_layers(2)):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    assert [e[0] for e in alone.eval_returns] == [e[2] for e in among.eval_returns]
    assert len(set(among.final_returns)) > 1  # the others are other runs


@pytest.mark.parametrize("extra", [(), ("n_envs=3", "n_steps=3")])
def test_processes_split_the_population_without_changing_a_run(extra: tuple[str, ...]) -> None:
    config = _config(1500, "learning_starts=200", *extra)
    one, two = train(config, 4, workers=1), train(config, 4, workers=2)
    assert (one.workers, two.workers) == (1, 2)
    np.testing.assert_array_equal(np.stack(one.eval_returns), np.stack(two.eval_returns))
    np.testing.assert_array_equal(np.stack(one.train_returns), np.stack(two.train_returns))
    for (w, b), (w2, b2) in zip(one.layers, two.layers):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)


def test_a_dead_worker_is_one_line() -> None:
    with Shards(agent_configs(_config(1000), 4), "numpy", workers=2, threads=1) as shards:
        worker = shards.slices[0]
        assert isinstance(worker, WorkerSlice)
        worker.process.kill()
        with pytest.raises(QiterError, match="worker process died"):
            shards.call("run", 0, 10)


def test_numpy_and_torch_draw_the_same_numbers() -> None:
    """The streams are computed, not generated: both backends fill the replay buffers alike."""
    configs = agent_configs(_config(1000, "learning_starts=1000"), 3)
    pops = [Population(configs, backend) for backend in ("numpy", "torch")]
    for step in range(300):
        for pop in pops:
            pop.step(step)
    np.testing.assert_array_equal(pops[0].buffer.table, pops[1].ops.to_numpy(pops[1].buffer.table))


def test_torch_backend_runs_the_same_schedule_on_the_cpu() -> None:
    """The CUDA path's code (torch tensors) on the CPU."""
    result = train(_config(1500, "backend=torch", "learning_starts=200"), 3)
    assert result.backend == "torch"
    assert result.final_returns.shape == (3,) and np.all(np.isfinite(result.final_returns))


def test_sweep_spreads_combinations_over_agents() -> None:
    configs = agent_configs(
        _config(100), 8, {"learning_rate": ["1e-3", "3e-4"], "double_dqn": ["true", "false"]}
    )
    assert [(c.learning_rate, c.double_dqn) for c in configs[:4]] == [
        (1e-3, True), (1e-3, False), (3e-4, True), (3e-4, False),
    ]  # fmt: skip
    assert [c.seed for c in configs] == [2022 + i for i in range(8)]
    result = train(_config(1200, "learning_starts=500"), 4, {"double_dqn": ["true", "false"]})
    assert result.final_returns.shape == (4,)


@pytest.mark.parametrize(
    ("n", "sweep", "message"),
    [
        (0, {}, "--agents must be at least 1"),
        (4, {"learning_rat": ["1", "2"]}, "unknown config key 'learning_rat'"),
        (4, {"batch_size": ["32", "64"]}, "cannot differ between the agents"),
        (4, {"gamma": ["0.9"]}, "at least 2 comma-separated values"),
        (3, {"gamma": ["0.9", "0.99"]}, "not a multiple of the sweep's 2 combinations"),
        (4, {"gamma": ["0.9", "lots"]}, "gamma"),
        (4, {"gamma": ["0.9", "2"]}, "gamma"),
    ],
)
def test_bad_population_input(n: int, sweep: dict[str, list[str]], message: str) -> None:
    with pytest.raises(QiterError, match=message):
        agent_configs(_config(100), n, sweep)


@pytest.mark.parametrize(
    ("env_id", "overrides", "message"),
    [
        # Only the array envs a DQN population can use (Pendulum's actions are continuous).
        ("FlappyBird-v0", [], "supported: CartPole-v1, Acrobot-v1, MountainCar-v0$"),
        ("Pendulum-v1", [], "discrete actions"),
        (
            "CartPole-v1",
            ["prioritized_replay=true"],
            r"do not support prioritized_replay=True yet .*: a sum tree per agent",
        ),
        (
            "CartPole-v1",
            ["clip_rewards=true"],
            r"do not support clip_rewards=True yet .*: the array environments",
        ),
    ],
)
def test_unsupported_setups_are_refused(env_id: str, overrides: list[str], message: str) -> None:
    config = resolve_config("CartPole-v1", overrides=[f"env_id={env_id}", *overrides])
    with pytest.raises(QiterError, match=message):
        train(config, 2)


def test_memory_estimate_says_how_many_fit() -> None:
    with pytest.raises(QiterError, match=r"at most \d+ agents fit"):
        check_memory(_config(80_000), 4096, CartPole, available=2**30)
    check_memory(_config(1000), 4, CartPole, available=2**30)


@pytest.mark.parametrize(
    "args",
    [
        ["FlappyBird-v0", "--agents", "2"],
        ["CartPole-v1", "--agents", "0"],
        ["CartPole-v1", "--agents", "2", "--sweep", "nope=1,2"],
        ["CartPole-v1", "--agents", "2", "--sweep", "gamma"],
        ["CartPole-v1", "--agents", "2", "--device", "cuda:99"],
        ["CartPole-v1", "--agents", "2", "--workers", "0"],
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["population", *args, "--steps", "100", "--run-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qiter: error:") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_trains_and_saves_the_best(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pop"
    args = ["population", "CartPole-v1", "--agents", "4", "--steps", "1500", "--sweep", "gamma=0.9,0.99"]
    assert main([*args, "--run-dir", str(out), "--save-best", "--quiet", "--set", "learning_starts=200"]) == 0
    printed = capsys.readouterr().out
    assert "gamma=0.9" in printed and "best.pt" in printed
    assert (out / "best.pt").exists() and "gamma" in (out / "agents.csv").read_text().splitlines()[0]
    assert main(["eval", str(out / "best.pt"), "--episodes", "2"]) == 0


def _population(steps: int, n: int, sweep: dict[str, list[str]] | None, *overrides: str) -> Population:
    return Population(agent_configs(_config(steps, *overrides), n, sweep), "numpy")


def test_learning_rate_decay_follows_the_single_agents_schedule() -> None:
    """Each agent's rate at each update is DQNAgent's ``_learning_rate_at`` for its config; before the decay
    starts the run is the constant-rate run, after it another."""
    from qiter.dqn.agent import DQNAgent

    overrides = (
        "learning_starts=100",
        "update_interval=1",
        "learning_rate_final=0.0001",
        "learning_rate_decay_start=0.5",
    )
    sweep = {"learning_rate": ["0.001", "0.0005"]}
    decayed, constant = _population(600, 2, sweep, *overrides), _population(600, 2, sweep, *overrides[:2])
    for step in range(450):
        decayed.step(step)
        constant.step(step)
        if step == 299:
            np.testing.assert_array_equal(decayed.learner.params, constant.learner.params)
    for i, cfg in enumerate(decayed.configs):
        expected = DQNAgent.build(cfg)._learning_rate_at(450)
        learner = decayed.learner
        rates = Parameters(learner.lr, learner.spec, learner.n).weights[0][i]
        np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert not np.array_equal(decayed.learner.params, constant.learner.params)


def test_exponential_epsilon_follows_each_agents_episodes() -> None:
    from qiter.dqn.agent import DQNAgent

    pop = _population(
        400,
        3,
        None,
        "exploration_schedule=exponential",
        "exploration_decay_episodes=4",
        "exploration_final_eps=0.05",
    )
    agent = DQNAgent.build(pop.configs[0])
    pop.run(0, 300)
    episodes = pop.episodes.copy()
    assert episodes.min() >= 5 and len(set(episodes)) > 1
    for i, count in enumerate(episodes):
        agent.episodes = int(count)
        np.testing.assert_allclose(pop.epsilon(300)[i], agent._exponential_epsilon(), rtol=1e-6)


def test_targets_counted_in_episodes_copy_each_agent_at_its_own_multiples() -> None:
    """Per-agent masks: agent i's target becomes its online network exactly when its episode count reaches
    a multiple of its interval; the other agents' targets stay."""
    pop = _population(
        800,
        2,
        {"target_network_update_interval": ["1", "3"]},
        "target_update_unit=episodes",
        "learning_starts=50",
        "update_interval=1",
    )
    learner, copies = pop.learner, 0
    for step in range(800):
        before = [t.copy() for t in learner.target.weights]
        episodes = pop.episodes.copy()
        pop.transition(step)
        pop.episode_target_update()
        ended = pop.episodes - episodes
        for i, interval in enumerate(pop.intervals):
            due = ended[i] and pop.episodes[i] % interval == 0
            for w, t, b in zip(learner.online.weights, learner.target.weights, before):
                np.testing.assert_array_equal(t[i], w[i] if due else b[i])
            copies += int(due)
        pop.update(step + 1)
    assert copies > 10


def test_copies_follow_the_single_agents_schedule() -> None:
    """With ``n_envs`` copies per agent, steps count environment steps, ``n_envs`` at a time, as DQNAgent
    counts them: epsilon at ``step + n_envs``, one gradient step per multiple of ``update_interval`` passed
    after ``learning_starts``, one target copy per multiple of the target interval passed; and each copy
    plays episodes of its own."""
    from qiter.dqn.agent import linear_schedule

    pop = _population(
        600, 2, None, "n_envs=3", "learning_starts=10", "update_interval=4", "gradient_steps=2",
        "target_network_update_interval=50", "exploration_fraction=0.5",
    )  # fmt: skip
    cfg, targets = pop.config, 0
    for step in range(0, 300, 3):
        before = pop.learner.target.weights[0].copy()
        pop.step(step)
        targets += int(not np.array_equal(before, pop.learner.target.weights[0]))
    # Steps 3, 6, ..., 300: updates at each step above 10 for the multiples of 4 in (step - 3, step].
    first = 12  # the first step above learning_starts
    expected_updates = cfg.gradient_steps * sum(1 for m in range(first - 2, 301) if m % 4 == 0)
    assert int(pop.learner.step_count) == expected_updates
    assert targets == 300 // 50  # the multiples of 50 passed (once the online network has moved)
    eps = linear_schedule(cfg.exploration_initial_eps, cfg.exploration_final_eps, 303, 300)
    np.testing.assert_allclose(pop.epsilon(300), eps, rtol=1e-6)
    # Agent-major copies, each with its own episodes.
    assert pop.observations.shape == (6, 4) and len({tuple(o) for o in pop.observations}) == 6
    assert int(pop.buffer.size) == 300 and int(pop.buffer.pos) == 300 % pop.buffer.capacity


def test_targets_counted_in_episodes_with_copies_copy_once_per_multiple_passed() -> None:
    """Several copies can end episodes in one step: the Polyak target moves once per multiple of the
    interval passed, as DQNAgent's per-episode copies do."""
    pop = _population(
        400, 1, None, "n_envs=4", "target_update_unit=episodes", "target_network_update_interval=1",
        "tau=0.5", "learning_starts=50",
    )  # fmt: skip
    moved = False
    for step in range(0, 400, 4):
        before_target = [t.copy() for t in pop.learner.target.weights]
        online = [w.copy() for w in pop.learner.online.weights]
        episodes = pop.episodes.copy()
        pop.transition(step)
        pop.episode_target_update()
        ended = int(pop.episodes[0] - episodes[0])
        for t, b, w in zip(pop.learner.target.weights, before_target, online):
            expected = b[0]
            for _ in range(ended):  # one Polyak step per episode ended (interval 1)
                expected = 0.5 * expected + 0.5 * w[0]
            np.testing.assert_allclose(t[0], expected, rtol=1e-6, atol=1e-7)
        moved |= ended > 1
        pop.update(step + 4)
    assert moved  # some step ended episodes in two copies at once
