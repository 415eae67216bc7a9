"""Training a population: N independent DQN agents stepped in lockstep by batched array operations.

Each agent has its own weights, Adam state, replay buffer, environment copy, exploration schedule and
hyperparameters; what they share is the arrays that hold them, so one step of the population is a fixed
number of array calls whatever N is (no Python loop over agents). The schedule is the single agent's
(:class:`qiter.dqn.agent.DQNAgent` under :func:`qiter.run_loop.train`), step for step:

1. epsilon from the linear schedule at ``step + 1``, epsilon-greedy actions;
2. one environment step of every copy (finished copies reset in the same step);
3. store ``(s, a, r, s', terminated)``;
4. at ``step``: the target copy every ``target_network_update_interval`` steps, then, after
   ``learning_starts`` and every ``update_interval`` steps, ``gradient_steps`` updates on minibatches.

Agent ``i`` is seeded with ``config.seed + i`` in what is written out; the random numbers themselves come
from one stream per population (see :mod:`qiter.population.arrays`).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from threadpoolctl import threadpool_limits

from qiter.config import config_to_dict, convert_value, field_types, suggest
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.population.array_envs import ArrayEnv, make_array_env
from qiter.population.arrays import Array, Ops, make_ops
from qiter.population.buffer import PopulationBuffer, buffer_bytes
from qiter.population.learner import AgentSettings, PopulationLearner

#: Config keys that may differ from agent to agent (``--sweep``); the rest fix shapes or the schedule.
SWEEPABLE = (
    "seed",
    "learning_rate",
    "gamma",
    "double_dqn",
    "exploration_initial_eps",
    "exploration_final_eps",
    "exploration_fraction",
    "target_network_update_interval",
)
#: Options of DQNConfig that the population does not implement, with the value it needs.
UNSUPPORTED: dict[str, Any] = {
    "n_steps": 1,
    "prioritized_replay": False,
    "dueling": False,
    "layer_norm": False,
    "learning_rate_final": None,
    "exploration_schedule": "linear",
    "target_update_unit": "steps",
    "n_envs": 1,
}
LOG_INTERVAL = 1000
EVAL_SEED_OFFSET = 10_000


@dataclass
class PopulationResult:
    """What :func:`train` returns."""

    configs: list[DQNConfig]  # one per agent (its seed and swept values)
    final_returns: np.ndarray  # (N,) mean return of the final greedy evaluation
    eval_steps: list[int]
    eval_returns: list[np.ndarray]  # one (N,) array per periodic evaluation
    log_steps: list[int]
    train_returns: list[np.ndarray]  # one (N,) array per log interval: mean return of the episodes ended
    wall_time: float
    agent_steps_per_second: float
    learner: PopulationLearner = field(repr=False)
    backend: str = "numpy"

    @property
    def best_agent(self) -> int:
        """The agent with the best final evaluation (the lowest index among ties)."""
        return int(np.argmax(self.final_returns))


# ---------------------------------------------------------------------------------------------------------
# Checks (all before anything is allocated or written)
# ---------------------------------------------------------------------------------------------------------


def agent_configs(
    config: DQNConfig, n_agents: int, sweep: Mapping[str, Sequence[Any]] | None = None
) -> list[DQNConfig]:
    """One config per agent: ``seed + i``, and the sweep's combinations assigned round-robin.

    :param config: The base config.
    :param n_agents: N (a multiple of the number of combinations of ``sweep``).
    :param sweep: ``key -> values``; the grid of all combinations is spread over the agents.
    :raises QiterError: N below 1, an unknown or unsweepable key, too few values, N not a multiple.
    """
    if n_agents < 1:
        raise QiterError(f"--agents must be at least 1, got {n_agents}")
    sweep = dict(sweep or {})
    keys = field_types(DQNConfig)
    for key, values in sweep.items():
        if key not in keys:
            raise QiterError(f"--sweep: unknown config key {key!r}{suggest(key, keys)}")
        if key not in SWEEPABLE:
            raise QiterError(
                f"--sweep: {key!r} cannot differ between the agents of one population; sweepable: {', '.join(SWEEPABLE)}"
            )
        if len(values) < 2:
            raise QiterError(f"--sweep {key}: give at least 2 comma-separated values, got {len(values)}")
    typed = {key: [convert_value(DQNConfig, key, v) for v in values] for key, values in sweep.items()}
    grid = list(itertools.product(*typed.values())) if typed else [()]
    if n_agents % len(grid):
        below = len(grid) * (n_agents // len(grid))
        choices = f"--agents {below} or {below + len(grid)}" if below else f"--agents {len(grid)}"
        raise QiterError(
            f"--agents {n_agents} is not a multiple of the sweep's {len(grid)} combinations: use {choices}"
        )
    configs = []
    for i in range(n_agents):
        chosen: dict[str, Any] = dict(zip(typed, grid[i % len(grid)]))
        chosen.setdefault("seed", config.seed + i)
        agent = replace(config, **chosen)
        agent.validate()
        configs.append(agent)
    return configs


def check_supported(config: DQNConfig) -> None:
    """Refuse, in one line, the DQN options the population does not implement."""
    for key, needed in UNSUPPORTED.items():
        if getattr(config, key) != needed:
            raise QiterError(
                f"populations do not support {key}={getattr(config, key)!r} yet (needs {needed!r})"
            )
    if config.activation not in ("relu", "tanh"):
        raise QiterError(f"populations support activation relu or tanh, got {config.activation!r}")


def choose_backend(config: DQNConfig) -> str:
    """numpy on the CPU (measured faster there, see ``docs/population.md``), torch on any other device."""
    device = th.device(config.device)
    if config.backend == "numpy" and device.type != "cpu":
        raise QiterError("backend 'numpy' runs on the CPU only; use backend 'auto' or 'torch' with a GPU")
    if config.backend == "torch" or device.type != "cpu":
        return "torch"
    return "numpy"


def layer_sizes(config: DQNConfig, env_cls: type[ArrayEnv]) -> list[int]:
    """``[obs_dim, hidden..., n_actions]`` of the config's network."""
    assert env_cls.n_actions is not None
    return [env_cls.obs_dim] + [config.n_hidden_units] * config.n_hidden_layers + [env_cls.n_actions]


def estimate_bytes(config: DQNConfig, n_agents: int, env_cls: type[ArrayEnv]) -> int:
    """Memory a population needs: replay buffers, then parameters, target, gradient, Adam moments and the
    learning-rate vector, then the minibatch activations (a generous bound)."""
    sizes = layer_sizes(config, env_cls)
    n_params = sum(i * o + o for i, o in itertools.pairwise(sizes))
    capacity = min(config.replay_buffer_size, config.n_timesteps)
    activations = 12 * config.batch_size * max(sizes) * 4
    return buffer_bytes(n_agents, capacity, env_cls.obs_dim) + n_agents * (8 * n_params * 4 + activations)


def available_bytes(device: str) -> int:
    """Free memory on ``device`` (CUDA: free device memory; CPU: available physical memory)."""
    if th.device(device).type == "cuda":
        return int(th.cuda.mem_get_info(th.device(device))[0])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_memory(
    config: DQNConfig, n_agents: int, env_cls: type[ArrayEnv], available: int | None = None
) -> None:
    """Refuse a population that would not fit in 90% of the device's free memory, saying how many fit."""
    need = estimate_bytes(config, n_agents, env_cls)
    free = available_bytes(config.device) if available is None else available
    if need > 0.9 * free:
        per_agent = estimate_bytes(config, 1, env_cls)
        fit = int(0.9 * free // per_agent)
        raise QiterError(
            f"a population of {n_agents} agents needs about {need / 2**30:.1f} GiB on {config.device}, "
            f"which has {free / 2**30:.1f} GiB free: at most {fit} agents fit (or lower replay_buffer_size)"
        )


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


class Population:
    """The arrays of a population and its step (see the module docstring for the schedule).

    :param configs: One config per agent (the same in everything but :data:`SWEEPABLE`).
    :param backend: ``"numpy"`` or ``"torch"``.
    """

    def __init__(self, configs: list[DQNConfig], backend: str) -> None:
        base = configs[0]
        self.config = base
        self.n = n = len(configs)
        self.ops: Ops = make_ops(backend, base.device, base.seed)
        self.env = make_array_env(base.env_id, n, self.ops)
        settings = AgentSettings(
            learning_rate=np.array([c.learning_rate for c in configs]),
            gamma=np.array([c.gamma for c in configs]),
            double_dqn=np.array([c.double_dqn for c in configs]),
        )
        self.learner = PopulationLearner(
            self.ops, n, layer_sizes(base, type(self.env)), settings, base.activation, base.loss,
            base.max_grad_norm, base.adam_eps,
        )  # fmt: skip
        self.learner.initialize()
        capacity = min(base.replay_buffer_size, base.n_timesteps)
        self.buffer = PopulationBuffer(self.ops, n, capacity, self.env.obs_dim)
        ops = self.ops
        eps0 = np.array([c.exploration_initial_eps for c in configs])
        self.eps0 = ops.asarray(eps0, "float32")
        self.eps_delta = ops.asarray(np.array([c.exploration_final_eps for c in configs]) - eps0, "float32")
        anneal = np.array([int(c.exploration_fraction * c.n_timesteps) for c in configs], dtype=np.float64)
        # A zero-length schedule is already done (as linear_schedule): any step divided by ~0 clips to 1.
        self.anneal = ops.asarray(np.maximum(anneal, 1e-9), "float32")
        self.intervals = np.array([c.target_network_update_interval for c in configs])
        self.same_interval = bool(np.all(self.intervals == self.intervals[0]))
        self.intervals_dev = ops.asarray(self.intervals, "int64")
        self.n_actions = int(self.env.n_actions or 0)
        self.observations = self.env.reset()
        self.episode_returns = ops.zeros((n,), "float64")
        self.finished_sum = ops.zeros((n,), "float64")
        self.finished_count = ops.zeros((n,), "int64")

    def act(self, step: int) -> Array:
        """Epsilon-greedy actions at ``step`` (the number of steps done so far)."""
        ops = self.ops
        eps = self.eps0 + ops.clip((step + 1) / self.anneal, 0.0, 1.0) * self.eps_delta
        greedy = self.learner.greedy(self.observations[:, None, :])[:, 0]
        random_actions = ops.astype(ops.random((self.n,), "float32") * self.n_actions, "int64")
        explore = ops.random((self.n,), "float32") < eps
        return ops.where(explore, ops.clip(random_actions, 0, self.n_actions - 1), greedy)

    def step(self, step: int) -> None:
        """One environment step of every agent, then what the schedule asks for at ``step + 1``."""
        ops = self.ops
        actions = self.act(step)
        out = self.env.step(actions)
        self.buffer.add(self.observations, actions, out.rewards, out.final_observations, out.terminateds)
        self.observations = out.observations
        self.episode_returns = self.episode_returns + out.rewards
        done = out.terminateds | out.truncateds
        self.finished_sum = self.finished_sum + ops.where(done, self.episode_returns, 0.0)
        self.finished_count = self.finished_count + done
        self.episode_returns = ops.where(done, 0.0, self.episode_returns)
        self.update(step + 1)

    def update(self, step: int) -> None:
        """Target copies and gradient steps due at ``step`` (decided on the host: no device sync)."""
        cfg = self.config
        due = step % self.intervals == 0
        if self.same_interval:
            if due[0]:
                self.learner.update_target(tau=cfg.tau)
        elif due.any():
            self.learner.update_target(self.ops.asarray(due, "bool"), tau=cfg.tau)
        if step <= cfg.learning_starts or step % cfg.update_interval:
            return
        for _ in range(cfg.gradient_steps):
            self.learner.update(*self.buffer.sample(cfg.batch_size))

    def take_finished(self) -> np.ndarray:
        """Mean return of the episodes each agent finished since the last call (NaN where none)."""
        ops = self.ops
        total, count = ops.to_numpy(self.finished_sum), ops.to_numpy(self.finished_count)
        self.finished_sum = self.finished_sum * 0
        self.finished_count = self.finished_count * 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def evaluate(self, n_episodes: int, seed: int) -> np.ndarray:
        """Mean greedy return of each agent over ``n_episodes`` fresh episodes (all agents at once)."""
        ops = make_ops(self.ops.name, self.ops.device, seed)
        env = make_array_env(self.config.env_id, self.n * n_episodes, ops)
        obs = env.reset()
        returns = ops.zeros((self.n * n_episodes,), "float64")
        running = ops.full((self.n * n_episodes,), 1.0, "float64")
        for t in range(env.max_episode_steps):
            actions = self.learner.greedy(obs.reshape(self.n, n_episodes, -1)).reshape(-1)
            out = env.step(actions)
            returns = returns + running * out.rewards
            running = running * ~(out.terminateds | out.truncateds)
            obs = out.observations
            # Every episode ends by the time limit; checking earlier saves steps (one sync per 50).
            if t % 50 == 49 and not bool(ops.to_numpy(running).any()):
                break
        return ops.to_numpy(returns).reshape(self.n, n_episodes).mean(axis=1)


def train(
    config: DQNConfig,
    n_agents: int,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    run_dir: str | Path | None = None,
    final_eval_episodes: int | None = None,
    progress: bool = False,
    threads: int | None = 1,
) -> PopulationResult:
    """Train ``n_agents`` DQN agents on ``config.env_id`` for ``config.n_timesteps`` steps each.

    :param config: The base config (agent ``i`` gets ``seed + i`` and its share of ``sweep``).
    :param n_agents: N.
    :param sweep: ``key -> values`` spread over the agents (see :func:`agent_configs`).
    :param run_dir: When given, the results are written there (see :func:`qiter.population.report.write_run`).
    :param final_eval_episodes: Episodes of the final evaluation (default ``config.n_eval_episodes``).
    :param progress: Print a line per evaluation.
    :param threads: BLAS and torch threads on the CPU during the run (``None``: leave them). One by default:
        on a shared machine, worker threads that wait for a busy core cost more than they bring.
    :raises QiterError: An environment without an array version, an unsupported option, a bad sweep, a
        population too large for the device: before anything is allocated or written.
    """
    config.validate()
    check_supported(config)
    env_cls = type(make_array_env(config.env_id, 0, make_ops("numpy", "cpu", 0)))
    if env_cls.n_actions is None:
        raise QiterError(
            f"DQN populations need discrete actions; {config.env_id} has a continuous action space"
        )
    if n_agents < 1:
        raise QiterError(f"--agents must be at least 1, got {n_agents}")
    # Memory first: a population far too large is refused before a config per agent is built.
    check_memory(config, n_agents, env_cls)
    configs = agent_configs(config, n_agents, sweep)
    backend = choose_backend(config)
    limits = None
    torch_threads = th.get_num_threads()
    if threads is not None and th.device(config.device).type == "cpu":
        limits = threadpool_limits(threads, user_api="blas")
        th.set_num_threads(threads)
    try:
        result = _run(config, configs, backend, final_eval_episodes, progress)
    finally:
        if limits is not None:
            limits.restore_original_limits()
            th.set_num_threads(torch_threads)
    if run_dir is not None:
        from qiter.population.report import write_run

        write_run(result, run_dir, sweep or {})
    return result


def _run(
    config: DQNConfig, configs: list[DQNConfig], backend: str, final_eval_episodes: int | None, progress: bool
) -> PopulationResult:
    """The training loop of :func:`train`, after its checks."""
    n_agents = len(configs)
    population = Population(configs, backend)
    eval_steps: list[int] = []
    eval_returns: list[np.ndarray] = []
    log_steps: list[int] = []
    train_returns: list[np.ndarray] = []
    interval = config.evaluation_interval
    start = time.perf_counter()
    eval_time = 0.0
    for step in range(config.n_timesteps):
        population.step(step)
        done = step + 1
        if done % LOG_INTERVAL == 0 or done == config.n_timesteps:
            log_steps.append(done)
            train_returns.append(population.take_finished())
        if interval and done % interval == 0 and done < config.n_timesteps:
            t0 = time.perf_counter()
            eval_steps.append(done)
            eval_returns.append(
                population.evaluate(config.n_eval_episodes, config.seed + EVAL_SEED_OFFSET + done)
            )
            eval_time += time.perf_counter() - t0
            if progress:
                print(
                    f"step {done}: evaluation IQM {iqm(eval_returns[-1]):.1f}, mean {np.mean(eval_returns[-1]):.1f}"
                )
    train_time = time.perf_counter() - start - eval_time
    final = population.evaluate(
        final_eval_episodes or config.n_eval_episodes, config.seed + 2 * EVAL_SEED_OFFSET
    )
    eval_steps.append(config.n_timesteps)
    eval_returns.append(final)
    result = PopulationResult(
        configs, final, eval_steps, eval_returns, log_steps, train_returns, train_time + eval_time,
        n_agents * config.n_timesteps / max(train_time, 1e-9), population.learner, backend,
    )  # fmt: skip
    return result


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (Agarwal et al., 2021), NaNs ignored."""
    x = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if len(x) == 0:
        return math.nan
    cut = math.floor(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean()) if len(x) - 2 * cut > 0 else float(x.mean())


def save_agent(result: PopulationResult, agent: int, path: str | Path) -> None:
    """Write agent ``agent`` as an ordinary DQN checkpoint (``qiter eval``, ``qiter.load_agent`` read it)."""
    from qiter.dqn.agent import build_q_network
    from qiter.envs import make_env
    from qiter.runs import save_checkpoint

    cfg = result.configs[agent]
    env = make_env(cfg.env_id, flatten=True)
    try:
        assert isinstance(env.observation_space, spaces.Box) and isinstance(env.action_space, spaces.Discrete)
        q_net = build_q_network(cfg, env.observation_space, env.action_space)
    finally:
        env.close()
    linears = [m for m in q_net.q_net if isinstance(m, th.nn.Linear)]
    with th.no_grad():
        for module, (w, b) in zip(linears, result.learner.agent_layers(agent)):
            module.weight.copy_(th.from_numpy(w.T.copy()))  # torch stores (out, in)
            module.bias.copy_(th.from_numpy(b))
    save_checkpoint(
        path,
        {
            "format": "qiter-dqn-v2",
            "algo": "dqn",
            "config": config_to_dict(replace(cfg, device="cpu")),
            "step": cfg.n_timesteps,
            "episodes": 0,
            "eval_history": [],
            "torch_rng": th.get_rng_state(),
            "agent": {"q_net": q_net.state_dict()},
        },
    )
