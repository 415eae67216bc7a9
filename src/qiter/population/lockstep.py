"""The arrays of a population and its step: N independent DQN agents stepped in lockstep.

Each agent has its own weights, Adam state, replay buffer, environment copy, exploration schedule and
hyperparameters; what they share is the arrays that hold them, so one step of the population is a fixed
number of array calls whatever N is (no Python loop over agents). The schedule is the single agent's
(:class:`qiter.dqn.agent.DQNAgent` under :func:`qiter.run_loop.train`), step for step:

1. epsilon from the linear schedule at ``step + 1``, epsilon-greedy actions;
2. one environment step of every copy (finished copies reset in the same step);
3. store ``(s, a, r, s', terminated)``;
4. at ``step``: the target copy every ``target_network_update_interval`` steps, then, after
   ``learning_starts`` and every ``update_interval`` steps, ``gradient_steps`` updates on minibatches.

Agent ``i`` draws every random number (initial weights, resets, exploration, minibatches, evaluation
episodes) from a stream of its own (:mod:`qiter.population.streams`), so an agent's run depends on its seed
and settings alone, not on N or on the other agents, and a population split into slices
(:mod:`qiter.population.shards`) is the same run, agent by agent.
"""

from __future__ import annotations

import numpy as np

from qiter.dqn.config import DQNConfig
from qiter.population.array_envs import ArrayEnv, make_array_env
from qiter.population.arrays import Array, Ops, make_ops
from qiter.population.buffer import PopulationBuffer
from qiter.population.learner import AgentSettings, PopulationLearner
from qiter.population.streams import EVALUATE, EXPLORE, Streams, to_integers, to_uniform


def layer_sizes(config: DQNConfig, env_cls: type[ArrayEnv]) -> list[int]:
    """``[obs_dim, hidden..., n_actions]`` of the config's network."""
    assert env_cls.n_actions is not None
    return [env_cls.obs_dim] + [config.n_hidden_units] * config.n_hidden_layers + [env_cls.n_actions]


class Population:
    """The arrays of a population and its step (see the module docstring for the schedule).

    :param configs: One config per agent (the same in everything but :data:`qiter.population.train.SWEEPABLE`).
    :param backend: ``"numpy"`` or ``"torch"``.
    """

    def __init__(self, configs: list[DQNConfig], backend: str) -> None:
        base = configs[0]
        self.config = base
        self.n = n = len(configs)
        self.ops: Ops = make_ops(backend, base.device)
        self.streams = Streams(self.ops, [c.seed for c in configs])
        self.env = make_array_env(base.env_id, n, self.ops, self.streams)
        settings = AgentSettings(
            learning_rate=np.array([c.learning_rate for c in configs]),
            gamma=np.array([c.gamma for c in configs]),
            double_dqn=np.array([c.double_dqn for c in configs]),
        )
        self.learner = PopulationLearner(
            self.ops, n, layer_sizes(base, type(self.env)), settings, base.activation, base.loss,
            base.max_grad_norm, base.adam_eps,
        )  # fmt: skip
        self.learner.initialize(self.streams)
        capacity = min(base.replay_buffer_size, base.n_timesteps)
        self.buffer = PopulationBuffer(self.ops, self.streams, capacity, self.env.obs_dim)
        ops = self.ops
        eps0 = np.array([c.exploration_initial_eps for c in configs])
        self.eps0 = ops.asarray(eps0, "float32")
        self.eps_delta = ops.asarray(np.array([c.exploration_final_eps for c in configs]) - eps0, "float32")
        anneal = np.array([int(c.exploration_fraction * c.n_timesteps) for c in configs], dtype=np.float64)
        # A zero-length schedule is already done (as linear_schedule): any step divided by ~0 clips to 1.
        self.anneal = ops.asarray(np.maximum(anneal, 1e-9), "float32")
        self.intervals = np.array([c.target_network_update_interval for c in configs])
        self.same_interval = bool(np.all(self.intervals == self.intervals[0]))
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
        bits = self.streams.per_step(EXPLORE, step, (2,))  # the coin and the random action
        explore = to_uniform(ops, bits[:, 0]) < eps
        return ops.where(explore, to_integers(bits[:, 1], self.n_actions), greedy)

    def run(self, start: int, stop: int) -> None:
        """Steps ``start`` to ``stop - 1`` (see :meth:`step`)."""
        for step in range(start, stop):
            self.step(step)

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

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every agent's layers as host arrays (:meth:`PopulationLearner.layers`)."""
        return self.learner.layers()
