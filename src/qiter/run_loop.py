"""The generic run loop: everything a training run needs besides the algorithm.

:func:`train` drives any :class:`~qiter.agent.Agent` through its run, CleanRL-style from top to bottom:
seeding, environments (one, or ``n_envs`` copies through a gymnasium vector env), episode bookkeeping, CSV
and TensorBoard logs, the progress bar, periodic evaluation, best and latest checkpoints, resume, the
divergence check, early stop, the final evaluation and the whole run folder. It emits events
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

from qiter import runs
from qiter.agent import Agent, Evaluation, MetricSummary, Transitions
from qiter.config import config_to_dict
from qiter.errors import QiterError, QiterWarning
from qiter.evaluation import run_episodes
from qiter.run_config import RunConfig

__all__ = ["DivergenceError", "RunEvents", "TrainResult", "build_agent", "check_env", "make_envs", "train"]

LOG_INTERVAL = 1000
# Evaluation and final-evaluation episodes draw from streams of their own, so that evaluating (or not)
# never changes the training run.
EVAL_SEED_OFFSET = 1_000_003
FINAL_EVAL_SEED_OFFSET = 10_000


class DivergenceError(QiterError):
    """The loss or the Q-values became NaN or infinite."""


class RunEvents:
    """Callbacks of a run: subclass, override what you need, and pass instances to :func:`train`.

    An exception raised in a callback ends the run (logs are closed, the last checkpoint is kept): an Optuna
    pruner raises ``optuna.TrialPruned`` from :meth:`on_evaluation`.
    """

    def on_episode(self, step: int, episode_return: float, episode_length: int) -> None:
        """After each finished episode of any environment copy."""

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: Agent) -> bool | None:
        """After each periodic evaluation; return ``True`` to stop the run there."""
        return None

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Before a checkpoint is written to ``path``."""


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
    def q_net(self) -> Any:
        """The agent's Q-network (value-based agents)."""
        return self.agent.q_net  # type: ignore[attr-defined]

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


def build_agent(agent_cls: type[Agent], config: RunConfig) -> Agent:
    """An agent for ``config``, on the spaces of its (checked) environment."""
    env = agent_cls.make_env(config)
    try:
        agent_cls.check_spaces(env)
        return agent_cls(config, env.observation_space, env.action_space)
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


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
    """
    config.validate()
    run_path = Path(run_dir) if run_dir is not None else None
    if resume and run_path is None:
        raise QiterError("resume needs the run folder to resume")

    th.manual_seed(config.seed)
    np.random.seed(config.seed)
    # The environments first: a wrong id or space fails before anything is written.
    envs, eval_env = make_envs(config, agent_cls)
    step, episodes = 0, 0
    eval_history: list[dict[str, float]] = []
    logger = None
    try:
        if run_path is not None and not resume:
            runs.claim_run_dir(run_path, overwrite)
        eval_env.action_space.seed(config.seed)
        agent = agent_cls(config, envs.observation_space, envs.action_space)
        if run_path is not None:
            if resume:
                step, episodes, eval_history = _resume(agent, config, run_path, verbose)
            runs.save_config(run_path, config_to_dict(config))
            # On resume, TensorBoard hides what was logged after the checkpoint (the CSVs are already cut).
            logger = runs.RunLogger(
                run_path, tensorboard=tensorboard, purge_step=step + 1 if resume else None
            )
    except BaseException:
        envs.close()
        eval_env.close()
        raise
    eval_rng = np.random.default_rng(config.seed + EVAL_SEED_OFFSET)
    best_mean = max((e["mean_return"] for e in eval_history), default=-math.inf)

    def save(name: str) -> None:
        if run_path is None:
            return
        path = run_path / runs.CHECKPOINT_DIR / name
        for event in events:
            event.on_checkpoint(step, path)
        state = {
            "format": agent.checkpoint_format,
            "algo": agent.algo,
            "config": config_to_dict(config),
            "step": step,
            "episodes": episodes,
            "eval_history": eval_history,
            "torch_rng": th.get_rng_state(),
            "agent": agent.state_dict(include_buffer=config.save_buffer),
        }
        runs.save_checkpoint(path, state)

    # Resume starts fresh episodes: the environments' inner state cannot be saved in general.
    envs.reset(seed=config.seed + step)
    eval_env.reset(seed=config.seed + EVAL_SEED_OFFSET + step)
    n_envs = envs.n_envs
    last_return = math.nan
    metric_summary = MetricSummary()
    # Intervals are counted in environment steps; with n_envs copies the loop advances n_envs at a time.
    next_log = (step // LOG_INTERVAL + 1) * LOG_INTERVAL
    eval_interval = config.evaluation_interval
    next_eval = (step // eval_interval + 1) * eval_interval if eval_interval > 0 else math.inf
    checkpoint_interval = config.checkpoint_interval or config.evaluation_interval or config.n_timesteps
    next_checkpoint = (step // checkpoint_interval + 1) * checkpoint_interval
    stopped_early = False
    q_bound = config.q_value_bound()
    q_watch = QValueWatch(q_bound) if q_bound is not None else None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.n_timesteps, initial=step, unit="step", dynamic_ncols=True, desc=config.env_id
        )
    say = bar.write if bar is not None else print
    start_time = time.perf_counter()
    start_step = step
    interval_time, interval_step = start_time, step
    # A diverging run overflows before the divergence check reports it: no numpy warnings on the way there.
    errstate = np.errstate(over="ignore", invalid="ignore")
    errstate.__enter__()
    # One BLAS thread: the matrices of an RL update are small, and BLAS worker threads that must share
    # their cores with anything else (the environment, another run) made a 256-unit update 13x slower.
    blas_threads = threadpool_limits(1, user_api="blas")
    try:
        act, env_step, observe, update = agent.act, envs.step, agent.observe, agent.update
        while step < config.n_timesteps:
            actions = act(envs.observations, True)
            transitions, finished = env_step(actions)
            step += n_envs
            if finished:
                for episode_return, episode_length in finished:
                    episodes += 1
                    last_return = episode_return
                    if logger is not None:
                        row = {"return": episode_return, "length": episode_length, **agent.metrics()}
                        logger.log("episodes", step, row)
                    for event in events:
                        event.on_episode(step, episode_return, episode_length)
            observe(transitions)
            metrics = update(step)
            if metrics is not None:
                for key, value in metrics.items():
                    if not math.isfinite(value):
                        raise DivergenceError(
                            f"training diverged at step {step}: {key} is {value}. The last good checkpoint is "
                            "kept; try a smaller learning rate, the huber loss or gradient clipping "
                            "(max_grad_norm)."
                        )
                metric_summary.add(metrics)

            if step >= next_log:
                next_log += LOG_INTERVAL
                now = time.perf_counter()
                sps = (step - interval_step) / max(now - interval_time, 1e-9)
                interval_time, interval_step = now, step
                schedules = agent.metrics()
                if metric_summary.count > 0:
                    row = metric_summary.summary()
                    if logger is not None:
                        logger.log("train", step, {**row, **schedules, "steps_per_second": sps})
                    if q_watch is not None:
                        q_watch.check(step, row.get("mean_q"))
                metric_summary.clear()
                if bar is not None:
                    bar.update(step - bar.n)
                    postfix = {"sps": f"{sps:,.0f}", "ret": f"{last_return:.1f}"}
                    if "epsilon" in schedules:
                        postfix["eps"] = f"{schedules['epsilon']:.3f}"
                    bar.set_postfix(postfix, refresh=False)

            if step >= next_eval:
                next_eval += eval_interval
                returns = run_episodes(
                    eval_env,
                    agent.greedy_actor(),
                    config.n_eval_episodes,
                    config.eval_exploration_rate,
                    eval_rng,
                )
                mean, std = float(returns.mean()), float(returns.std())
                eval_history.append({"step": float(step), "mean_return": mean, "std_return": std})
                if logger is not None:
                    logger.log("eval", step, {"mean_return": mean, "std_return": std})
                if verbose:
                    say(
                        f"Evaluation at step {step}: mean return {mean:.2f} +/- {std:.2f}{_schedule_note(agent)}"
                    )
                stop = False
                for event in events:
                    stop = bool(event.on_evaluation(step, mean, std, agent)) or stop
                if mean > best_mean:
                    best_mean = mean
                    save("best.pt")
                if config.stop_at_return is not None and mean >= config.stop_at_return:
                    stop = True
                    if verbose:
                        say(f"Stopping: return {mean:.2f} >= {config.stop_at_return}")
                if stop:
                    stopped_early = True
                    break
            if step >= next_checkpoint:
                next_checkpoint += checkpoint_interval
                save("latest.pt")
    finally:
        errstate.__exit__(None, None, None)
        blas_threads.restore_original_limits()
        if bar is not None:
            bar.update(step - bar.n)
            bar.close()
        if logger is not None:
            logger.close()
        envs.close()
        eval_env.close()
    wall_time = time.perf_counter() - start_time
    save("latest.pt")
    result = TrainResult(
        agent=agent,
        run_dir=run_path,
        steps=step,
        episodes=episodes,
        wall_time=wall_time,
        steps_per_second=(step - start_step) / max(wall_time, 1e-9),
        eval_history=eval_history,
        stopped_early=stopped_early,
    )
    n_final = (
        final_eval_episodes
        if final_eval_episodes is not None
        else (config.n_eval_episodes if run_path else 0)
    )
    if n_final > 0:
        result.final_evaluation = _final_evaluation(agent, config, run_path, n_final, video)
        if run_path is not None:
            runs.write_eval(
                run_path,
                {
                    "algo": agent.algo,
                    "env_id": config.env_id,
                    "steps": step,
                    "episodes": n_final,
                    "mean_return": result.final_evaluation.mean_return,
                    "std_return": result.final_evaluation.std_return,
                    "wall_time_s": wall_time,
                    "steps_per_second": result.steps_per_second,
                },
            )
    return result


class QValueWatch:
    """Warns once when the mean Q-value goes far above what any return can be worth.

    With rewards at most ``max_reward`` and discount ``gamma``, no Q-value can exceed
    ``bound = max_reward / (1 - gamma)`` (:func:`~qiter.run_config.q_value_bound`). A mean Q well above
    it is not a number to hide: the critic is diverging, whatever the returns say.

    :param bound: The config's :meth:`~qiter.run_config.RunConfig.q_value_bound`.
    :param margin: How far above the bound warns, as a fraction of ``|bound|`` (at least 1 in absolute
        value, so a bound of 0 is not warned about for noise).
    """

    def __init__(self, bound: float, margin: float = 0.5) -> None:
        self.bound = bound
        self.limit = bound + margin * max(abs(bound), 1.0)
        self.warned = False

    def check(self, step: int, mean_q: float | None) -> None:
        """Warn (once per run) if ``mean_q`` exceeds the limit at ``step``."""
        if self.warned or mean_q is None or mean_q <= self.limit:
            return
        self.warned = True
        warnings.warn(
            f"at step {step} the mean Q-value is {mean_q:.4g}, while no return can exceed {self.bound:.4g} "
            "(max_reward / (1 - gamma)): the critic is overestimating, usually because the target network is "
            "updated too often, the learning rate is too high, or the max over noisy estimates compounds "
            "(see docs/stability.md)",
            QiterWarning,
            stacklevel=2,
        )


def _schedule_note(agent: Agent) -> str:
    epsilon = agent.metrics().get("epsilon")
    return f" (epsilon {epsilon:.2f})" if epsilon is not None else ""


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


def _resume(
    agent: Agent, config: RunConfig, run_path: Path, verbose: int
) -> tuple[int, int, list[dict[str, float]]]:
    """Restore the agent and the loop's counters from the run's latest checkpoint; cut the logs there."""
    checkpoint_path = runs.latest_checkpoint(run_path)
    if checkpoint_path is None:
        raise QiterError(f"no checkpoint to resume from in {run_path / runs.CHECKPOINT_DIR}")
    state = runs.load_checkpoint(checkpoint_path)
    agent.check_format(state, checkpoint_path)
    saved = state["config"]
    current = config_to_dict(config)
    for key in agent.fixed_keys:
        if saved.get(key) != current.get(key):
            raise QiterError(
                f"cannot change {key} when resuming ({saved.get(key)!r} -> {current.get(key)!r}): it fixes the "
                "shape of the saved networks or buffer; start a new run instead"
            )
    step, episodes = int(state["step"]), int(state["episodes"])
    agent.load_state_dict(state["agent"])
    th.set_rng_state(state["torch_rng"])
    if not agent.has_buffer(state["agent"]):
        warnings.warn(
            f"resuming {run_path} with an empty replay buffer (the checkpoint holds none: train with "
            "--save-buffer to keep it); learning waits for learning_starts new transitions and will not "
            "follow the uninterrupted run",
            QiterWarning,
            stacklevel=3,
        )
    runs.truncate_logs(run_path, step)
    if verbose:
        print(f"Resuming {run_path} at step {step} (episode {episodes})", file=sys.stdout)
    return step, episodes, list(state["eval_history"])
