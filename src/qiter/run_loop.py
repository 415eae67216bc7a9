"""The generic run loop: everything a training run needs besides the algorithm.

:func:`train` drives any :class:`~qiter.agent.Agent` through its run, CleanRL-style from top to bottom:
seeding, environments (one, or ``n_envs`` copies through a gymnasium vector env), episode bookkeeping, CSV
and TensorBoard logs, the progress bar, periodic evaluation, best and latest checkpoints, resume, the
divergence check, early stop, the final evaluation and the whole run folder. What any training loop does
around its steps (the folder, logs, events, checks, checkpoints, signals) is
:class:`~qiter.lifecycle.RunLifecycle`'s, shared with the population loop. It emits events
(:class:`RunEvents`) after each episode, after each evaluation and before each checkpoint, for tools that
follow a run (an Optuna pruner, a sweep's progress display).

One environment step of every copy::

    actions = agent.act(observations, explore=True)
    transitions, finished_episodes = envs.step(actions)     # final observations kept apart from resets
    agent.observe(transitions)                              # replay buffer, episode-based schedules
    metrics = agent.update(step)                            # gradient steps and target updates due now
    then: logs, evaluation, checkpoints, when due
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from threadpoolctl import threadpool_limits

from qiter.agent import Agent, Evaluation, MetricSummary, Transitions, check_budget
from qiter.config import config_to_dict
from qiter.errors import QiterError, QiterWarning
from qiter.evaluation import run_episodes
from qiter.lifecycle import DivergenceError, Every, QValueWatch, RunEvents, RunLifecycle, check_finite
from qiter.run_config import RunConfig

__all__ = [
    "DivergenceError",
    "QValueWatch",
    "RunEvents",
    "RunState",
    "TrainResult",
    "check_env",
    "checkpoint_state",
    "make_envs",
    "train",
]

LOG_INTERVAL = 1000
# Evaluation and final-evaluation episodes draw from streams of their own, so that evaluating (or not)
# never changes the training run.
EVAL_SEED_OFFSET = 1_000_003
FINAL_EVAL_SEED_OFFSET = 10_000


@dataclass
class TrainResult:
    """What a training run returns."""

    agent: Agent
    run_dir: Path | None
    steps: int
    episodes: int
    wall_time: float
    steps_per_second: float
    eval_history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    final_evaluation: Evaluation | None = None

    @property
    def final_eval(self) -> tuple[float, float] | None:
        """Mean and std of the last periodic evaluation, if any."""
        if not self.eval_history:
            return None
        last = self.eval_history[-1]
        return last["mean_return"], last["std_return"]


# ---------------------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------------------


class SingleEnv:
    """One environment behind the batched interface of the loop, without a vector env's per-step cost.

    Keeps the current observations and each copy's running episode return and length, so the loop reads
    finished episodes off :meth:`step`.

    :param env: The environment.
    """

    n_envs = 1

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.observation_space, self.action_space = env.observation_space, env.action_space
        # A Python int for a Discrete space: gymnasium checks a numpy integer's dtype at every step.
        self._discrete = isinstance(env.action_space, gym.spaces.Discrete)
        self.observations = np.empty(0)
        self._return, self._length = 0.0, 0
        # Reused each step (the agent copies what it keeps in observe): three allocations fewer per step.
        self._rewards = np.zeros(1)
        self._terminateds = np.zeros(1, dtype=bool)
        self._truncateds = np.zeros(1, dtype=bool)

    def reset(self, seed: int | None) -> None:
        """Reset the copy (seeded with ``seed``)."""
        obs, _ = self.env.reset(seed=seed)
        self.observations = np.asarray(obs)[np.newaxis]
        self._return, self._length = 0.0, 0

    def step(self, actions: np.ndarray) -> tuple[Transitions, list[tuple[float, int]]]:
        """Step with ``actions`` (one row); return the transitions (valid until the next step) and the
        episodes that ended, as ``(return, length)``."""
        next_obs, reward, terminated, truncated, _ = self.env.step(
            actions.item() if self._discrete else actions[0]
        )
        self._return += float(reward)
        self._length += 1
        self._rewards[0], self._terminateds[0], self._truncateds[0] = reward, terminated, truncated
        transitions = Transitions(
            self.observations, next_obs[np.newaxis], actions, self._rewards, self._terminateds,
            self._truncateds,
        )  # fmt: skip
        if terminated or truncated:
            finished = [(self._return, self._length)]
            obs, _ = self.env.reset()
            self.observations = np.asarray(obs)[np.newaxis]
            self._return, self._length = 0.0, 0
            return transitions, finished
        self.observations = transitions.next_observations
        return transitions, []

    def close(self) -> None:
        self.env.close()


class VectorEnvs:
    """``n_envs`` copies in a gymnasium ``SyncVectorEnv`` that resets finished copies in the same step.

    :param make: Makes one copy.
    :param n_envs: Number of copies.
    """

    def __init__(self, make: Callable[[], gym.Env], n_envs: int) -> None:
        self.n_envs = n_envs
        self.env = gym.vector.SyncVectorEnv(
            [make] * n_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self.observations = np.empty(0)
        self._returns = np.zeros(n_envs)
        self._lengths = np.zeros(n_envs, dtype=np.int64)

    def reset(self, seed: int | None) -> None:
        """Reset every copy (copy ``i`` seeded with ``seed + i``)."""
        self.observations, _ = self.env.reset(seed=seed)
        self._returns[:] = 0.0
        self._lengths[:] = 0

    def step(self, actions: np.ndarray) -> tuple[Transitions, list[tuple[float, int]]]:
        """Step every copy; a finished copy's transition keeps its final observation."""
        obs, rewards, terminateds, truncateds, infos = self.env.step(actions)
        self._returns += rewards
        self._lengths += 1
        next_obs = obs
        finished: list[tuple[float, int]] = []
        dones = terminateds | truncateds
        if dones.any():
            # obs holds the first observation of the next episode where a copy was reset.
            next_obs = obs.copy()
            for i in np.flatnonzero(dones):
                next_obs[i] = infos["final_obs"][i]
                finished.append((float(self._returns[i]), int(self._lengths[i])))
            self._returns[dones] = 0.0
            self._lengths[dones] = 0
        transitions = Transitions(self.observations, next_obs, actions, rewards, terminateds, truncateds)
        self.observations = obs
        return transitions, finished

    def close(self) -> None:
        self.env.close()


def make_envs(config: RunConfig, agent_cls: type[Agent]) -> tuple[SingleEnv | VectorEnvs, gym.Env]:
    """The training environments and the evaluation environment, checked for what the agent supports."""
    env = agent_cls.make_env(config)
    try:
        agent_cls.check_spaces(env)
        eval_env = agent_cls.make_env(config)
    except BaseException:
        env.close()
        raise
    if config.n_envs == 1:
        return SingleEnv(env), eval_env
    env.close()
    return VectorEnvs(lambda: agent_cls.make_env(config), config.n_envs), eval_env


def check_env(config: RunConfig, agent_cls: type[Agent]) -> None:
    """Raise a one-line error now if the config's environment cannot be made or does not fit the agent."""
    envs, eval_env = make_envs(config, agent_cls)
    envs.close()
    eval_env.close()


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """The loop's counters: what a checkpoint keeps beside the agent, and what the run reports."""

    step: int = 0
    episodes: int = 0
    eval_history: list[dict[str, float]] = field(default_factory=list)
    last_return: float = math.nan  # of the last finished episode (the progress bar's)
    stopped_early: bool = False

    @property
    def best_mean(self) -> float:
        """The best periodic evaluation so far (what ``best.pt`` holds)."""
        return max((e["mean_return"] for e in self.eval_history), default=-math.inf)


def train(
    agent_cls: type[Agent],
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: int = 1,
    tensorboard: bool = True,
    events: Sequence[RunEvents] = (),
    final_eval_episodes: int | None = None,
    video: bool = False,
) -> TrainResult:
    """Train an agent of class ``agent_cls`` with ``config``.

    The stages: :func:`_start` (seeding, run folder, agent, resume, logs), :class:`_Loop` (the steps, with
    logs, evaluations and checkpoints when due), the last checkpoint, then :func:`_finish` (the final
    evaluation and ``eval.json``). The run folder, logs, events, checks and checkpoints are
    :class:`~qiter.lifecycle.RunLifecycle`'s, shared with the population loop.

    On SIGINT or SIGTERM (with a run folder) the run finishes its step, writes ``latest.pt`` and raises
    :class:`~qiter.errors.RunInterrupted`.

    :param agent_cls: The algorithm (an :class:`~qiter.agent.Agent` subclass).
    :param config: Its config (a :class:`~qiter.run_config.RunConfig`).
    :param run_dir: Folder for config, logs, checkpoints and evaluation results; ``None`` writes nothing.
    :param resume: Continue from the latest checkpoint in ``run_dir``; ``config`` may change what does not
        fix the shape of the saved state (see ``Agent.fixed_keys``).
    :param overwrite: Replace a run already in ``run_dir`` (otherwise refused).
    :param progress: Show a progress bar.
    :param verbose: 1 prints evaluations, 0 prints nothing.
    :param tensorboard: Also write TensorBoard scalars (when ``run_dir`` is set).
    :param events: Callbacks after episodes and evaluations and before checkpoints.
    :param final_eval_episodes: Episodes of the final greedy evaluation written to ``eval.json``; default:
        ``n_eval_episodes`` when ``run_dir`` is set, else none; 0: none.
    :param video: Record the final evaluation to ``run_dir/videos``.
    :return: The trained agent and a summary of the run.
    :raises RunInterrupted: After saving, when a signal stopped the run.
    """
    config.validate()
    if resume and run_dir is None:
        raise QiterError("resume needs the run folder to resume")
    if not resume:  # a resume is checked once its checkpoint says where it starts (_resume)
        check_budget(agent_cls, config)
    life = RunLifecycle(run_dir, events=events, tensorboard=tensorboard, verbose=verbose)
    th.manual_seed(config.seed)
    np.random.seed(config.seed)
    # The environments first: a wrong id or space fails before anything is written.
    envs, eval_env = make_envs(config, agent_cls)
    try:
        agent, state = _start(agent_cls, config, envs, eval_env, life, resume, overwrite)
    except BaseException:
        envs.close()
        eval_env.close()
        raise
    loop = _Loop(agent, config, envs, eval_env, life, state)
    start_step = state.step
    start_time = time.perf_counter()
    try:
        loop.run(progress)
    finally:
        life.close(state.step)
        envs.close()
        eval_env.close()
    wall_time = time.perf_counter() - start_time
    life.checkpoint("latest.pt", state.step, lambda: checkpoint_state(agent, config, state))
    life.raise_if_interrupted(state.step, f"qiter train --resume {life.run_path}")
    result = TrainResult(
        agent=agent,
        run_dir=life.run_path,
        steps=state.step,
        episodes=state.episodes,
        wall_time=wall_time,
        steps_per_second=(state.step - start_step) / max(wall_time, 1e-9),
        eval_history=state.eval_history,
        stopped_early=state.stopped_early,
    )
    _finish(result, config, life, final_eval_episodes, video)
    return result


def _start(
    agent_cls: type[Agent],
    config: RunConfig,
    envs: SingleEnv | VectorEnvs,
    eval_env: gym.Env,
    life: RunLifecycle,
    resume: bool,
    overwrite: bool,
) -> tuple[Agent, RunState]:
    """Claim the run folder, make the agent, restore it and the counters on resume, open the logs."""
    life.claim(resume, overwrite)
    eval_env.action_space.seed(config.seed)
    agent = agent_cls(config, envs.observation_space, envs.action_space)
    state = RunState()
    if life.run_path is not None:
        if resume:
            state = _resume(agent, config, life)
        # On resume, TensorBoard hides what was logged after the checkpoint, and the CSVs are cut there.
        life.open(config_to_dict(config), state.step if resume else None)
    return agent, state


def checkpoint_state(agent: Agent, config: RunConfig, state: RunState) -> dict[str, Any]:
    """What a single agent's checkpoint holds: the agent, the config, the counters, torch's generator."""
    return {
        "format": agent.checkpoint_format,
        "algo": agent.algo,
        "config": config_to_dict(config),
        "step": state.step,
        "episodes": state.episodes,
        "eval_history": state.eval_history,
        "torch_rng": th.get_rng_state(),
        "agent": agent.state_dict(include_buffer=config.save_buffer),
    }


class _Loop:
    """The steps of a single-agent run, with what is due between them (logs, evaluations, checkpoints).

    One environment step of every copy, then, when due: the episodes that ended, the divergence check, a
    log row (and the Q-value bound check), an evaluation (``best.pt``, early stop), ``latest.pt``.
    """

    def __init__(
        self,
        agent: Agent,
        config: RunConfig,
        envs: SingleEnv | VectorEnvs,
        eval_env: gym.Env,
        life: RunLifecycle,
        state: RunState,
    ) -> None:
        self.agent, self.config, self.envs, self.eval_env, self.life, self.state = (
            agent, config, envs, eval_env, life, state
        )  # fmt: skip
        step = state.step
        # Intervals are counted in environment steps; with n_envs copies the loop advances n_envs at a time.
        self.log_due = Every(LOG_INTERVAL, step)
        self.eval_due = Every(config.evaluation_interval, step)
        self.checkpoint_due = Every(
            config.checkpoint_interval or config.evaluation_interval or config.n_timesteps, step
        )
        self.eval_rng = np.random.default_rng(config.seed + EVAL_SEED_OFFSET)
        self.metric_summary = MetricSummary()
        q_bound = config.q_value_bound()
        self.q_watch = QValueWatch(q_bound) if q_bound is not None else None
        self.interval_time, self.interval_step = time.perf_counter(), step

    def run(self, progress: bool) -> None:
        """Step until ``n_timesteps``, an early stop or a signal (which ends the step first)."""
        agent, envs, config, life, state = self.agent, self.envs, self.config, self.life, self.state
        # Resume starts fresh episodes: the environments' inner state cannot be saved in general.
        envs.reset(seed=config.seed + state.step)
        self.eval_env.reset(seed=config.seed + EVAL_SEED_OFFSET + state.step)
        if progress:
            life.start_bar(config.n_timesteps, state.step, config.env_id)
        self.interval_time = time.perf_counter()
        # A diverging run overflows before the divergence check reports it: no numpy warnings on the way
        # there. One BLAS thread: the matrices of an RL update are small, and BLAS worker threads that must
        # share their cores with anything else (the environment, another run) made a 256-unit update 13x
        # slower.
        with (
            np.errstate(over="ignore", invalid="ignore"),
            threadpool_limits(1, user_api="blas"),
            life.guard_signals() as signals,
        ):
            act, env_step, observe, update = agent.act, envs.step, agent.observe, agent.update
            step, n_envs, summary = state.step, envs.n_envs, self.metric_summary
            next_point = self.next_point()  # one comparison per step instead of one per schedule
            while step < config.n_timesteps and signals.signum is None:
                actions = act(envs.observations, True)
                transitions, finished = env_step(actions)
                step += n_envs
                state.step = step
                if finished:
                    self.episodes_ended(finished)
                observe(transitions)
                metrics = update(step)
                if metrics is not None:
                    check_finite(step, metrics, run_path=life.run_path)
                    summary.add(metrics)
                if step >= next_point:
                    if self.points_due():
                        state.stopped_early = True
                        break
                    next_point = self.next_point()

    def next_point(self) -> float:
        """The next step at which a log row, an evaluation or a checkpoint is due."""
        return min(self.log_due.next, self.eval_due.next, self.checkpoint_due.next)

    def points_due(self) -> bool:
        """What is due at this step, in order: a log row, an evaluation, a checkpoint; whether to stop."""
        step = self.state.step
        if self.log_due.due(step):
            self.log_interval()
        if self.eval_due.due(step) and self.evaluate():
            return True
        if self.checkpoint_due.due(step):
            agent, config, state = self.agent, self.config, self.state
            self.life.checkpoint("latest.pt", step, lambda: checkpoint_state(agent, config, state))
        return False

    def episodes_ended(self, finished: list[tuple[float, int]]) -> None:
        """Count the episodes that ended at this step, log them, tell the events."""
        state, life = self.state, self.life
        for episode_return, episode_length in finished:
            state.episodes += 1
            state.last_return = episode_return
            if life.logger is not None or life.events:  # the row only where it goes (a file, a tracker)
                row = {"return": episode_return, "length": episode_length, **self.agent.metrics()}
                life.log("episodes", state.step, row)
            life.episode(state.step, episode_return, episode_length)

    def log_interval(self) -> None:
        """A ``train.csv`` row of the updates since the last one, the Q-value bound check, the progress bar."""
        state, life, step = self.state, self.life, self.state.step
        now = time.perf_counter()
        sps = (step - self.interval_step) / max(now - self.interval_time, 1e-9)
        self.interval_time, self.interval_step = now, step
        schedules = self.agent.metrics()
        if self.metric_summary.count > 0:
            row = self.metric_summary.summary()
            life.log("train", step, {**row, **schedules, "steps_per_second": sps})
            if self.q_watch is not None:
                self.q_watch.check(step, row.get("mean_q"))
        self.metric_summary.clear()
        bar = life.bar
        if bar is not None:
            bar.update(step - bar.n)
            postfix = {"sps": f"{sps:,.0f}", "ret": f"{state.last_return:.1f}"}
            for key, label in self.agent.progress_keys.items():
                if key in schedules:
                    postfix[label] = f"{schedules[key]:.3g}"
            bar.set_postfix(postfix, refresh=False)

    def evaluate(self) -> bool:
        """A periodic greedy evaluation: logged, told to the events, ``best.pt`` when best; whether to stop."""
        agent, config, state, life, step = self.agent, self.config, self.state, self.life, self.state.step
        best_mean = state.best_mean
        returns = run_episodes(
            self.eval_env, agent.greedy_actor(), config.n_eval_episodes, config.eval_exploration_rate,
            self.eval_rng,
        )  # fmt: skip
        mean, std = float(returns.mean()), float(returns.std())
        state.eval_history.append({"step": float(step), "mean_return": mean, "std_return": std})
        life.log("eval", step, {"mean_return": mean, "std_return": std})
        if life.verbose:
            life.say(
                f"Evaluation at step {step}: mean return {mean:.2f} +/- {std:.2f}{_evaluation_note(config)}"
            )
        stop = life.evaluation(step, mean, std, agent)
        if mean > best_mean:
            life.checkpoint("best.pt", step, lambda: checkpoint_state(agent, config, state))
        if config.stop_at_return is not None and mean >= config.stop_at_return:
            stop = True
            if life.verbose:
                life.say(f"Stopping: return {mean:.2f} >= {config.stop_at_return}")
        return stop


def _finish(
    result: TrainResult, config: RunConfig, life: RunLifecycle, final_eval_episodes: int | None, video: bool
) -> None:
    """The final greedy evaluation (default: ``n_eval_episodes`` with a run folder) and ``eval.json``."""
    run_path = life.run_path
    n_final = (
        final_eval_episodes
        if final_eval_episodes is not None
        else (config.n_eval_episodes if run_path else 0)
    )
    if n_final <= 0:
        return
    agent = result.agent
    result.final_evaluation = _final_evaluation(agent, config, run_path, n_final, video)
    life.write_eval(
        {
            "algo": agent.algo,
            "env_id": config.env_id,
            "steps": result.steps,
            "episodes": n_final,
            "mean_return": result.final_evaluation.mean_return,
            "std_return": result.final_evaluation.std_return,
            "wall_time_s": result.wall_time,
            "steps_per_second": result.steps_per_second,
        }
    )


def _evaluation_note(config: RunConfig) -> str:
    """How the evaluation acted, when not greedily (the training epsilon is the progress bar's)."""
    rate = config.eval_exploration_rate
    return f" (evaluation epsilon {rate:g})" if rate > 0 else ""


def _final_evaluation(
    agent: Agent, config: RunConfig, run_path: Path | None, n_episodes: int, video: bool
) -> Evaluation:
    """Greedy episodes on a fresh environment, optionally recorded to ``run_path/videos``."""
    env = agent.make_env(config, render_mode="rgb_array" if video else None)
    try:
        returns = run_episodes(
            env, agent.greedy_actor(), n_episodes,
            video_name=f"{agent.algo}-{config.env_id}" if video else None,
            video_folder=(run_path if run_path is not None else Path(".")) / "videos",
            seed=config.seed + FINAL_EVAL_SEED_OFFSET,
        )  # fmt: skip
    finally:
        env.close()
    return Evaluation(returns)


def _resume(agent: Agent, config: RunConfig, life: RunLifecycle) -> RunState:
    """Restore the agent, torch's generator and the loop's counters from the run's latest checkpoint."""
    checkpoint_path, state = life.load_latest()
    agent.check_format(state, checkpoint_path)
    life.check_fixed_keys(state["config"], config_to_dict(config), agent.fixed_keys)
    step, episodes = int(state["step"]), int(state["episodes"])
    has_buffer = agent.has_buffer(state["agent"])
    # Without its buffer, the agent waits learning_starts new steps before it learns again.
    check_budget(
        type(agent), config, step, None if has_buffer else step + getattr(config, "learning_starts", 0)
    )
    agent.load_state_dict(state["agent"])
    th.set_rng_state(state["torch_rng"])
    if not has_buffer:
        warnings.warn(
            f"resuming {life.run_path} with an empty replay buffer (the checkpoint holds none: train with "
            "--save-buffer to keep it); learning waits for learning_starts new transitions and will not "
            "follow the uninterrupted run",
            QiterWarning,
            stacklevel=4,
        )
    if life.verbose:
        print(f"Resuming {life.run_path} at step {step} (episode {episodes})", file=sys.stdout)
    return RunState(step=step, episodes=episodes, eval_history=list(state["eval_history"]))
