"""What every continuous-action agent shares, as the run loop drives it.

At each environment step:

1. :meth:`ContinuousAgent.act`: uniform random actions until ``learning_starts`` (as SB3), then the
   greedy action in [-1, 1] (each algorithm's :meth:`~ContinuousAgent.greedy_tensor`) plus exploration
   noise, scaled to the environment's bounds by :class:`~qiter.wrappers.ActionScaler`;
2. :meth:`ContinuousAgent.observe`: store the transitions with actions back in [-1, 1];
3. :meth:`ContinuousAgent.update`: every ``update_interval`` steps (or finished episodes, with
   ``update_unit="episodes"``) after ``learning_starts``, ``gradient_steps`` calls of the algorithm's
   :meth:`~ContinuousAgent.gradient_step` (-1: one per environment step since the last update, SB3's
   ``gradient_steps=-1``).

An algorithm subclasses :class:`ContinuousAgent` and writes only its networks, its greedy action and its
gradient step; saving and restoring go through :meth:`~ContinuousAgent.modules`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from qiter.agent import Agent, MetricSummary, Transitions, first_step_after
from qiter.buffers.replay import ReplayBuffer, TorchReplayBufferSamples
from qiter.continuous.config import ContinuousConfig, parse_hidden_sizes
from qiter.continuous.noise import make_noise
from qiter.envs import require_box_observations, require_continuous_actions
from qiter.pixel_envs import refuse_images
from qiter.run_config import RunConfig
from qiter.runs import load_module
from qiter.wrappers import ActionScaler, require_bounded_box

__all__ = ["ContinuousAgent"]


class ContinuousAgent(Agent):
    """Base of the agents for bounded Box action spaces (NAF, CEM, DDPG, TD3).

    :param config: The hyperparameters.
    :param observation_space: A Box space (flattened).
    :param action_space: A bounded Box space.
    """

    config_class: ClassVar[type[ContinuousConfig]] = ContinuousConfig
    fixed_keys: ClassVar[tuple[str, ...]] = ("env_id", "n_envs", "hidden_sizes")

    def __init__(
        self, config: ContinuousConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__(config, observation_space, action_space)
        assert isinstance(observation_space, spaces.Box) and isinstance(action_space, spaces.Box)
        self.config: ContinuousConfig = config
        self.device = th.device(config.device)
        self.obs_dim = int(np.prod(observation_space.shape))
        self.action_shape = tuple(action_space.shape)
        self.action_dim = int(np.prod(self.action_shape))
        self.hidden_sizes = parse_hidden_sizes(config.hidden_sizes)
        self.scaler = ActionScaler(action_space)
        self.rng = np.random.default_rng(config.seed)
        self.noise = make_noise(
            config.exploration_noise, (config.n_envs, self.action_dim), config.exploration_noise_std,
            config.ou_theta, self.rng,
        )  # fmt: skip
        # The buffer holds actions in [-1, 1], the networks' range.
        unit_box = spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.buffer = ReplayBuffer(
            config.replay_buffer_size, observation_space, unit_box, gamma=config.gamma, rng=self.rng,
            observation_dtype=np.float32, n_envs=config.n_envs,
        )  # fmt: skip
        self.num_timesteps = 0
        self.n_updates = 0
        # What was collected since the last update: the episode schedule and gradient_steps=-1 read them.
        self.steps_since_update = 0
        self.episodes_since_update = 0
        self._learning_starts = config.learning_starts

    @classmethod
    def first_update_step(
        cls, config: RunConfig, start_step: int = 0, learning_starts: int | None = None
    ) -> int:
        """The first step above ``learning_starts`` at which an update falls (see :meth:`update`); with the
        episode schedule, the first step above ``learning_starts`` (it waits for episodes to end, too)."""
        assert isinstance(config, ContinuousConfig)
        after = config.learning_starts if learning_starts is None else learning_starts
        interval = config.update_interval if config.update_unit == "steps" else 1
        return first_step_after(start_step, config.n_envs, after, interval)

    @classmethod
    def check_spaces(cls, env: gym.Env) -> None:
        require_box_observations(env, cls.algo.upper())
        refuse_images(env, cls.algo.upper())
        require_continuous_actions(env, cls.algo.upper())
        require_bounded_box(env.action_space, cls.algo.upper())

    # -- what each algorithm writes ---------------------------------------------------------------------

    @abstractmethod
    def greedy_tensor(self, observations: th.Tensor) -> th.Tensor:
        """The greedy actions in [-1, 1] of a batch of observations (no gradient)."""

    @abstractmethod
    def gradient_step(self, samples: TorchReplayBufferSamples) -> dict[str, float]:
        """One gradient step on a batch; returns its metrics."""

    @abstractmethod
    def modules(self) -> dict[str, th.nn.Module | th.optim.Optimizer]:
        """The networks and optimizers to save, by name (the policy's networks first)."""

    #: Names in :meth:`modules` that acting needs (what :meth:`load_policy` restores).
    policy_modules: ClassVar[tuple[str, ...]] = ()

    # -- acting ----------------------------------------------------------------------------------------

    def _greedy_numpy(self, observations: np.ndarray) -> np.ndarray:
        with th.inference_mode():
            obs = th.as_tensor(observations, dtype=th.float32, device=self.device)
            return self.greedy_tensor(obs).cpu().numpy()

    def act(self, observations: np.ndarray, explore: bool = True) -> np.ndarray:
        if not explore:
            return self.scaler.to_env(self._greedy_numpy(observations))
        if self.num_timesteps < self._learning_starts:
            actions = self.rng.uniform(-1.0, 1.0, (len(observations), self.action_dim))
        else:
            actions = self._greedy_numpy(observations)
            if self.noise is not None:
                actions = actions + self.noise()
        return self.scaler.to_env(actions.reshape(len(observations), *self.action_shape))

    def greedy_actor(self) -> Callable[[np.ndarray], np.ndarray]:
        def act_one(observation: np.ndarray) -> np.ndarray:
            return self.scaler.to_env(self._greedy_numpy(observation[np.newaxis]))[0]

        return act_one

    # -- learning --------------------------------------------------------------------------------------

    def observe(self, transitions: Transitions) -> None:
        n = len(transitions.rewards)
        actions = self.scaler.to_network(transitions.actions).reshape(n, self.action_dim)
        self.buffer.add(
            transitions.observations, transitions.next_observations, actions, transitions.rewards,
            transitions.terminateds, transitions.truncateds,
        )  # fmt: skip
        self.num_timesteps += n
        done = transitions.terminateds | transitions.truncateds
        self.steps_since_update += n
        self.episodes_since_update += int(np.count_nonzero(done))
        if self.noise is not None:
            self.noise.reset(done)

    def update(self, step: int) -> dict[str, float] | None:
        cfg = self.config
        if cfg.update_unit == "episodes":
            n_calls = self.episodes_since_update // cfg.update_interval
            self.episodes_since_update -= n_calls * cfg.update_interval
        else:
            # With n_envs copies, the multiples of update_interval in (step - n_envs, step].
            n_calls = step // cfg.update_interval - (step - cfg.n_envs) // cfg.update_interval
        if not n_calls:
            return None
        # As SB3's collect-then-train loop: what was collected before learning starts is not trained on
        # later (with gradient_steps=-1, the first update makes as many steps as its own rollout had).
        collected, self.steps_since_update = self.steps_since_update, 0
        if step <= self._learning_starts:
            return None
        n_gradient_steps = collected if cfg.gradient_steps == -1 else n_calls * cfg.gradient_steps
        metrics = MetricSummary()
        for _ in range(n_gradient_steps):
            samples = self.buffer.sample(cfg.batch_size).to_torch(self.device)
            self.n_updates += 1
            metrics.add(self.gradient_step(samples))
        return metrics.summary()

    # -- saving ----------------------------------------------------------------------------------------

    def state_dict(self, include_buffer: bool = False) -> dict[str, Any]:
        state: dict[str, Any] = {name: module.state_dict() for name, module in self.modules().items()}
        state.update(
            num_timesteps=self.num_timesteps,
            n_updates=self.n_updates,
            steps_since_update=self.steps_since_update,
            episodes_since_update=self.episodes_since_update,
            rng=self.rng.bit_generator.state,
            noise=self.noise.state_dict() if self.noise is not None else None,
        )
        if include_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_policy(self, state: Mapping[str, Any]) -> None:
        modules = self.modules()
        for name in self.policy_modules:
            load_module(modules[name], state[name], "hidden_sizes")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, module in self.modules().items():
            load_module(module, state[name], "hidden_sizes")
        self.num_timesteps, self.n_updates = int(state["num_timesteps"]), int(state["n_updates"])
        # Checkpoints from before the episode schedule have neither count: zero is what they meant.
        self.steps_since_update = int(state.get("steps_since_update", 0))
        self.episodes_since_update = int(state.get("episodes_since_update", 0))
        self.rng.bit_generator.state = state["rng"]
        if self.noise is not None and state.get("noise") is not None:
            self.noise.load_state_dict(state["noise"])
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        else:
            self._learning_starts = self.num_timesteps + self.config.learning_starts


def q_stats(q_values: th.Tensor) -> dict[str, float]:
    """``mean_q`` and ``max_q`` of a minibatch's Q-values, for the logs, in one device-to-host copy (each
    ``float()`` of a CUDA tensor waits for the GPU: one wait per gradient step, not two)."""
    mean_q, max_q = th.stack([q_values.mean(), q_values.max()]).tolist()
    return {"mean_q": mean_q, "max_q": max_q}
