"""Training a population: the checks, the run on the shared lifecycle, resume, the best agent's checkpoint.

Agent ``i`` is seeded with ``config.seed + i`` and gets its share of the sweep; the population's step is
:class:`qiter.population.lockstep.Population`'s, and on a CPU with several cores the agents are split
over processes (:mod:`qiter.population.shards`), which changes no agent's run.

The run is a run of :class:`qiter.lifecycle.RunLifecycle`, as ``qiter train``'s: the folder is claimed
with ``runs.claim_run_dir``, ``config.yaml`` and the logs (per agent in ``agents/``, aggregates in
``train.csv``, ``eval.csv`` and TensorBoard) are written as the run goes, the losses and Q-values are
checked, ``checkpoints/latest.pt`` is written atomically every ``checkpoint_interval`` steps and on
SIGINT/SIGTERM, and the final evaluation goes to ``eval.json``. A checkpoint holds every array and
counter the run's future depends on (:meth:`~qiter.population.lockstep.Population.state_dict`), so a
resumed population ends exactly as the same run left alone.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from threadpoolctl import threadpool_limits

from qiter import runs
from qiter.config import (
    config_from_dict,
    config_to_dict,
    convert_value,
    convert_values,
    field_types,
    parse_overrides,
    read_config_file,
    suggest,
)
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError, QiterWarning
from qiter.lifecycle import DivergenceError, Every, QValueWatch, RunEvents, RunLifecycle
from qiter.population.array_envs import ARRAY_ENVS, ArrayEnv
from qiter.population.buffer import buffer_bytes, buffer_capacity
from qiter.population.lockstep import layer_sizes
from qiter.population.report import write_reports
from qiter.population.result import PopulationResult, iqm
from qiter.population.shards import Shards, default_workers

__all__ = [
    "POPULATION_FORMAT",
    "PopulationResult",
    "agent_configs",
    "check_population",
    "iqm",
    "resume_settings",
    "save_agent",
    "train",
]

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
#: Options of DQNConfig that the population does not implement: the value it needs, and why not.
UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "prioritized_replay": (
        False,
        "a sum tree per agent would be a Python loop over agents at every sample and priority update",
    ),
    "clip_rewards": (False, "the array environments are classic control, whose rewards are stored as given"),
}
LOG_INTERVAL = 1000
#: The most steps between two looks at a signal (a segment of the run ends there or earlier).
SEGMENT = 250
#: The layout of a population's checkpoint (another is refused, naming both).
POPULATION_FORMAT = "qiter-population-v2"
#: What a resume may not change: which agents there are (their number, seeds and sweep) and the shapes of
#: the saved arrays (the buffers' capacity, min(replay_buffer_size, n_timesteps), is checked apart).
FIXED_KEYS = (
    "env_id", "n_agents", "n_envs", "seed", "sweep", "n_hidden_layers", "n_hidden_units", "dueling", "layer_norm",
    "activation",
)  # fmt: skip


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
    for key, (needed, why) in UNSUPPORTED.items():
        if getattr(config, key) != needed:
            raise QiterError(
                f"populations do not support {key}={getattr(config, key)!r} yet (needs {needed!r}): {why}"
            )
    if config.network not in ("auto", "mlp"):
        raise QiterError(
            f"populations train MLPs, got network={config.network!r}: their array environments are vectors"
        )


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
    capacity = buffer_capacity(config.replay_buffer_size, config.n_timesteps, config.n_envs)
    activations = 12 * config.batch_size * max(sizes) * 4
    return buffer_bytes(n_agents, capacity, env_cls.obs_dim) + n_agents * (
        8 * n_params * 4 + activations * config.n_steps
    )


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


@dataclass
class Setup:
    """A population's checked setup (:func:`check_population`)."""

    configs: list[DQNConfig]
    env_cls: type[ArrayEnv]
    backend: str
    workers: int
    threads: int | None


def check_population(
    config: DQNConfig,
    n_agents: int,
    sweep: Mapping[str, Sequence[Any]] | None = None,
    workers: int | None = None,
    threads: int | None = 1,
) -> Setup:
    """Every check of a population before anything is allocated or written: options, environment, number
    of agents and workers, memory, the sweep, the device.

    :raises QiterError: An environment without an array version, an unsupported option, a bad sweep, a
        population too large for the device.
    """
    config.validate()
    check_supported(config)
    # Only the array envs with discrete actions are a DQN population's (Pendulum's serves other uses).
    supported = [env_id for env_id, cls in ARRAY_ENVS.items() if cls.n_actions is not None]
    if config.env_id not in supported:
        kind = (
            "has continuous actions, and DQN populations need discrete actions"
            if config.env_id in ARRAY_ENVS
            else "has no array version for populations"
        )
        raise QiterError(f"{config.env_id!r} {kind}; supported: {', '.join(supported)}")
    if config.env_kwargs:
        raise QiterError(
            "populations step their own array versions of the environments, which take no --env-kwargs "
            f"(got {', '.join(config.env_kwargs)}); use `qiter train` for those"
        )
    env_cls = ARRAY_ENVS[config.env_id]
    if n_agents < 1:
        raise QiterError(f"--agents must be at least 1, got {n_agents}")
    if workers is not None and workers < 1:
        raise QiterError(f"--workers must be at least 1, got {workers}")
    # Memory first: a population far too large is refused before a config per agent is built.
    check_memory(config, n_agents, env_cls)
    configs = agent_configs(config, n_agents, sweep)
    # Each agent learns as a DQNAgent does (after learning_starts, every update_interval steps): a budget
    # in which one of them would learn nothing is refused, as `qiter train` refuses it.
    from qiter.agent import check_budget
    from qiter.dqn.agent import DQNAgent

    for agent_config in configs:
        check_budget(DQNAgent, agent_config)
    backend = choose_backend(config)
    if th.device(config.device).type != "cpu":
        # One process on a GPU: the device is shared, and the host only launches its kernels.
        workers, threads = 1, None
    elif workers is None:
        workers = default_workers(n_agents)
    return Setup(configs, env_cls, backend, workers, threads)


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
    *,
    resume: bool = False,
    overwrite: bool = False,
    tensorboard: bool = True,
    events: Sequence[RunEvents] = (),
) -> PopulationResult:
    """Train ``n_agents`` DQN agents on ``config.env_id`` for ``config.n_timesteps`` steps each.

    :param config: The base config (agent ``i`` gets ``seed + i`` and its share of ``sweep``).
    :param n_agents: N.
    :param sweep: ``key -> values`` spread over the agents (see :func:`agent_configs`).
    :param run_dir: The run folder (see :mod:`qiter.population.report`); ``None`` writes nothing.
    :param final_eval_episodes: Episodes of the final evaluation (default ``config.n_eval_episodes``).
    :param progress: Print a line per evaluation.
    :param threads: BLAS and torch threads of each process on the CPU (``None``: leave them). One by
        default: the processes (``workers``) use the cores, and a population's matrices are too small for
        BLAS threads to pay.
    :param workers: Processes the agents are split over (this one included); default: one per usable core
        on the CPU, with at least 16 agents each, and one on a GPU. The split changes no agent's run.
    :param cuda_graphs: On CUDA, replay each step from captured CUDA graphs (the same run, fewer kernel
        launches: :class:`~qiter.population.lockstep.StepGraphs`); ``False`` launches every kernel.
    :param resume: Continue the population in ``run_dir`` from its latest checkpoint (to the bit; see
        :func:`resume_settings` for its config); ``n_agents``, ``sweep`` and the shape keys must match.
    :param overwrite: Replace a run already in ``run_dir`` (otherwise refused).
    :param tensorboard: Also write the aggregates to TensorBoard (with ``run_dir``).
    :param events: Callbacks: ``on_evaluation`` (with the agents' IQM and std, and ``agent=None``) and
        ``on_checkpoint``; a population does not report single episodes.
    :raises QiterError: Bad input (see :func:`check_population`, and on resume a folder that is not a
        population, another checkpoint format, a changed shape key), before anything is written.
    :raises RunInterrupted: After saving, when SIGINT or SIGTERM stopped the run.
    """
    setup = check_population(config, n_agents, sweep, workers, threads)
    sweep = dict(sweep or {})
    life = RunLifecycle(run_dir, events=events, tensorboard=tensorboard, verbose=int(progress))
    saved = _read_checkpoint(life, config, n_agents, sweep) if resume else None
    life.claim(resume, overwrite)
    # A diverging agent overflows before the check names it: no numpy warnings on the way there.
    with (
        np.errstate(over="ignore", invalid="ignore"),
        _thread_limits(setup.threads),
        Shards(setup.configs, setup.backend, setup.workers, setup.threads, cuda_graphs) as shards,
    ):
        run = PopulationRun(config, setup, sweep, shards, life)
        if saved is not None:
            run.restore(saved)
        if life.run_path is not None:
            life.open(run_config_dict(config, n_agents, sweep), run.step if saved is not None else None)
        try:
            run.loop()
            life.checkpoint("latest.pt", run.step, run.checkpoint_state)
            if not life.interrupted:
                result = run.finish(final_eval_episodes)
        finally:
            life.close()
        life.raise_if_interrupted(run.step, f"qiter population --resume {life.run_path}")
    if life.run_path is not None:
        write_reports(result, life.run_path, sweep)
    return result


@contextlib.contextmanager
def _thread_limits(threads: int | None) -> Iterator[None]:
    """BLAS and torch threads of this process set to ``threads`` while inside (``None``: left alone)."""
    if threads is None:
        yield
        return
    torch_threads = th.get_num_threads()
    limits = threadpool_limits(threads, user_api="blas")
    th.set_num_threads(threads)
    try:
        yield
    finally:
        limits.restore_original_limits()
        th.set_num_threads(torch_threads)


def run_config_dict(config: DQNConfig, n_agents: int, sweep: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """What a population's ``config.yaml`` holds: the base config, ``n_agents`` and the sweep."""
    base = config_to_dict(config)
    return {**base, "n_agents": n_agents, "sweep": {k: [str(v) for v in vs] for k, vs in sweep.items()}}


def resume_settings(
    run_dir: str | Path, overrides: Sequence[str] = (), config_file: str | Path | None = None
) -> tuple[DQNConfig, int, dict[str, list[str]]]:
    """The config, number of agents and sweep of the population in ``run_dir``, with a config file's
    values and ``--set`` overrides on top (what ``qiter population --resume`` continues with).

    :raises QiterError: The folder holds no population (its ``config.yaml`` is missing or names no agents).
    """
    folder = Path(run_dir)
    path = folder / runs.CONFIG_FILE
    if not path.is_file():
        raise QiterError(f"{folder} is not a run folder ({runs.CONFIG_FILE} is missing)")
    values = runs.load_run_config(folder)
    if "n_agents" not in values:
        raise QiterError(f"{folder} is not a population (its {runs.CONFIG_FILE} names no n_agents)")
    n_agents = int(values.pop("n_agents"))
    sweep = {str(k): [str(v) for v in vs] for k, vs in (values.pop("sweep", None) or {}).items()}
    if config_file is not None:
        values.update(convert_values(DQNConfig, read_config_file(config_file), f"config file {config_file}"))
    values.update(parse_overrides(DQNConfig, overrides))
    return config_from_dict(DQNConfig, values), n_agents, sweep


def _capacity(values: Mapping[str, Any]) -> int:
    return buffer_capacity(
        int(values["replay_buffer_size"]), int(values["n_timesteps"]), int(values["n_envs"])
    )


def _read_checkpoint(
    life: RunLifecycle, config: DQNConfig, n_agents: int, sweep: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """The latest checkpoint of the population to resume, checked against this run's settings."""
    if life.run_path is None:
        raise QiterError("resume needs the run folder to resume")
    path, state = life.load_latest()
    if state.get("format") != POPULATION_FORMAT:
        raise QiterError(
            f"{path} is not a population checkpoint of this version (format {state.get('format')!r}, expected "
            f"{POPULATION_FORMAT!r}): resume it with the command that wrote it, or start a new population"
        )
    saved, current = state["config"], run_config_dict(config, n_agents, sweep)
    life.check_fixed_keys(saved, current, FIXED_KEYS)
    if _capacity(saved) != _capacity(current):
        raise QiterError(
            f"cannot change replay_buffer_size when resuming: the buffers hold min(replay_buffer_size, "
            f"n_timesteps), a multiple of n_envs, = {_capacity(saved)} transitions, this config {_capacity(current)}; keep that "
            "capacity (e.g. set replay_buffer_size to it) or start a new run"
        )
    return state


class PopulationRun:
    """A population's run on the lifecycle: segments of steps between the points where something is due
    (a log row, an evaluation, a checkpoint, a look at the signals), the checks, the history.

    :param config: The base config.
    :param setup: The checked setup.
    :param sweep: The sweep (for the logs).
    :param shards: The population, split over processes.
    :param life: The run's lifecycle.
    """

    def __init__(
        self,
        config: DQNConfig,
        setup: Setup,
        sweep: Mapping[str, Sequence[Any]],
        shards: Shards,
        life: RunLifecycle,
    ) -> None:
        self.config, self.setup, self.sweep, self.shards, self.life = config, setup, sweep, shards, life
        self.n = len(setup.configs)
        self.step = 0
        self.eval_steps: list[int] = []
        self.eval_returns: list[np.ndarray] = []
        self.log_steps: list[int] = []
        self.train_returns: list[np.ndarray] = []
        self.diverged = np.zeros(self.n, dtype=bool)
        self.stopped_early = False
        self.train_time = 0.0  # seconds spent stepping and evaluating, over every session of the run
        self.session_time = 0.0  # the same, this session's (a resumed run's speed counts its own steps)
        self.steps_timed = 0  # agent steps of this session
        self.last_metrics: dict[str, np.ndarray] = {}  # the agents' loss and mean Q at the last log point
        q_bound = config.q_value_bound()
        self.q_watch = QValueWatch(q_bound) if q_bound is not None else None

    # -- saving and restoring ----------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs: the config, the history, and every agent's arrays and counters."""
        return {
            "format": POPULATION_FORMAT,
            "algo": "population",
            "config": run_config_dict(self.config, self.n, self.sweep),
            "step": self.step,
            "history": {
                "eval_steps": self.eval_steps,
                "eval_returns": np.stack(self.eval_returns) if self.eval_returns else np.zeros((0, self.n)),
                "log_steps": self.log_steps,
                "train_returns": np.stack(self.train_returns)
                if self.train_returns
                else np.zeros((0, self.n)),
                "diverged": self.diverged,
                "train_time": self.train_time,
            },
            "population": self.shards.state_dict(self.step),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint (:meth:`checkpoint_state`)."""

        def host(x: Any) -> np.ndarray:
            return x.numpy() if isinstance(x, th.Tensor) else np.asarray(x)

        population = state["population"]
        arrays = {k: host(v) for k, v in population["arrays"].items()}
        self.shards.load_state_dict({"arrays": arrays, "counters": dict(population["counters"])})
        self.step = int(state["step"])
        history = state["history"]
        self.eval_steps = [int(s) for s in history["eval_steps"]]
        self.eval_returns = list(host(history["eval_returns"]))
        self.log_steps = [int(s) for s in history["log_steps"]]
        self.train_returns = list(host(history["train_returns"]))
        self.diverged = host(history["diverged"]).astype(bool)
        self.train_time = float(history["train_time"])
        if self.life.verbose:
            print(f"Resuming {self.life.run_path} at step {self.step}")

    # -- the loop ----------------------------------------------------------------------------------------

    def loop(self) -> None:
        """Step to ``n_timesteps`` (or an early stop, or a signal), segment by segment."""
        config, life, shards = self.config, self.life, self.shards
        total = self.end_step()
        log_due = Every(LOG_INTERVAL, self.step)
        eval_due = Every(config.evaluation_interval, self.step)
        checkpoint_due = Every(config.checkpoint_interval or config.evaluation_interval or total, self.step)
        with life.guard_signals() as signals:
            while self.step < total and signals.signum is None:
                start, t0 = self.step, time.perf_counter()
                stop = int(min(log_due.next, eval_due.next, checkpoint_due.next, total, start + SEGMENT))
                stop = -(-stop // config.n_envs) * config.n_envs  # whole steps of the n_envs copies
                shards.call("run", start, stop)
                self.step = stop
                self.steps_timed += self.n * (stop - start)
                logged = log_due.due(stop) or stop == total
                train_row = self.log_interval() if logged else None
                evals = None
                if eval_due.due(stop) and stop < total:
                    evals = self.evaluate()
                if stop < total and (train_row is not None or evals is not None):
                    # At the last step the rows wait for the final evaluation (finish).
                    self.agent_rows(stop, train_row, evals)
                self.train_time += time.perf_counter() - t0
                self.session_time += time.perf_counter() - t0
                if self.stopped_early:
                    break
                if checkpoint_due.due(stop):
                    life.checkpoint("latest.pt", stop, self.checkpoint_state)

    def end_step(self) -> int:
        """Where the run ends: ``n_timesteps``, rounded up to whole steps of the ``n_envs`` copies (as
        ``qiter train`` ends)."""
        n_envs = self.config.n_envs
        return -(-self.config.n_timesteps // n_envs) * n_envs

    def log_interval(self) -> dict[str, np.ndarray]:
        """The returns of the episodes ended since the last point and the agents' training metrics: kept,
        checked (divergence, the Q-value bound), logged as aggregates; returned for the agents' rows."""
        step, life = self.step, self.life
        returns = self.shards.concat("take_finished")
        self.log_steps.append(step)
        self.train_returns.append(returns)
        parts = [m for m in self.shards.call("take_metrics") if m]
        if parts:
            metrics = {k: np.concatenate([m[k] for m in parts]) for k in parts[0]}
            self.check(metrics)
        else:  # no gradient step yet: the columns are there from the first row on
            metrics = {"loss": np.full(self.n, math.nan), "mean_q": np.full(self.n, math.nan)}
        self.last_metrics = metrics
        row: dict[str, np.ndarray] = {"train_return": returns, **metrics}
        aggregates = {f"{k}_{name}": v for k, x in row.items() for name, v in _aggregates(x).items()}
        life.log("train", step, aggregates)
        return row

    def check(self, metrics: Mapping[str, np.ndarray]) -> None:
        """Warn once per agent whose loss or Q-values became NaN or infinite (its results mean nothing; the
        others go on), raise when all have; warn once when an agent's mean Q passes the bound."""
        bad = ~np.isfinite(metrics["loss"]) | ~np.isfinite(metrics["mean_q"])
        new = bad & ~self.diverged
        if new.any():
            self.diverged |= new
            agents = ", ".join(str(i) for i in np.flatnonzero(new))
            if self.diverged.all():
                raise DivergenceError(
                    f"training diverged at step {self.step}: every agent's loss or Q-values are NaN or "
                    "infinite. The last good checkpoint is kept; try a smaller learning rate, the huber loss "
                    "or gradient clipping (max_grad_norm)."
                )
            warnings.warn(
                f"at step {self.step} agent(s) {agents} diverged (loss or Q-values NaN or infinite): their "
                "results mean nothing; the other agents go on",
                QiterWarning,
                stacklevel=2,
            )
        if self.q_watch is not None:
            mean_q = np.where(self.diverged, -np.inf, metrics["mean_q"])
            worst = int(np.argmax(mean_q))
            self.q_watch.check(self.step, float(mean_q[worst]), who=f"agent {worst}'s ")

    def evaluate(self) -> np.ndarray:
        """A periodic greedy evaluation of every agent: kept, logged as aggregates, told to the events."""
        config, life, step = self.config, self.life, self.step
        returns = self.shards.concat("evaluate", config.n_eval_episodes, step)
        self.eval_steps.append(step)
        self.eval_returns.append(returns)
        stats = _aggregates(returns)
        life.log("eval", step, {f"return_{k}": v for k, v in stats.items()})
        if life.verbose:
            life.say(f"step {step}: evaluation IQM {stats['iqm']:.1f}, mean {stats['mean']:.1f}")
        if life.evaluation(step, stats["iqm"], stats["std"], None):
            self.stopped_early = True
        return returns

    def agent_rows(self, step: int, train: Mapping[str, np.ndarray] | None, evals: np.ndarray | None) -> None:
        """One row per agent in ``agents/agent_<i>.csv`` (empty cells where a value is not due)."""
        if self.life.logger is None:
            return
        nan = np.full(self.n, math.nan)
        train = train or {}
        columns = {
            "train_return": train.get("train_return", nan),
            "eval_return": nan if evals is None else evals,
            "loss": train.get("loss", nan),
            "mean_q": train.get("mean_q", nan),
        }
        for i in range(self.n):
            row = {k: ("" if math.isnan(v[i]) else float(v[i])) for k, v in columns.items()}
            # Closed after each row: thousands of agents would exceed the open-file limit.
            self.life.log(f"agents/agent_{i:04d}", step, row, tensorboard=False, keep_open=False)  # type: ignore[arg-type]

    # -- the end -----------------------------------------------------------------------------------------

    def finish(self, final_eval_episodes: int | None) -> PopulationResult:
        """The final greedy evaluation, the last rows, ``eval.json``; the result."""
        config, life = self.config, self.life
        t0 = time.perf_counter()
        # Counter 0: the final evaluation's episodes differ from every periodic one's (counted by steps > 0).
        n_final = final_eval_episodes or config.n_eval_episodes
        final = self.shards.concat("evaluate", n_final, 0)
        self.train_time += time.perf_counter() - t0
        self.session_time += time.perf_counter() - t0
        step = self.step
        self.eval_steps.append(step)
        self.eval_returns.append(final)
        train = None
        if self.log_steps and self.log_steps[-1] == step:
            train = {"train_return": self.train_returns[-1], **self.last_metrics}
        self.agent_rows(step, train, final)
        stats = _aggregates(final)
        life.log("eval", step, {f"return_{k}": v for k, v in stats.items()})
        speed = self.steps_timed / max(self.session_time, 1e-9)
        result = PopulationResult(
            self.setup.configs, final, self.eval_steps, self.eval_returns, self.log_steps, self.train_returns,
            self.train_time, speed, self.shards.layers(), self.setup.backend, len(self.shards.slices),
            str(life.run_path) if life.run_path is not None else None, self.stopped_early,
        )  # fmt: skip
        stats = _aggregates(final)
        life.write_eval(
            {
                "algo": "population", "env_id": config.env_id, "steps": step, "agents": self.n,
                "episodes": n_final, "iqm_return": stats["iqm"], "mean_return": stats["mean"],
                "std_return": stats["std"], "min_return": stats["min"], "max_return": stats["max"],
                "final_returns": [float(x) for x in final], "wall_time_s": self.train_time,
                "agent_steps_per_second": speed,
            }
        )  # fmt: skip
        return result


def _aggregates(x: np.ndarray) -> dict[str, float]:
    """IQM, mean, std, min and max over the agents (NaNs, agents without a value, left out)."""
    finite = x[~np.isnan(x)]
    if not len(finite):
        return dict.fromkeys(("iqm", "mean", "std", "min", "max"), math.nan)
    return {
        "iqm": iqm(finite), "mean": float(finite.mean()), "std": float(finite.std()),
        "min": float(finite.min()), "max": float(finite.max()),
    }  # fmt: skip


def save_agent(result: PopulationResult, agent: int, path: str | Path) -> None:
    """Write agent ``agent`` as an ordinary DQN checkpoint (``qiter eval``, ``qiter.load_agent`` read it),
    through the DQN agent's own checkpoint path (:func:`qiter.run_loop.checkpoint_state`)."""
    from qiter.dqn.agent import DQNAgent
    from qiter.run_loop import RunState, checkpoint_state

    cfg = replace(result.configs[agent], device="cpu")
    dqn = DQNAgent.build(cfg)
    assert isinstance(dqn, DQNAgent)
    # The layers' tensors in the order of q_net.parameters(): Linear weight and bias, then the LayerNorm's.
    tensors = [t for layer in result.agent_layers(agent) for t in layer]
    with th.no_grad():
        for p, t in zip(dqn.q_net.parameters(), tensors, strict=True):
            p.copy_(th.from_numpy((t.T if t.ndim == 2 else t).copy()))  # torch stores weights (out, in)
        dqn.q_target_net.load_state_dict(dqn.q_net.state_dict())
    runs.save_checkpoint(path, checkpoint_state(dqn, cfg, RunState(step=cfg.n_timesteps)))
