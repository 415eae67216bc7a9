"""The arrays of a population and its step: N independent DQN agents stepped in lockstep.

Each agent has its own weights, Adam state, replay buffer, environment copy, exploration schedule and
hyperparameters; what they share is the arrays that hold them, so one step of the population is a fixed
number of array calls whatever N is (no Python loop over agents). The schedule is the single agent's
(:class:`qiter.dqn.agent.DQNAgent` under :func:`qiter.run_loop.train`), step for step, with ``E = n_envs``
environment copies per agent (steps are counted in environment steps, ``E`` per population step):

1. epsilon from the linear schedule at ``step + E`` (or the exponential one of the finished episodes),
   epsilon-greedy actions;
2. one environment step of every copy (finished copies reset in the same step);
3. store ``(s, a, r, s', terminated, done)`` per copy;
4. targets counted in episodes: a copy for each multiple of the interval the agent's episode count passed;
5. at ``step + E``: the target copy for each ``target_network_update_interval`` passed, then, after
   ``learning_starts``, ``gradient_steps`` updates on minibatches for each ``update_interval`` passed
   (n-step returns sampled as the single agent's buffer computes them).

Agent ``i`` draws every random number (initial weights, resets, exploration, minibatches, evaluation
episodes) from a stream of its own (:mod:`qiter.population.streams`), so an agent's run depends on its seed
and settings alone, not on N or on the other agents, and a population split into slices
(:mod:`qiter.population.shards`) is the same run, agent by agent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th

from qiter.agent import multiples_in
from qiter.core.arrays import Array, Ops, make_ops
from qiter.core.dqn import AgentSettings, BatchedDQN
from qiter.core.mlp import MLPSpec
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterWarning
from qiter.population.array_envs import ArrayEnv, make_array_env
from qiter.population.buffer import PopulationBuffer, buffer_capacity
from qiter.population.streams import COPIES, EVALUATE, EXPLORE, INIT, Streams, to_integers, to_uniform


def layer_sizes(config: DQNConfig, env_cls: type[ArrayEnv]) -> list[int]:
    """``[obs_dim, hidden..., outputs]`` of the config's network (a dueling head has ``1 + n_actions``)."""
    assert env_cls.n_actions is not None
    outputs = env_cls.n_actions + int(config.dueling)
    return [env_cls.obs_dim] + [config.n_hidden_units] * config.n_hidden_layers + [outputs]


def network_spec(config: DQNConfig, env_cls: type[ArrayEnv]) -> MLPSpec:
    """The DQN core's description of the config's network."""
    return MLPSpec(tuple(layer_sizes(config, env_cls)), config.activation, config.layer_norm, config.dueling)


class Population:
    """The arrays of a population and its step (see the module docstring for the schedule).

    :param configs: One config per agent (the same in everything but :data:`qiter.population.train.SWEEPABLE`).
    :param backend: ``"numpy"`` or ``"torch"``.
    :param cuda_graphs: On CUDA, replay the step from captured CUDA graphs (:class:`StepGraphs`).
    """

    def __init__(self, configs: list[DQNConfig], backend: str, cuda_graphs: bool = True) -> None:
        base = configs[0]
        self.config = base
        self.configs = configs
        self.n = n = len(configs)
        self.ops: Ops = make_ops(backend, base.device)
        self.streams = Streams(self.ops, [c.seed for c in configs])
        # E environment copies per agent, agent-major; one copy steps on the agent's own stream, several on
        # streams derived from it.
        self.n_envs = n_envs = base.n_envs
        env_streams = self.streams if n_envs == 1 else self.streams.children(COPIES, 0, n_envs)
        self.env = make_array_env(base.env_id, n * n_envs, self.ops, env_streams)
        settings = AgentSettings.make(
            n, [c.learning_rate for c in configs], [c.gamma for c in configs],
            [c.double_dqn for c in configs], [c.loss == "huber" for c in configs],
            [math.inf if c.max_grad_norm is None else c.max_grad_norm for c in configs], base.adam_eps,
        )  # fmt: skip
        self.learner = BatchedDQN(self.ops, n, network_spec(base, type(self.env)), settings)
        self.learner.initialize(lambda k, shape: self.streams.uniform(INIT, k, shape))
        ops = self.ops
        capacity = buffer_capacity(base.replay_buffer_size, base.n_timesteps, n_envs)
        gammas = ops.asarray(np.array([c.gamma for c in configs]), "float32")
        self.buffer = PopulationBuffer(
            ops, self.streams, capacity, self.env.obs_dim, n_envs, base.n_steps, gammas
        )
        # n-step traces cut at the first action the online network would not take (n_step_cut: greedy).
        self.trace_policy = self.learner.greedy if base.n_steps > 1 and base.n_step_cut == "greedy" else None
        eps0 = np.array([c.exploration_initial_eps for c in configs])
        self.eps0 = ops.asarray(eps0, "float32")
        self.eps_delta = ops.asarray(np.array([c.exploration_final_eps for c in configs]) - eps0, "float32")
        anneal = np.array([int(c.exploration_fraction * c.n_timesteps) for c in configs], dtype=np.float64)
        # A zero-length schedule is already done (as linear_schedule): any step divided by ~0 clips to 1.
        self.anneal = ops.asarray(np.maximum(anneal, 1e-9), "float32")
        self.intervals = np.array([c.target_network_update_interval for c in configs])
        self.same_interval = bool(np.all(self.intervals == self.intervals[0]))
        # Exploration per episode (the rlberry seed's exponential schedule) and targets counted in episodes
        # read each agent's finished episodes.
        self.exponential = base.exploration_schedule == "exponential"
        self.eps_final = ops.asarray(np.array([c.exploration_final_eps for c in configs]), "float32")
        self.episode_targets = base.target_update_unit == "episodes"
        self.intervals_array = ops.asarray(self.intervals, "int64")
        # Learning-rate decay: each agent's rate goes linearly from its learning_rate to
        # learning_rate_final over the run after learning_rate_decay_start, set before each update.
        self.lr_start = self.learner.lr
        self.lr_fraction: float | None = None
        if base.learning_rate_final is not None:
            self.lr_start = ops.zeros(tuple(self.learner.lr.shape))
            ops.copy_into(self.lr_start, self.learner.lr)
        self.n_actions = int(self.env.n_actions or 0)
        self.observations = self.env.reset()
        self.episode_returns = ops.zeros((n * n_envs,), "float64")
        self.finished_sum = ops.zeros((n,), "float64")
        self.finished_count = ops.zeros((n,), "int64")
        self.episodes = ops.zeros((n,), "int64")  # finished so far, per agent
        # Each agent's loss and mean Q summed over the gradient steps since the last take_metrics().
        self.loss_sum = ops.zeros((n,), "float64")
        self.q_sum = ops.zeros((n,), "float64")
        self.updates = 0
        # The step as a 0-d device tensor once use_device_counters() is called (a CUDA graph's), else None.
        self.clock: Array | None = None
        self.graphs: StepGraphs | None = None
        if cuda_graphs and th.device(ops.device).type == "cuda":
            self.use_device_counters()
            self.graphs = StepGraphs(self)

    def use_device_counters(self, start: int = 0) -> None:
        """Keep every counter a step reads (the step, the env's draws, the buffer's position, size and
        samples, Adam's steps) in 0-d tensors on the device, updated in place: what a captured CUDA graph
        needs, since it replays the memory it saw. The numbers drawn are the same. Torch backend only.

        :param start: The steps done so far.
        """
        cfg = self.config
        self.clock = self.ops.asarray(start, "int64")
        self.env.use_device_counter()
        self.buffer.use_device_counters()
        updates = (cfg.n_timesteps + cfg.n_envs) // cfg.update_interval * cfg.gradient_steps
        self.learner.use_device_counter(updates + cfg.n_envs * cfg.gradient_steps)

    def epsilon(self, step: int | Array) -> Array:
        """Each agent's exploration rate at ``step``: the linear schedule at ``step + n_envs`` (the steps done
        once this one is), or the exponential one of its finished episodes (DQNAgent's schedules)."""
        ops = self.ops
        if self.exponential:
            # eps_min + (eps0 - eps_min) exp(-episodes / decay_episodes) (e ** x: an exp written with
            # operators, the same on numpy and torch).
            decay = -self.config.exploration_decay_episodes
            return self.eps_final - self.eps_delta * math.e ** (ops.astype(self.episodes, "float32") / decay)
        return self.eps0 + ops.clip((step + self.n_envs) / self.anneal, 0.0, 1.0) * self.eps_delta

    def act(self, step: int | Array) -> Array:
        """Epsilon-greedy actions at ``step`` (the number of steps done so far, or :attr:`clock`)."""
        ops, n_envs = self.ops, self.n_envs
        eps = self.epsilon(step)
        greedy = self.learner.greedy(self.observations.reshape(self.n, n_envs, -1))  # (N, E)
        # The coin and the random action of each copy (with one copy, shape (1, 2) draws what (2,) draws).
        bits = self.streams.per_step(EXPLORE, step // n_envs, (n_envs, 2))
        explore = to_uniform(ops, bits[..., 0]) < eps[:, None]
        return ops.where(explore, to_integers(bits[..., 1], self.n_actions), greedy).reshape(-1)

    def run(self, start: int, stop: int) -> None:
        """Steps ``start`` to ``stop - 1``, ``n_envs`` at a time (see :meth:`step`; both multiples of it)."""
        for step in range(start, stop, self.n_envs):
            self.step(step)

    def step(self, step: int) -> None:
        """One environment step of every copy, then what the schedule asks for at ``step + n_envs``."""
        if self.graphs is not None:
            self.graphs.transition()
        else:
            self.transition(step if self.clock is None else self.clock)
        if self.episode_targets:
            self.episode_target_update()
        self.update(step + self.n_envs)

    def episode_target_update(self) -> None:
        """Targets counted in episodes: one copy per multiple of its interval that an agent's episode count
        just passed (DQNAgent copies as each episode ends, before the step's update)."""
        ops = self.ops
        # The copies finished this step are those whose elapsed count was reset to 0 (every episode lasts
        # at least one step).
        ended = ops.sum(ops.astype(self.env.elapsed == 0, "int64").reshape(self.n, self.n_envs), 1)
        passed = multiples_in(self.episodes, ended, self.intervals_array)
        # On the host, as many masked copies as the most passed (with Polyak targets two are not one); on a
        # device, no read back: E masked copies always run.
        rounds = int(passed.max()) if ops.name == "numpy" else self.n_envs
        for r in range(rounds):
            self.learner.update_target(passed > r, tau=self.config.tau)

    # The arrays of the population are updated in place, never rebound: a captured CUDA graph replays the
    # memory it saw.
    def transition(self, step: int | Array) -> None:
        """Act, step every environment copy, store the transitions, count the returns (no host decision:
        what a CUDA graph captures).

        :param step: The steps done so far, or :attr:`clock` (advanced here).
        """
        ops, per_agent = self.ops, (self.n, self.n_envs)
        actions = self.act(step)
        out = self.env.step(actions)
        done = out.terminateds | out.truncateds
        self.buffer.add(
            self.observations, actions, out.rewards, out.final_observations, out.terminateds, done
        )
        ops.copy_into(self.observations, out.observations)
        self.episode_returns += out.rewards
        self.finished_sum += ops.sum(ops.where(done, self.episode_returns, 0.0).reshape(per_agent), 1)
        ended = ops.sum(ops.astype(done, "int64").reshape(per_agent), 1)
        self.finished_count += ended
        self.episodes += ended
        ops.copy_into(self.episode_returns, ops.where(done, 0.0, self.episode_returns))
        if self.clock is not None:
            self.clock += self.n_envs

    def update(self, step: int) -> None:
        """Target copies and gradient steps due at ``step`` (decided on the host: no device sync): as
        DQNAgent counts them, the multiples of each interval in ``(step - n_envs, step]``."""
        cfg, n_envs = self.config, self.n_envs
        due = multiples_in(step, n_envs, self.intervals) > 0
        if self.episode_targets:
            pass
        elif self.same_interval:
            if due[0]:
                self.learner.update_target(tau=cfg.tau)
        elif due.any():
            self.learner.update_target(self.ops.asarray(due, "bool"), tau=cfg.tau)
        if step <= cfg.learning_starts:
            return
        n_updates = multiples_in(step, n_envs, cfg.update_interval) * cfg.gradient_steps
        if not n_updates:
            return
        if cfg.learning_rate_final is not None:
            self.set_learning_rate(step)
        self.updates += n_updates
        for _ in range(n_updates):
            if self.graphs is not None:
                self.graphs.gradient_step()
            else:
                self.gradient_step()

    def set_learning_rate(self, step: int) -> None:
        """Each agent's learning rate at ``step`` under the linear decay (DQNAgent's ``_learning_rate_at``),
        written into the learner's per-parameter rates in place (a captured graph reads them)."""
        cfg = self.config
        start = int(cfg.learning_rate_decay_start * cfg.n_timesteps)
        fraction = min(max(step - start, 0) / max(cfg.n_timesteps - start, 1e-9), 1.0)
        if fraction == self.lr_fraction:
            return
        self.lr_fraction = fraction
        assert cfg.learning_rate_final is not None
        final = cfg.learning_rate_final
        self.ops.copy_into(self.learner.lr, self.lr_start * (1.0 - fraction) + final * fraction)

    def gradient_step(self) -> None:
        """One gradient step of every agent on its own minibatch (what a CUDA graph captures)."""
        out = self.learner.update(*self.buffer.sample(self.config.batch_size, self.trace_policy))
        self.loss_sum += out.loss
        self.q_sum += out.mean_q

    def take_metrics(self) -> dict[str, np.ndarray]:
        """Each agent's mean loss and mean Q over the gradient steps since the last call (empty if none)."""
        if self.updates == 0:
            return {}
        ops, n = self.ops, self.updates
        out = {"loss": ops.to_numpy(self.loss_sum) / n, "mean_q": ops.to_numpy(self.q_sum) / n}
        self.loss_sum *= 0
        self.q_sum *= 0
        self.updates = 0
        return out

    def take_finished(self) -> np.ndarray:
        """Mean return of the episodes each agent finished since the last call (NaN where none)."""
        ops = self.ops
        total, count = ops.to_numpy(self.finished_sum).copy(), ops.to_numpy(self.finished_count).copy()
        self.finished_sum *= 0
        self.finished_count *= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def evaluate(self, n_episodes: int, counter: int) -> np.ndarray:
        """Mean greedy return of each agent over ``n_episodes`` fresh episodes (all agents at once).

        :param counter: Which evaluation (its step): each agent's episodes are streams drawn from its own.
        """
        ops = self.ops
        streams = self.streams.children(EVALUATE, counter, n_episodes)
        env = make_array_env(self.config.env_id, self.n * n_episodes, ops, streams)
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

    def layers(self) -> list[tuple[np.ndarray, ...]]:
        """Every agent's layers as host arrays (:meth:`BatchedDQN.layers`)."""
        return self.learner.layers()

    # -- saving and restoring ----------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict[str, Any]:
        """Everything the population's future depends on, as host values: ``"arrays"`` (each with a
        leading agent axis, so the states of slices concatenate: weights, targets, Adam's moments, the
        filled part of the replay buffers, the environments' states, the observations and running
        returns) and ``"counters"`` (the same for every agent: Adam's steps, the buffers' position, size
        and samples, the environments' draws, which are also the random streams' counters).

        :param step: The steps done so far (kept to check a restore against it).
        """
        ops, n = self.ops, self.n
        buffer = self.buffer
        size = _host_int(buffer.size)
        arrays: dict[str, Array] = {f"learner.{k}": v for k, v in self.learner.arrays().items()}
        arrays["buffer.table"] = buffer.table.reshape(n, buffer.capacity, -1)[:, :size]
        arrays |= self._step_arrays()
        counters = {
            "step": step, "adam_steps": _host_int(self.learner.step_count), "buffer.pos": _host_int(buffer.pos),
            "buffer.size": size, "buffer.samples": _host_int(buffer.samples), "env.draws": _host_int(self.env.draws),
            "updates": self.updates,
        }  # fmt: skip
        return {"arrays": {k: ops.to_numpy(v).copy() for k, v in arrays.items()}, "counters": counters}

    def _step_arrays(self) -> dict[str, Array]:
        """The arrays of the environments and the running sums, each with a leading agent axis: the copies'
        arrays as ``(N, n_envs, ...)`` views (so a slice of agents is a slice of rows)."""
        per_agent = (self.n, self.n_envs)
        env = self.env
        return {
            "env.state": env.state.reshape(*per_agent, -1), "env.elapsed": env.elapsed.reshape(per_agent),
            "observations": self.observations.reshape(*per_agent, -1),
            "episode_returns": self.episode_returns.reshape(per_agent), "finished_sum": self.finished_sum,
            "finished_count": self.finished_count, "loss_sum": self.loss_sum, "q_sum": self.q_sum,
            "episodes": self.episodes,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (of this slice's agents) in place: the run continues to the bit."""
        ops, n = self.ops, self.n
        arrays, counters = state["arrays"], state["counters"]
        targets = {f"learner.{k}": v for k, v in self.learner.arrays().items()} | self._step_arrays()
        for key, target in targets.items():
            ops.copy_into(target, ops.asarray(arrays[key], _dtype_name(arrays[key])))
        size = int(counters["buffer.size"])
        table = self.buffer.table.reshape(n, self.buffer.capacity, -1)
        ops.copy_into(table[:, :size], ops.asarray(arrays["buffer.table"], "float32"))
        buffer, env = self.buffer, self.env
        buffer.pos = _set_counter(ops, buffer.pos, counters["buffer.pos"])
        buffer.size = _set_counter(ops, buffer.size, size)
        buffer.samples = _set_counter(ops, buffer.samples, counters["buffer.samples"])
        env.draws = _set_counter(ops, env.draws, counters["env.draws"])
        self.learner.step_count = _set_counter(ops, self.learner.step_count, counters["adam_steps"])
        self.updates = int(counters["updates"])
        if self.clock is not None:
            self.clock = _set_counter(ops, self.clock, counters["step"])


def _host_int(x: int | Array) -> int:
    """A counter's value, whether a host integer or a 0-d device tensor."""
    return x if isinstance(x, int) else int(x.item())


def _set_counter(ops: Ops, current: int | Array, value: int) -> int | Array:
    """``value`` in the counter's form: a host integer, or written into its 0-d device tensor in place (a
    captured CUDA graph reads that memory)."""
    if isinstance(current, int):
        return int(value)
    ops.copy_into(current, ops.asarray(int(value), "int64"))
    return current


def _dtype_name(x: np.ndarray) -> str:
    return {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64", np.dtype(np.int64): "int64",
            np.dtype(np.bool_): "bool"}[np.asarray(x).dtype]  # fmt: skip


class StepGraphs:
    """A population's step on CUDA replayed from two captured CUDA graphs: the transition (act, env step,
    store) and the gradient step (sample, update).

    Why: on a GPU the step is bound by the host launching its ~150 small kernels one by one, not by the
    arithmetic (docs/population.md); a replayed graph launches them all at once. The host keeps the
    schedule (which steps update, which copy the targets), and the population's counters live on the
    device (:meth:`Population.use_device_counters`), so a replay draws the same numbers as the eager step.
    Each graph is captured at its third call (the first two run eagerly on a side stream: they make the
    scratch arrays and the libraries' workspaces that a capture must not allocate). Should a capture fail,
    the population warns once and goes on eagerly, the same run.

    :param population: A population on CUDA whose counters are on the device.
    """

    WARMUP = 2

    def __init__(self, population: Population) -> None:
        self.population = population
        self.calls = {"transition": 0, "gradient_step": 0}
        self.graphs: dict[str, th.cuda.CUDAGraph] = {}
        self.failed = False

    def transition(self) -> None:
        """Act, step and store (:meth:`Population.transition` at the device clock), replayed once captured."""
        pop = self.population
        self._call("transition", lambda: pop.transition(pop.clock))

    def gradient_step(self) -> None:
        """One gradient step of every agent (:meth:`Population.gradient_step`), replayed once captured."""
        self._call("gradient_step", self.population.gradient_step)

    def _call(self, name: str, fn: Callable[[], None]) -> None:
        graph = self.graphs.get(name)
        if graph is not None:
            graph.replay()
            return
        if self.failed:
            fn()
            return
        self.calls[name] += 1
        if self.calls[name] <= self.WARMUP:
            self._on_side_stream(fn)
            return
        graph = th.cuda.CUDAGraph()
        try:
            with th.cuda.graph(graph):
                fn()  # recorded, not run
        except RuntimeError as error:
            self.failed = True
            warnings.warn(
                f"capturing the population's {name.replace('_', ' ')} in a CUDA graph failed ({error}); "
                "going on without graphs",
                QiterWarning,
                stacklevel=2,
            )
            fn()
            return
        self.graphs[name] = graph
        graph.replay()

    @staticmethod
    def _on_side_stream(fn: Callable[[], None]) -> None:
        """Run ``fn`` on a side stream, as PyTorch asks of the calls before a capture."""
        side = th.cuda.Stream()
        side.wait_stream(th.cuda.current_stream())
        with th.cuda.stream(side):
            fn()
        th.cuda.current_stream().wait_stream(side)
