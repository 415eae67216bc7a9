"""The DQN agent: Q-network, target network, learner, replay buffer and schedules, as the run loop drives it.

What happens at each environment step, in the order of the seed's loop:

1. :meth:`DQNAgent.act`: epsilon from the schedule (linear in steps), then epsilon-greedy;
2. :meth:`DQNAgent.observe`: store the transitions; at an episode's end, the rlberry seed's exponential
   epsilon decay and, if counted in episodes, the target update;
3. :meth:`DQNAgent.update`: the target update if counted in steps (hard copy or Polyak averaging), then,
   every ``update_interval`` steps after ``learning_starts``, ``gradient_steps`` gradient steps: sample
   (uniform or prioritized, 1-step or n-step) -> TD target (Double DQN option) -> loss -> Adam -> new
   priorities.

Every variant is an option of :class:`~qiter.dqn.config.DQNConfig`, never a copy of this code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from qiter.agent import Agent, Transitions, first_step_after, multiples_in
from qiter.buffers.frames import FrameReplayBuffer, PrioritizedFrameReplayBuffer, check_fits_memory, gigabytes
from qiter.buffers.prioritized import PrioritizedReplayBuffer
from qiter.buffers.replay import ReplayBuffer
from qiter.dqn.config import DQNConfig
from qiter.dqn.core_learner import CoreLearner, supports_core
from qiter.dqn.learner import Learner, TDSettings
from qiter.dqn.networks import ConvQNetwork, QNetwork, conv_torso_for, make_q_network
from qiter.dqn.torch_learner import TorchLearner
from qiter.envs import TRAIN_CONTINUOUS_HINT, env_name, require_box_observations, require_discrete_actions
from qiter.errors import QiterError
from qiter.pixel_envs import is_image_space
from qiter.policies import epsilon_greedy, epsilon_greedy_batch
from qiter.run_config import RunConfig
from qiter.runs import load_module


def linear_schedule(initial_value: float, final_value: float, current_step: int, max_steps: int) -> float:
    """
    Linear schedule for the exploration rate (epsilon).
    Note: we clip the value so the schedule is constant after reaching the final value
    at `max_steps`.

    :param initial_value: Initial value of the schedule.
    :param final_value: Final value of the schedule.
    :param current_step: Current step of the schedule.
    :param max_steps: Maximum number of steps of the schedule.
    :return: The current value of the schedule.
    """
    # Compute current progress (in [0, 1], 0 being the start); a zero-length schedule is already done.
    progress = current_step / max_steps if max_steps > 0 else 1.0
    # Clip the progress so the schedule is constant after reaching the final value
    progress = min(progress, 1.0)
    return initial_value + progress * (final_value - initial_value)


def network_space(space: spaces.Box) -> spaces.Box:
    """The observation space as the network sees it: float32 (float64 observations are cast, as in SB3)."""
    return spaces.Box(low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32)


def network_kind(config: DQNConfig, observation_space: spaces.Box) -> str:
    """The config's ``network``, with ``auto`` chosen from the observation space (see :func:`conv_torso_for`).

    :raises QiterError: An MLP asked for images, or a CNN for vectors.
    """
    image = is_image_space(observation_space)
    shape = "x".join(map(str, observation_space.shape))
    if config.network == "auto":
        return (conv_torso_for(observation_space) or "mlp") if image else "mlp"
    if config.network == "mlp" and image:
        raise QiterError(
            f"network 'mlp' cannot take {shape} image observations (it would see a flat vector of pixels): "
            "use network auto, nature-cnn or minatar-cnn"
        )
    if config.network != "mlp" and (not image or len(observation_space.shape) != 3):
        raise QiterError(
            f"network {config.network!r} takes channel-first images (c, h, w), not observations of shape {shape}"
        )
    return config.network


def check_image_config(config: DQNConfig, observation_space: spaces.Box) -> str:
    """Check that the config can learn from these observations, before anything is made or written: the
    network (:func:`network_kind`), the learner (the numpy fast path runs MLPs and the MinAtar network) and,
    for images, that the frame memory fits the memory available.

    :return: The network kind.
    :raises QiterError: In one line, naming the setting.
    """
    kind = network_kind(config, observation_space)
    if kind == "mlp":
        return kind
    if config.backend == "numpy" and kind != "minatar-cnn":
        raise QiterError(
            f"the numpy fast path (backend 'numpy') runs MLPs and the MinAtar network; the {kind} network "
            "goes through the torch learner: use backend 'auto' or 'torch'"
        )
    if config.layer_norm:
        raise QiterError(f"layer_norm applies to MLPs, not to the {kind} network")
    size, shape, stack = frame_buffer_size(config, observation_space, kind)
    check_fits_memory(size, FrameReplayBuffer.bytes_needed(size, shape, stack, config.n_envs))
    return kind


def frame_buffer_size(
    config: DQNConfig, observation_space: spaces.Box, kind: str
) -> tuple[int, tuple[int, ...], int]:
    """The frame memory's transitions, observation shape and frames per observation: Atari's observations
    stack 4 grayscale frames (one channel each), a MinAtar grid is one frame."""
    stack = observation_space.shape[0] if kind == "nature-cnn" else 1
    size = config.replay_buffer_size - config.replay_buffer_size % config.n_envs
    return size, tuple(observation_space.shape), stack


def build_q_network(
    config: DQNConfig, observation_space: spaces.Box, action_space: spaces.Discrete
) -> QNetwork:
    """The Q-network the config describes: an MLP, or a convolutional network for images (the MinAtar
    network runs on the DQN core, the Nature CNN on the torch learner)."""
    kind = check_image_config(config, observation_space)
    if kind != "mlp":
        return ConvQNetwork(observation_space, action_space, kind, config.dueling)
    return make_q_network(
        network_space(observation_space),
        action_space,
        config.n_hidden_units,
        config.n_hidden_layers,
        config.activation,
        config.dueling,
        config.layer_norm,
    )


def make_learner(config: DQNConfig, q_net: QNetwork, q_target_net: QNetwork) -> Learner:
    """The DQN core on numpy (the CPU fast path) when it applies and is not turned off, else autograd."""
    device = th.device(config.device)
    settings = TDSettings.from_config(config)
    use_numpy = config.backend == "numpy" or (
        config.backend == "auto" and device.type == "cpu" and supports_core(q_net)
    )
    if use_numpy:
        if device.type != "cpu" or not supports_core(q_net):
            raise QiterError(
                "backend 'numpy' needs device 'cpu' and an MLP or the MinAtar network; use backend 'auto' or 'torch'"
            )
        return CoreLearner(q_net, q_target_net, settings)
    q_net.to(device)
    q_target_net.to(device)
    return TorchLearner(q_net, q_target_net, settings, device)


def make_buffer(
    config: DQNConfig, observation_space: spaces.Box, action_space: spaces.Discrete, rng: np.random.Generator
) -> ReplayBuffer:
    """The replay buffer the config asks for (uniform or prioritized, 1-step or n-step); for images, the
    frame memory (:mod:`qiter.buffers.frames`), checked against the memory available before allocation."""
    kwargs: dict[str, Any] = {
        "n_steps": config.n_steps,
        "gamma": config.gamma,
        "rng": rng,
        "observation_dtype": np.float32,
        "n_envs": config.n_envs,
    }
    kind = check_image_config(config, observation_space)
    if kind != "mlp":
        n, shape, stack = frame_buffer_size(config, observation_space, kind)
        print(
            f"replay buffer: {n} transitions, {gigabytes(FrameReplayBuffer.bytes_needed(n, shape, stack, config.n_envs))}"
        )
        kwargs.update(observation_dtype=np.uint8, stack_size=stack)
        if config.prioritized_replay:
            return PrioritizedFrameReplayBuffer(
                config.replay_buffer_size, observation_space, action_space, alpha=config.per_alpha,
                eps=config.per_eps, **kwargs,
            )  # fmt: skip
        return FrameReplayBuffer(config.replay_buffer_size, observation_space, action_space, **kwargs)
    if config.prioritized_replay:
        return PrioritizedReplayBuffer(
            config.replay_buffer_size, observation_space, action_space, alpha=config.per_alpha,
            eps=config.per_eps, **kwargs,
        )  # fmt: skip
    return ReplayBuffer(config.replay_buffer_size, observation_space, action_space, **kwargs)


#: The config keys that fix the Q-network's shape (named when a checkpoint's network does not fit).
SHAPE_KEYS = "network, n_hidden_units, n_hidden_layers, dueling"


def require_network_input(env: gym.Env) -> None:
    """Refuse images that no network of DQN takes (channels last, such as CarRacing's 96x96x3 frames), in
    one line: an MLP would only see them as a flat vector of pixels."""
    space = env.observation_space
    if isinstance(space, spaces.Box) and is_image_space(space) and conv_torso_for(space) is None:
        raise QiterError(
            f"DQN's MLP cannot take {env_name(env)}'s {'x'.join(map(str, space.shape))} image observations, and its "
            "convolutional networks take channel-first stacks (c, h, w) as the Atari and MinAtar wrappers give "
            "them (docs/pixels.md)"
        )


class DQNAgent(Agent):
    """Deep Q-Network (Mnih et al., 2015) with Double DQN, n-step returns, dueling heads, prioritized
    replay, Polyak target updates and learning-rate decay as options.

    :param config: The hyperparameters.
    :param observation_space: A Box space (flattened).
    :param action_space: A Discrete space.
    """

    algo: ClassVar[str] = "dqn"
    checkpoint_format: ClassVar[str] = "qiter-dqn-v2"
    config_class = DQNConfig
    progress_keys: ClassVar[dict[str, str]] = {"epsilon": "eps"}
    fixed_keys: ClassVar[tuple[str, ...]] = (
        "env_id", "n_envs", "n_hidden_units", "n_hidden_layers", "activation", "dueling",
        "layer_norm", "network",
    )  # fmt: skip

    def __init__(
        self, config: DQNConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__(config, observation_space, action_space)
        assert isinstance(observation_space, spaces.Box) and isinstance(action_space, spaces.Discrete)
        self.config: DQNConfig = config
        self.n_actions = int(action_space.n)
        # One generator for exploration and replay sampling, as in the seed's single global stream.
        self.rng = np.random.default_rng(config.seed)
        self.q_net = build_q_network(config, observation_space, action_space)
        self.q_target_net = copy.deepcopy(self.q_net)
        self.learner = make_learner(config, self.q_net, self.q_target_net)
        self.buffer = make_buffer(config, observation_space, action_space, self.rng)
        # Prioritized replay needs two extra calls per update: the annealed beta and the new priorities.
        self.per_buffer = self.buffer if isinstance(self.buffer, PrioritizedReplayBuffer) else None
        self.num_timesteps = 0
        self.episodes = 0
        self.exploration_rate = config.exploration_initial_eps
        self._anneal_steps = int(config.exploration_fraction * config.n_timesteps)
        self._annealing = config.exploration_schedule == "linear"
        # Learning waits for learning_starts transitions, again after a resume that restored no buffer.
        self._learning_starts = config.learning_starts
        self._steps_target = config.target_update_unit == "steps"
        self._greedy_policy = (
            self.learner.greedy if config.n_steps > 1 and config.n_step_cut == "greedy" else None
        )
        self._random_action = lambda: int(self.rng.integers(self.n_actions))

    @classmethod
    def make_env(cls, config: RunConfig, render_mode: str | None = None) -> gym.Env:
        """The config's environment; for images, the config is checked against them here, the first thing a
        run makes (before its folder), so a wrong network or a buffer too large is refused with nothing
        written."""
        env = super().make_env(config, render_mode)
        space = env.observation_space
        if isinstance(config, DQNConfig) and isinstance(space, spaces.Box) and is_image_space(space):
            try:
                check_image_config(config, space)
            except BaseException:
                env.close()
                raise
        return env

    @classmethod
    def first_update_step(
        cls, config: RunConfig, start_step: int = 0, learning_starts: int | None = None
    ) -> int:
        """The first step above ``learning_starts`` at which an ``update_interval`` falls (see :meth:`update`)."""
        assert isinstance(config, DQNConfig)
        after = config.learning_starts if learning_starts is None else learning_starts
        return first_step_after(start_step, config.n_envs, after, config.update_interval)

    @classmethod
    def budget_warnings(cls, config: RunConfig) -> list[str]:
        assert isinstance(config, DQNConfig)
        interval = config.target_network_update_interval
        if config.target_update_unit == "steps" and interval > config.n_timesteps:
            return [
                f"the target network is never updated: target_network_update_interval={interval} steps is "
                f"beyond n_timesteps={config.n_timesteps}, so every TD target comes from the initial network"
            ]
        return []

    @classmethod
    def check_spaces(cls, env: gym.Env) -> None:
        require_box_observations(env, "DQN")
        require_discrete_actions(env, "DQN", TRAIN_CONTINUOUS_HINT)
        require_network_input(env)

    # -- acting ----------------------------------------------------------------------------------------

    def act(self, observations: np.ndarray, explore: bool = True) -> np.ndarray:
        if not explore:
            return self.learner.greedy(observations)
        # Once annealed, epsilon stays at its final value: no schedule call per step after that.
        if self._annealing:
            step = self.num_timesteps + len(observations)
            cfg = self.config
            self.exploration_rate = linear_schedule(
                cfg.exploration_initial_eps, cfg.exploration_final_eps, step, self._anneal_steps
            )
            self._annealing = step <= self._anneal_steps
        if len(observations) == 1:
            # One copy: scalar draws (the seed's order of random numbers) and a matrix-vector product.
            obs = observations[0]
            action = epsilon_greedy(
                lambda: self.learner.act(obs), self._random_action, self.exploration_rate, self.rng.random
            )
            return np.array((action,))
        return epsilon_greedy_batch(
            self.learner.greedy, observations, self.exploration_rate, self.n_actions, self.rng
        )

    def greedy_actor(self) -> Callable[[np.ndarray], int]:
        return self.learner.act

    def metrics(self) -> dict[str, float]:
        return {"epsilon": self.exploration_rate, "learning_rate": self.learner.learning_rate}

    # -- learning --------------------------------------------------------------------------------------

    def observe(self, transitions: Transitions) -> None:
        if self.config.clip_rewards:  # for learning only: the loop logs the rewards the game gave
            transitions = transitions._replace(rewards=np.sign(transitions.rewards))
        self.buffer.add(*transitions)
        terminateds, truncateds = transitions.terminateds, transitions.truncateds
        if len(terminateds) == 1:  # a scalar test for one copy: this runs once per step
            self.num_timesteps += 1
            n_ended = int(bool(terminateds[0] or truncateds[0]))
        else:
            self.num_timesteps += len(terminateds)
            n_ended = int(np.count_nonzero(terminateds | truncateds))
        if not n_ended:
            return
        cfg = self.config
        for _ in range(n_ended):
            self.episodes += 1
            if cfg.exploration_schedule == "exponential":
                self.exploration_rate = self._exponential_epsilon()
            if not self._steps_target and self.episodes % cfg.target_network_update_interval == 0:
                self.learner.update_target(cfg.tau)

    def _learning_rate_at(self, step: int) -> float:
        """The learning rate at ``step``: constant, or decaying linearly to ``learning_rate_final`` over the
        part of the run after ``learning_rate_decay_start`` (a fraction of ``n_timesteps``)."""
        cfg = self.config
        if cfg.learning_rate_final is None:
            return cfg.learning_rate
        start = int(cfg.learning_rate_decay_start * cfg.n_timesteps)
        return linear_schedule(
            cfg.learning_rate, cfg.learning_rate_final, max(step - start, 0), cfg.n_timesteps - start
        )

    def _exponential_epsilon(self) -> float:
        """The rlberry seed's schedule: decays per episode towards the final value."""
        eps0, eps_min = self.config.exploration_initial_eps, self.config.exploration_final_eps
        return eps_min + (eps0 - eps_min) * math.exp(-self.episodes / self.config.exploration_decay_episodes)

    def update(self, step: int) -> dict[str, float] | None:
        cfg = self.config
        n_envs = cfg.n_envs
        # Intervals are in environment steps: with n_envs copies, count the multiples of an interval in
        # (step - n_envs, step]. As in the seed, the target update is checked before the gradient step.
        if self._steps_target and multiples_in(step, n_envs, cfg.target_network_update_interval):
            self.learner.update_target(cfg.tau)
        if step <= self._learning_starts:
            return None
        n_calls = multiples_in(step, n_envs, cfg.update_interval)
        if not n_calls:
            return None
        if cfg.learning_rate_final is not None:
            self.learner.learning_rate = self._learning_rate_at(step)
        per_buffer = self.per_buffer
        if per_buffer is not None:
            per_buffer.beta = linear_schedule(cfg.per_beta_initial, cfg.per_beta_final, step, cfg.n_timesteps)
        loss_sum, q_sum, max_q = 0.0, 0.0, -math.inf
        n_updates = n_calls * cfg.gradient_steps
        for _ in range(n_updates):
            samples = self.buffer.sample(cfg.batch_size, self._greedy_policy)
            result = self.learner.update(samples)
            if per_buffer is not None:
                assert samples.indices is not None
                per_buffer.update_priorities(samples.indices, result.td_errors)
            loss_sum += result.loss
            q_sum += result.mean_q
            max_q = max(max_q, result.max_q)
        return {"loss": loss_sum / n_updates, "mean_q": q_sum / n_updates, "max_q": max_q}

    # -- saving ----------------------------------------------------------------------------------------

    def state_dict(self, include_buffer: bool = False) -> dict[str, Any]:
        state: dict[str, Any] = {
            "q_net": self.q_net.state_dict(),
            "q_target_net": self.q_target_net.state_dict(),
            "optimizer": self.learner.optimizer_state(),
            "num_timesteps": self.num_timesteps,
            "episodes": self.episodes,
            "exploration_rate": self.exploration_rate,
            "rng": self.rng.bit_generator.state,
        }
        if include_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_policy(self, state: Mapping[str, Any]) -> None:
        load_module(self.q_net, state["q_net"], SHAPE_KEYS)
        self.q_net.eval()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_module(self.q_net, state["q_net"], SHAPE_KEYS)
        load_module(self.q_target_net, state["q_target_net"], SHAPE_KEYS)
        self.learner.load_optimizer_state(state["optimizer"])
        self.num_timesteps, self.episodes = int(state["num_timesteps"]), int(state["episodes"])
        self.rng.bit_generator.state = state["rng"]
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
        else:
            self._learning_starts = self.num_timesteps + self.config.learning_starts
        # The config may have changed on resume (a new learning rate or epsilon schedule): the schedules
        # continue from the restored counters under the new values, not the saved ones.
        cfg = self.config
        self.learner.learning_rate = self._learning_rate_at(self.num_timesteps)
        if cfg.exploration_schedule == "linear":
            self.exploration_rate = linear_schedule(
                cfg.exploration_initial_eps, cfg.exploration_final_eps, self.num_timesteps, self._anneal_steps
            )
            self._annealing = self.num_timesteps <= self._anneal_steps
        else:
            self.exploration_rate = self._exponential_epsilon()
