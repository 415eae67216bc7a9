"""Training a population: the checks, the training loop, the results and the best agent's checkpoint.

Agent ``i`` is seeded with ``config.seed + i`` and gets its share of the sweep; the population's step is
:class:`qiter.population.lockstep.Population`'s, and on a CPU with several cores the agents are split
over processes (:mod:`qiter.population.shards`), which changes no agent's run.
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
from qiter.population.arrays import make_ops
from qiter.population.buffer import buffer_bytes
from qiter.population.lockstep import layer_sizes
from qiter.population.shards import Shards, default_workers

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
    layers: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)  # per layer: W (N, in, out), b (N, out)
    backend: str = "numpy"
    workers: int = 1

    @property
    def best_agent(self) -> int:
        """The agent with the best final evaluation (the lowest index among ties)."""
        return int(np.argmax(self.final_returns))

    def agent_layers(self, agent: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Agent ``agent``'s layers ``(W (in, out), b (out,))``."""
        return [(w[agent], b[agent]) for w, b in self.layers]


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


def train(
    config: DQNConfig,
    n_agents: int,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    run_dir: str | Path | None = None,
    final_eval_episodes: int | None = None,
    progress: bool = False,
    threads: int | None = 1,
    workers: int | None = None,
    cuda_graphs: bool = True,
) -> PopulationResult:
    """Train ``n_agents`` DQN agents on ``config.env_id`` for ``config.n_timesteps`` steps each.

    :param config: The base config (agent ``i`` gets ``seed + i`` and its share of ``sweep``).
    :param n_agents: N.
    :param sweep: ``key -> values`` spread over the agents (see :func:`agent_configs`).
    :param run_dir: When given, the results are written there (see :func:`qiter.population.report.write_run`).
    :param final_eval_episodes: Episodes of the final evaluation (default ``config.n_eval_episodes``).
    :param progress: Print a line per evaluation.
    :param threads: BLAS and torch threads of each process on the CPU (``None``: leave them). One by
        default: the processes (``workers``) use the cores, and a population's matrices are too small for
        BLAS threads to pay.
    :param workers: Processes the agents are split over (this one included); default: one per usable core
        on the CPU, with at least 16 agents each, and one on a GPU. The split changes no agent's run.
    :param cuda_graphs: On CUDA, replay each step from captured CUDA graphs (the same run, fewer kernel
        launches: :class:`~qiter.population.lockstep.StepGraphs`); ``False`` launches every kernel.
    :raises QiterError: An environment without an array version, an unsupported option, a bad sweep, a
        population too large for the device: before anything is allocated or written.
    """
    config.validate()
    check_supported(config)
    env_cls = type(make_array_env(config.env_id, 0, make_ops("numpy", "cpu")))
    if env_cls.n_actions is None:
        raise QiterError(
            f"DQN populations need discrete actions; {config.env_id} has a continuous action space"
        )
    if n_agents < 1:
        raise QiterError(f"--agents must be at least 1, got {n_agents}")
    if workers is not None and workers < 1:
        raise QiterError(f"--workers must be at least 1, got {workers}")
    # Memory first: a population far too large is refused before a config per agent is built.
    check_memory(config, n_agents, env_cls)
    configs = agent_configs(config, n_agents, sweep)
    backend = choose_backend(config)
    if th.device(config.device).type != "cpu":
        # One process on a GPU: the device is shared, and the host only launches its kernels.
        workers, threads = 1, None
    elif workers is None:
        workers = default_workers(n_agents)
    limits = None
    torch_threads = th.get_num_threads()
    if threads is not None:
        limits = threadpool_limits(threads, user_api="blas")
        th.set_num_threads(threads)
    try:
        with Shards(configs, backend, workers, threads, cuda_graphs) as shards:
            result = _run(config, configs, shards, backend, final_eval_episodes, progress)
    finally:
        if limits is not None:
            limits.restore_original_limits()
            th.set_num_threads(torch_threads)
    if run_dir is not None:
        from qiter.population.report import write_run

        write_run(result, run_dir, sweep or {})
    return result


def _run(
    config: DQNConfig,
    configs: list[DQNConfig],
    shards: Shards,
    backend: str,
    final_eval_episodes: int | None,
    progress: bool,
) -> PopulationResult:
    """The training loop of :func:`train`, after its checks: segments between log and evaluation points."""
    eval_steps: list[int] = []
    eval_returns: list[np.ndarray] = []
    log_steps: list[int] = []
    train_returns: list[np.ndarray] = []
    interval = config.evaluation_interval
    total = config.n_timesteps
    stops = set(range(LOG_INTERVAL, total, LOG_INTERVAL)) | {total}
    if interval:
        stops |= set(range(interval, total, interval))
    start = time.perf_counter()
    eval_time = 0.0
    done = 0
    for stop in sorted(stops):
        shards.call("run", done, stop)
        done = stop
        if done % LOG_INTERVAL == 0 or done == total:
            log_steps.append(done)
            train_returns.append(shards.concat("take_finished"))
        if interval and done % interval == 0 and done < total:
            t0 = time.perf_counter()
            eval_steps.append(done)
            eval_returns.append(shards.concat("evaluate", config.n_eval_episodes, done))
            eval_time += time.perf_counter() - t0
            if progress:
                print(
                    f"step {done}: evaluation IQM {iqm(eval_returns[-1]):.1f}, mean {np.mean(eval_returns[-1]):.1f}"
                )
    train_time = time.perf_counter() - start - eval_time
    # Counter 0: the final evaluation's episodes differ from every periodic one's (counted by steps > 0).
    final = shards.concat("evaluate", final_eval_episodes or config.n_eval_episodes, 0)
    eval_steps.append(total)
    eval_returns.append(final)
    return PopulationResult(
        configs, final, eval_steps, eval_returns, log_steps, train_returns, train_time + eval_time,
        len(configs) * total / max(train_time, 1e-9), shards.layers(), backend, len(shards.slices),
    )  # fmt: skip


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
        for module, (w, b) in zip(linears, result.agent_layers(agent)):
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
