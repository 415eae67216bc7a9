"""The agent contract: what an algorithm gives the run loop, and how a trained agent is used from Python.

An algorithm is an :class:`Agent`: it acts on a batch of observations (one per environment copy), observes
the transitions that followed, learns in :meth:`Agent.update`, and saves and restores its whole state. The
run loop (:mod:`qiter.run_loop`) owns everything else: environments, seeding, logs, evaluation,
checkpoints, resume, early stop. A new algorithm is a config dataclass that inherits
:class:`~qiter.run_config.RunConfig`, an :class:`Agent` subclass, and one line in :data:`ALGORITHMS`.

:func:`load_agent` reads any run folder or checkpoint back as a :class:`TrainedAgent`, whose
:meth:`~TrainedAgent.predict` and :meth:`~TrainedAgent.evaluate` are the public way to use it.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qiter.errors import QiterError
from qiter.run_config import RunConfig

__all__ = [
    "ALGORITHMS",
    "Agent",
    "Evaluation",
    "TrainedAgent",
    "Transitions",
    "agent_class",
    "check_budget",
    "first_step_after",
    "load_agent",
    "multiples_in",
]

# Algorithm name -> "module:AgentClass", imported only when used (torch and friends load slowly).
ALGORITHMS: dict[str, str] = {
    "dqn": "qiter.dqn.agent:DQNAgent",
    "dqn-discretized": "qiter.continuous.discretized:DiscretizedDQNAgent",
    "td3": "qiter.continuous.ddpg:TD3Agent",
    "ddpg": "qiter.continuous.ddpg:DDPGAgent",
    "naf": "qiter.continuous.naf:NAFAgent",
    "cem": "qiter.continuous.sampled_max:CEMAgent",
}


class Transitions(NamedTuple):
    """One step of every environment copy, each field with a leading axis of ``n_envs``.

    ``next_observations`` holds the observation the action led to, also at an episode's end (the final
    observation, not the first one of the next episode).
    """

    observations: np.ndarray
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminateds: np.ndarray
    truncateds: np.ndarray


class MetricSummary:
    """Summarizes the metrics of many gradient steps: the mean of each, the maximum of a ``max_`` one."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        """Take in the metrics of one step (or of one call of :meth:`Agent.update`)."""
        totals = self.totals
        for key, value in metrics.items():
            if key.startswith("max_"):
                totals[key] = max(totals.get(key, -math.inf), value)
            else:
                totals[key] = totals.get(key, 0.0) + value
        self.count += 1

    def summary(self) -> dict[str, float]:
        """The summary of what was added since the last :meth:`clear`."""
        n = max(self.count, 1)
        return {k: v if k.startswith("max_") else v / n for k, v in self.totals.items()}

    def clear(self) -> None:
        """Start a new summary."""
        self.totals.clear()
        self.count = 0


class Agent(ABC):
    """An algorithm, as the run loop drives it.

    :param config: The run's config (the algorithm's own dataclass, a :class:`RunConfig`).
    :param observation_space: The (flattened) observation space of one environment copy.
    :param action_space: The action space of one environment copy.
    """

    #: Name of the algorithm (a key of :data:`ALGORITHMS`, and the prefix of run folder names).
    algo: ClassVar[str]
    #: The layout of this agent's checkpoints; a checkpoint of another format is refused with a clear line.
    checkpoint_format: ClassVar[str]
    #: The config class this agent reads.
    config_class: ClassVar[type[RunConfig]]
    #: Schedule values of :meth:`metrics` shown on the progress bar, with their short labels.
    progress_keys: ClassVar[dict[str, str]] = {}
    #: Config keys that fix the shape of what is saved (networks, buffers): a resume may not change them.
    fixed_keys: ClassVar[tuple[str, ...]] = ("env_id", "n_envs")

    def __init__(
        self, config: RunConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        self.config = config
        self.observation_space = observation_space
        self.action_space = action_space

    @classmethod
    def make_env(cls, config: RunConfig, render_mode: str | None = None) -> gym.Env:
        """The environment as this agent sees it (default: ``config.env_id`` made with ``config.env_kwargs``,
        observations flattened).

        An agent that needs a view of the task (discretized actions) overrides this; the run loop, the
        evaluation and :func:`load_agent` all make environments through it.
        """
        from qiter.envs import make_env

        return make_env(config.env_id, render_mode=render_mode, flatten=True, **config.env_kwargs)

    @classmethod
    def build(cls, config: RunConfig) -> Agent:
        """An agent for ``config``, on the spaces of its environment (checked by :meth:`check_spaces`)."""
        env = cls.make_env(config)
        try:
            cls.check_spaces(env)
            return cls(config, env.observation_space, env.action_space)
        finally:
            env.close()

    @classmethod
    def first_update_step(
        cls, config: RunConfig, start_step: int = 0, learning_starts: int | None = None
    ) -> int | None:
        """The environment step of the first gradient step of a run of ``config`` (at the earliest, when it
        depends on how episodes end), or ``None`` when the agent cannot say before the run.

        :param config: The run's config.
        :param start_step: The step the run starts from (a resume's checkpoint).
        :param learning_starts: When learning may start, if not at ``config``'s ``learning_starts`` (a
            resume without its replay buffer waits ``learning_starts`` steps more).
        """
        return None

    @classmethod
    def budget_warnings(cls, config: RunConfig) -> list[str]:
        """What the run's budget leaves undone although the agent learns (one sentence each), e.g. a target
        network that is never updated. Default: nothing."""
        return []

    @classmethod
    @abstractmethod
    def check_spaces(cls, env: gym.Env) -> None:
        """Raise a one-line :class:`QiterError` if this algorithm cannot run on ``env``'s spaces."""

    @abstractmethod
    def act(self, observations: np.ndarray, explore: bool = True) -> np.ndarray:
        """Actions for a batch of observations.

        :param observations: Shape ``(n_envs, *obs_shape)``.
        :param explore: Use the behaviour policy (epsilon-greedy, noise); ``False``: the greedy policy.
        :return: One action per row.
        """

    @abstractmethod
    def observe(self, transitions: Transitions) -> None:
        """Take in the transitions of one step of every environment copy (store, count episodes...)."""

    @abstractmethod
    def update(self, step: int) -> dict[str, float] | None:
        """Learn what is due at environment step ``step``.

        :return: Metrics of the gradient steps made (averaged over them; a ``max_`` metric is their
            maximum), or ``None`` when none was made. The run loop stops the run if one of them is NaN or
            infinite. ``mean_q`` (mean Q(s, a) of the minibatches) is checked against the config's
            :meth:`~qiter.run_config.RunConfig.q_value_bound`.
        """

    def metrics(self) -> dict[str, float]:
        """The agent's current schedule values (exploration rate, learning rate...) for the logs."""
        return {}

    @abstractmethod
    def greedy_actor(self) -> Callable[[np.ndarray], Any]:
        """A fast function from one observation to its greedy action (for evaluation)."""

    @abstractmethod
    def state_dict(self, include_buffer: bool = False) -> dict[str, Any]:
        """Everything needed to continue training: networks, optimizer, counters, random streams and,
        when asked, the replay buffer (tensors, numpy arrays, numbers, strings, lists and dicts only)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a buffer only when it holds one)."""

    def load_policy(self, state: Mapping[str, Any]) -> None:
        """Restore only what acting needs (the networks) from :meth:`state_dict`'s output.

        The default restores everything; agents override it so that loading for evaluation is cheap.
        """
        self.load_state_dict(state)

    @classmethod
    def check_format(cls, state: Mapping[str, Any], path: str | Path) -> None:
        """Refuse a checkpoint written in another layout than this agent's, with one clear line."""
        if state.get("format") != cls.checkpoint_format:
            raise QiterError(
                f"{path} is a {state.get('format')!r} checkpoint; this version of qiter reads "
                f"{cls.checkpoint_format!r} for {cls.algo}"
            )

    @staticmethod
    def has_buffer(state: Mapping[str, Any]) -> bool:
        """Whether a saved agent state holds its replay buffer."""
        return "buffer" in state


def multiples_in(step: Any, n_steps: int, interval: Any) -> Any:
    """How many multiples of ``interval`` lie in ``(step - n_steps, step]``: the updates an interval schedule
    owes a loop that just advanced ``n_steps`` steps to ``step`` (integers, or arrays of them elementwise).

    :param step: The steps done so far.
    :param n_steps: Steps advanced since the last look (``n_envs``, or finished episodes).
    :param interval: Steps between two points of the schedule.
    """
    return step // interval - (step - n_steps) // interval


def first_step_after(start: int, n_envs: int, after: int, interval: int) -> int:
    """The first step a loop that advances ``n_envs`` steps at a time from ``start`` reaches with
    ``step > after`` and a multiple of ``interval`` in ``(step - n_envs, step]`` (an update schedule in steps).

    :param start: The step the loop starts from.
    :param n_envs: Steps per loop iteration.
    :param after: Updates happen only at steps above this (``learning_starts``).
    :param interval: Steps between updates.
    """
    step = start + n_envs
    if step <= after:
        step = start + ((after - start) // n_envs + 1) * n_envs
    while not multiples_in(step, n_envs, interval):
        step += n_envs
    return step


def check_budget(
    agent_cls: type[Agent],
    config: RunConfig,
    start_step: int = 0,
    learning_starts: int | None = None,
    budget_flag: str = "--steps",
) -> None:
    """Say, before any work, when the run's budget is too small for the agent to learn.

    :param agent_cls: The algorithm.
    :param config: The run's config (``n_timesteps`` is the budget).
    :param start_step: The step the run starts from (a resume's checkpoint).
    :param learning_starts: See :meth:`Agent.first_update_step`.
    :param budget_flag: The command's flag for the budget, named in the message.
    :raises QiterError: No gradient step at all would happen within ``n_timesteps``.
    :warns QiterWarning: The agent learns, but the budget leaves something undone
        (:meth:`Agent.budget_warnings`).
    """
    import warnings

    from qiter.errors import QiterWarning

    if start_step >= config.n_timesteps:
        return  # no step left to train (a resume that only finishes the final evaluation)
    first = agent_cls.first_update_step(config, start_step, learning_starts)
    if first is not None and first > config.n_timesteps:
        starts = getattr(config, "learning_starts", 0)
        wait = (
            f"learning waits for learning_starts={starts} steps"
            if learning_starts is None or learning_starts == starts
            else f"learning waits until step {learning_starts}, learning_starts={starts} new steps of a replay "
            "buffer the checkpoint does not hold"
        )
        interval = getattr(config, "update_interval", 1)
        unit = getattr(config, "update_unit", "steps")
        raise QiterError(
            f"nothing would be learned: {agent_cls.algo}'s first gradient step comes at step {first} ({wait}, "
            f"then update_interval={interval} {unit}), after the budget of n_timesteps={config.n_timesteps}; "
            f"raise it ({budget_flag}) or lower learning_starts"
        )
    for message in agent_cls.budget_warnings(config):
        # Attributed to this line, so that Python shows it once though the CLI and the loop both check.
        warnings.warn(message, QiterWarning, stacklevel=1)


def agent_class(algo: str) -> type[Agent]:
    """The agent class of an algorithm name.

    :raises QiterError: An unknown name (the message lists the known ones).
    """
    if algo not in ALGORITHMS:
        raise QiterError(f"unknown algorithm {algo!r}; known: {', '.join(sorted(ALGORITHMS))}")
    module, name = ALGORITHMS[algo].split(":")
    cls: type[Agent] = getattr(importlib.import_module(module), name)
    return cls


# ---------------------------------------------------------------------------------------------------------
# Using a trained agent
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """Returns of full evaluation episodes."""

    returns: np.ndarray

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def std_return(self) -> float:
        return float(self.returns.std())

    def __str__(self) -> str:
        return f"{self.mean_return:.2f} +/- {self.std_return:.2f} over {len(self.returns)} episodes"


class TrainedAgent:
    """A trained agent loaded for use: greedy actions and evaluation.

    :param agent: The agent, with its networks restored.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        self._act_one = agent.greedy_actor()

    @property
    def algo(self) -> str:
        return self.agent.algo

    def predict(self, observation: np.ndarray) -> Any:
        """The greedy action of one observation, or an array of actions for a batch of them.

        :param observation: One observation (the environment's shape) or a batch (one more leading axis).
        """
        obs = np.asarray(observation)
        shape = self.agent.observation_space.shape
        if shape is not None and obs.shape == tuple(shape):
            return self._act_one(obs)
        if shape is not None and obs.shape[1:] == tuple(shape):
            return self.agent.act(obs, explore=False)
        raise QiterError(f"observation of shape {obs.shape} does not fit the agent's {tuple(shape or ())}")

    def check_exploration_rate(self, exploration_rate: float, name: str = "exploration_rate") -> None:
        """Refuse a rate outside [0, 1], or any exploration for an agent whose actions are not discrete.

        :param exploration_rate: The probability of a random action.
        :param name: How the message names it (the CLI's ``--epsilon``).
        """
        if not 0.0 <= exploration_rate <= 1.0:
            raise QiterError(f"{name} must be in [0, 1] (a probability), got {exploration_rate}")
        if exploration_rate > 0 and not isinstance(self.agent.action_space, spaces.Discrete):
            raise QiterError(
                f"{name} is epsilon-greedy exploration, for discrete actions; this {self.algo} agent acts on "
                f"{self.agent.action_space} (evaluate it greedily, without {name})"
            )

    def evaluate(
        self,
        env: gym.Env | str | None = None,
        n_episodes: int = 10,
        seed: int = 0,
        video_folder: str | Path | None = None,
        exploration_rate: float = 0.0,
        video_name: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> Evaluation:
        """Play ``n_episodes`` full episodes with the greedy policy.

        :param env: An environment, an env id, or ``None`` for the one the agent was trained on.
        :param n_episodes: Number of episodes.
        :param seed: Seed of the first reset and of the exploration.
        :param video_folder: Record the episodes to an mp4 in this folder.
        :param exploration_rate: Probability of a random action instead of the greedy one.
        :param video_name: The mp4's name (default ``<algo>-<env_id>``).
        :param env_kwargs: Keyword arguments of ``gymnasium.make`` over the run's own ``env_kwargs`` (when
            ``env`` is not an environment).
        """
        from qiter.config import MAX_SEED, seed_ok
        from qiter.evaluation import run_episodes

        if n_episodes < 1:
            raise QiterError(f"n_episodes must be at least 1, got {n_episodes}")
        if not seed_ok(seed):
            raise QiterError(f"seed must be in [0, {MAX_SEED}], got {seed}")
        self.check_exploration_rate(exploration_rate)
        render = "rgb_array" if video_folder is not None else None
        own = not isinstance(env, gym.Env)
        if isinstance(env, gym.Env):
            play_env = env
        else:
            config = self.config if env is None else dataclasses.replace(self.config, env_id=env)
            if env_kwargs:
                config = dataclasses.replace(config, env_kwargs={**config.env_kwargs, **env_kwargs})
                config.validate()
            play_env = self.agent.make_env(config, render_mode=render)
        try:
            returns = run_episodes(
                play_env, self._act_one, n_episodes, exploration_rate, np.random.default_rng(seed), seed=seed,
                video_name=(video_name or f"{self.algo}-{self.config.env_id}") if video_folder is not None else None,
                video_folder=video_folder if video_folder is not None else ".",
            )  # fmt: skip
        finally:
            if own:
                play_env.close()
        return Evaluation(returns)


def load_agent(path: str | Path) -> TrainedAgent:
    """Load a trained agent of any algorithm from a run folder (its latest checkpoint) or a checkpoint.

    :param path: A run folder or a ``.pt`` checkpoint.
    :return: The agent, ready for :meth:`TrainedAgent.predict` and :meth:`TrainedAgent.evaluate`.
    :raises QiterError: A missing path, a folder without checkpoint, an unreadable or foreign file.
    """
    from qiter import runs
    from qiter.config import config_from_dict

    checkpoint = runs.resolve_checkpoint(path)
    state = runs.load_checkpoint(checkpoint)
    if state.get("algo") == "population":
        raise QiterError(
            f"{checkpoint} holds a whole population, not one agent: `qiter population ... --save-best` writes "
            f"its best agent to {Path(path) if Path(path).is_dir() else 'RUN_DIR'}/best.pt, which `qiter eval` reads"
        )
    if Path(path).is_dir():
        runs.check_checkpoint_of_run(path, checkpoint, state)
    cls = agent_class(str(state.get("algo", "")))
    cls.check_format(state, path)
    config = config_from_dict(cls.config_class, state["config"], f"the config in {path}")
    agent = cls.build(config)
    agent.load_policy(state["agent"])
    return TrainedAgent(agent)
