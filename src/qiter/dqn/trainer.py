"""The DQN trainer: one loop, top to bottom, with every variant as an option of :class:`DQNConfig`.

The path of one step: epsilon-greedy action -> ``env.step`` -> ``buffer.store_transition`` -> every
``update_interval`` steps: sample -> TD target (target network; Double / n-step options) -> loss ->
optimizer step -> target update (hard or Polyak) -> logs, periodic evaluation, checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from threadpoolctl import threadpool_limits

from qiter import runs
from qiter.dqn.buffers import ReplayBuffer
from qiter.dqn.config import DQNConfig
from qiter.dqn.fast import NumpyLearner, supports_numpy
from qiter.dqn.networks import QNetwork, make_q_network
from qiter.dqn.presets import config_from_dict, config_to_dict, validate_config
from qiter.dqn.prioritized import PrioritizedReplayBuffer
from qiter.dqn.torch_learner import TorchLearner
from qiter.envs import make_env, require_box_observations, require_discrete_actions
from qiter.errors import QiterError
from qiter.evaluation import run_episodes

LOG_INTERVAL = 1000


class DivergenceError(QiterError):
    """The loss or the Q-values became NaN or infinite."""


@dataclass
class TrainResult:
    """What a training run returns."""

    q_net: QNetwork
    run_dir: Path | None
    steps: int
    episodes: int
    wall_time: float
    steps_per_second: float
    eval_history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def final_eval(self) -> tuple[float, float] | None:
        """Mean and std of the last evaluation, if any."""
        if not self.eval_history:
            return None
        last = self.eval_history[-1]
        return last["mean_return"], last["std_return"]


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


def make_training_envs(config: DQNConfig, eval_render_mode: str | None = None) -> tuple[gym.Env, gym.Env]:
    """The training and evaluation environments, checked for what DQN supports."""
    env = make_env(config.env_id, flatten=True)
    require_box_observations(env, "DQN")
    require_discrete_actions(env, "DQN")
    eval_env = make_env(config.env_id, render_mode=eval_render_mode, flatten=True)
    return env, eval_env


def dqn_spaces(env: gym.Env) -> tuple[spaces.Box, spaces.Discrete]:
    """The observation and action spaces of an env already checked by :func:`make_training_envs`."""
    obs_space, action_space = env.observation_space, env.action_space
    assert isinstance(obs_space, spaces.Box) and isinstance(action_space, spaces.Discrete)
    return obs_space, action_space


def _network_space(env: gym.Env) -> spaces.Box:
    """The observation space as the network sees it: float32 (float64 observations are cast, as in SB3)."""
    space = env.observation_space
    assert isinstance(space, spaces.Box)
    return spaces.Box(low=space.low.astype(np.float32), high=space.high.astype(np.float32), dtype=np.float32)


def build_q_network(config: DQNConfig, env: gym.Env) -> QNetwork:
    """The Q-network the config describes, for an env checked by :func:`make_training_envs`."""
    return make_q_network(
        _network_space(env),
        dqn_spaces(env)[1],
        config.n_hidden_units,
        config.n_hidden_layers,
        config.activation,
        config.dueling,
    )


def make_learner(config: DQNConfig, q_net: QNetwork, q_target_net: QNetwork) -> NumpyLearner | TorchLearner:
    """The numpy fast path when it applies (and is not turned off), else the autograd path."""
    device = th.device(config.device)
    use_numpy = config.backend == "numpy" or (
        config.backend == "auto" and device.type == "cpu" and supports_numpy(q_net)
    )
    if use_numpy:
        if device.type != "cpu" or not supports_numpy(q_net):
            raise QiterError(
                "backend 'numpy' needs device 'cpu' and a relu or tanh network; use backend 'auto' or 'torch'"
            )
        return NumpyLearner(
            q_net, q_target_net, config.learning_rate, config.gamma, config.double_dqn, config.loss,
            config.max_grad_norm, config.adam_eps,
        )  # fmt: skip
    q_net.to(device)
    q_target_net.to(device)
    return TorchLearner(
        q_net, q_target_net, config.learning_rate, config.gamma, config.double_dqn, config.loss,
        config.max_grad_norm, config.adam_eps, device,
    )  # fmt: skip


def make_buffer(config: DQNConfig, env: gym.Env, rng: np.random.Generator) -> ReplayBuffer:
    """The replay buffer the config asks for (uniform or prioritized, 1-step or n-step)."""
    kwargs: dict[str, Any] = {
        "n_steps": config.n_steps,
        "gamma": config.gamma,
        "rng": rng,
        "observation_dtype": np.float32,
    }
    obs_space, action_space = dqn_spaces(env)
    if config.prioritized_replay:
        return PrioritizedReplayBuffer(
            config.replay_buffer_size,
            obs_space,
            action_space,
            alpha=config.per_alpha,
            eps=config.per_eps,
            **kwargs,
        )
    return ReplayBuffer(config.replay_buffer_size, obs_space, action_space, **kwargs)


def train(
    config: DQNConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    verbose: int = 1,
    on_evaluation: Callable[[int, float, float, QNetwork], None] | None = None,
    tensorboard: bool = True,
) -> TrainResult:
    """Train a DQN agent.

    :param config: All hyperparameters.
    :param run_dir: Folder for config, logs, checkpoints and evaluation results; ``None`` writes nothing.
    :param resume: Continue from the latest checkpoint in ``run_dir``.
    :param progress: Show a progress bar.
    :param verbose: 1 prints evaluations, 0 prints nothing.
    :param on_evaluation: Called after each evaluation with ``(step, mean, std, q_net)``.
    :param tensorboard: Also write TensorBoard scalars (when ``run_dir`` is set).
    :return: The trained network and a summary of the run.
    """
    validate_config(config)
    th.manual_seed(config.seed)
    np.random.seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # Evaluation draws from its own stream, so evaluating (or not) never changes the training run.
    eval_rng = np.random.default_rng(config.seed + 1_000_003)
    env, eval_env = make_training_envs(config)
    env.action_space.seed(config.seed)
    eval_env.action_space.seed(config.seed)
    n_actions = int(dqn_spaces(env)[1].n)

    q_net = build_q_network(config, env)
    q_target_net = copy.deepcopy(q_net)
    learner = make_learner(config, q_net, q_target_net)
    buffer = make_buffer(config, env, rng)
    # Prioritized replay needs two extra calls per update: the annealed beta and the new priorities.
    per_buffer = buffer if isinstance(buffer, PrioritizedReplayBuffer) else None

    step, episodes = 0, 0
    exploration_rate = config.exploration_initial_eps
    eval_history: list[dict[str, float]] = []
    best_mean = -math.inf
    run_path = Path(run_dir) if run_dir is not None else None
    logger = None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        if resume:
            checkpoint_path = runs.latest_checkpoint(run_path)
            if checkpoint_path is None:
                raise QiterError(f"no checkpoint to resume from in {run_path / 'checkpoints'}")
            state = runs.load_checkpoint(checkpoint_path)
            check_compatible(state, config, q_net)
            step, episodes = int(state["step"]), int(state["episodes"])
            exploration_rate = float(state["exploration_rate"])
            eval_history = list(state["eval_history"])
            best_mean = max((e["mean_return"] for e in eval_history), default=-math.inf)
            q_net.load_state_dict(state["q_net"])
            q_target_net.load_state_dict(state["q_target_net"])
            learner.load_optimizer_state(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            th.set_rng_state(state["torch_rng"])
            if "buffer" in state:
                _load_buffer(buffer, state["buffer"])
            if verbose:
                print(f"Resuming {run_path} at step {step} (episode {episodes})")
        runs.save_config(run_path, config_to_dict(config))
        logger = runs.RunLogger(run_path, tensorboard=tensorboard)

    def checkpoint_state() -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": runs.CHECKPOINT_FORMAT,
            "config": config_to_dict(config),
            "step": step,
            "episodes": episodes,
            "exploration_rate": exploration_rate,
            "eval_history": eval_history,
            "q_net": q_net.state_dict(),
            "q_target_net": q_target_net.state_dict(),
            "optimizer": learner.optimizer_state(),
            "rng": rng.bit_generator.state,
            "torch_rng": th.get_rng_state(),
        }
        if config.save_buffer:
            state["buffer"] = _buffer_state(buffer)
        return state

    def save(name: str) -> None:
        if run_path is not None:
            runs.save_checkpoint(run_path / "checkpoints" / name, checkpoint_state())

    def evaluate_now() -> tuple[float, float]:
        returns = run_episodes(
            eval_env, learner.act, config.n_eval_episodes, config.eval_exploration_rate, eval_rng
        )
        return float(returns.mean()), float(returns.std())

    # Resume starts a fresh episode: the environment's inner state cannot be saved in general.
    obs, _ = env.reset(seed=config.seed + step)
    eval_env.reset(seed=config.seed + 1_000_003 + step)
    episode_return, episode_length = 0.0, 0
    last_return = math.nan
    loss_sum, q_sum, n_updates = 0.0, 0.0, 0
    anneal_steps = int(config.exploration_fraction * config.n_timesteps)
    linear_exploration = config.exploration_schedule == "linear"
    # With neither interval set, the only checkpoint is the one written at the end.
    checkpoint_interval = config.checkpoint_interval or config.evaluation_interval or config.n_timesteps
    lr_schedule = config.learning_rate_final is not None
    greedy_policy = learner.greedy if config.n_steps > 1 and config.n_step_cut == "greedy" else None
    steps_target = config.target_update_unit == "steps"
    stopped_early = False

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=config.n_timesteps, initial=step, unit="step", dynamic_ncols=True, desc=config.env_id
        )
    start_time = time.perf_counter()
    start_step = step
    interval_time, interval_step = start_time, step
    # A diverging run overflows before the loss check reports it: no numpy warnings on the way there.
    errstate = np.errstate(over="ignore", invalid="ignore")
    errstate.__enter__()
    # One BLAS thread: the matrices of an RL update are small, and BLAS worker threads that must share
    # their cores with anything else (the environment, another run) made a 256-unit update 13x slower.
    blas_threads = threadpool_limits(1, user_api="blas")
    try:
        while step < config.n_timesteps:
            step += 1
            # Once annealed, epsilon stays at its final value: no schedule call per step after that.
            if linear_exploration and step <= anneal_steps + 1:
                exploration_rate = linear_schedule(
                    config.exploration_initial_eps, config.exploration_final_eps, step, anneal_steps
                )
            # Epsilon-greedy: a random action with probability epsilon, else the greedy one.
            if rng.random() < exploration_rate:
                action = int(rng.integers(n_actions))
            else:
                action = learner.act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            reward = float(reward)
            buffer.store_transition(obs, next_obs, action, reward, terminated, truncated)
            obs = next_obs
            episode_return += reward
            episode_length += 1
            if terminated or truncated:
                episodes += 1
                last_return = episode_return
                if logger is not None:
                    logger.log(
                        "episodes",
                        step,
                        {"return": episode_return, "length": episode_length, "epsilon": exploration_rate},
                    )
                episode_return, episode_length = 0.0, 0
                obs, _ = env.reset()
                if config.exploration_schedule == "exponential":
                    # The rlberry seed's schedule: decays per episode towards the final value.
                    eps0, eps_min = config.exploration_initial_eps, config.exploration_final_eps
                    exploration_rate = eps_min + (eps0 - eps_min) * math.exp(
                        -episodes / config.exploration_decay_episodes
                    )
                if not steps_target and episodes % config.target_network_update_interval == 0:
                    learner.update_target(config.tau)

            # As in the seed: the target update is checked before the gradient step of the same step.
            if steps_target and step % config.target_network_update_interval == 0:
                learner.update_target(config.tau)

            if step > config.learning_starts and step % config.update_interval == 0:
                if lr_schedule:
                    assert config.learning_rate_final is not None
                    learner.learning_rate = linear_schedule(
                        config.learning_rate, config.learning_rate_final, step, config.n_timesteps
                    )
                if per_buffer is not None:
                    per_buffer.beta = linear_schedule(
                        config.per_beta_initial, config.per_beta_final, step, config.n_timesteps
                    )
                for _ in range(config.gradient_steps):
                    samples = buffer.sample(config.batch_size, greedy_policy)
                    loss, mean_q, td_errors = learner.update(samples)
                    if not math.isfinite(loss) or not math.isfinite(mean_q):
                        raise DivergenceError(
                            f"training diverged at step {step}: the loss is {loss} and the mean Q-value {mean_q}. "
                            "The last good checkpoint is kept; try a smaller learning rate, the huber loss or "
                            "gradient clipping (max_grad_norm)."
                        )
                    if per_buffer is not None:
                        assert samples.indices is not None
                        per_buffer.update_priorities(samples.indices, td_errors)
                    loss_sum += loss
                    q_sum += mean_q
                    n_updates += 1

            if step % LOG_INTERVAL == 0:
                now = time.perf_counter()
                sps = (step - interval_step) / max(now - interval_time, 1e-9)
                interval_time, interval_step = now, step
                if logger is not None and n_updates > 0:
                    logger.log(
                        "train",
                        step,
                        {
                            "loss": loss_sum / n_updates,
                            "mean_q": q_sum / n_updates,
                            "epsilon": exploration_rate,
                            "learning_rate": learner.learning_rate,
                            "steps_per_second": sps,
                        },
                    )
                loss_sum, q_sum, n_updates = 0.0, 0.0, 0
                if bar is not None:
                    bar.update(step - bar.n)
                    bar.set_postfix(
                        sps=f"{sps:,.0f}",
                        ret=f"{last_return:.1f}",
                        eps=f"{exploration_rate:.3f}",
                        refresh=False,
                    )

            if config.evaluation_interval > 0 and step % config.evaluation_interval == 0:
                mean, std = evaluate_now()
                eval_history.append({"step": float(step), "mean_return": mean, "std_return": std})
                if logger is not None:
                    logger.log("eval", step, {"mean_return": mean, "std_return": std})
                if verbose:
                    msg = f"Evaluation at step {step}: mean return {mean:.2f} +/- {std:.2f} (epsilon {exploration_rate:.2f})"
                    (bar.write if bar is not None else print)(msg)
                if on_evaluation is not None:
                    on_evaluation(step, mean, std, q_net)
                if mean > best_mean:
                    best_mean = mean
                    save("best.pt")
                if config.stop_at_return is not None and mean >= config.stop_at_return:
                    stopped_early = True
                    if verbose:
                        (bar.write if bar is not None else print)(
                            f"Stopping: return {mean:.2f} >= {config.stop_at_return}"
                        )
                    break
            if step % checkpoint_interval == 0:
                save("latest.pt")
    finally:
        errstate.__exit__(None, None, None)
        blas_threads.restore_original_limits()
        if bar is not None:
            bar.update(step - bar.n)
            bar.close()
        if logger is not None:
            logger.close()
        env.close()
    wall_time = time.perf_counter() - start_time
    save("latest.pt")
    eval_env.close()
    return TrainResult(
        q_net=q_net,
        run_dir=run_path,
        steps=step,
        episodes=episodes,
        wall_time=wall_time,
        steps_per_second=(step - start_step) / max(wall_time, 1e-9),
        eval_history=eval_history,
        stopped_early=stopped_early,
    )


def check_compatible(state: dict[str, Any], config: DQNConfig, q_net: QNetwork) -> None:
    """Refuse a checkpoint made for another environment or network shape, with a clear message."""
    saved = state.get("config", {})
    if saved.get("env_id") != config.env_id:
        raise QiterError(f"checkpoint was trained on {saved.get('env_id')!r}, not {config.env_id!r}")
    expected = {k: tuple(v.shape) for k, v in q_net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state["q_net"].items()}
    if expected != found:
        raise QiterError(
            "checkpoint network does not match the config "
            f"(checkpoint: {found}, config: {expected}); check n_hidden_units, n_hidden_layers and dueling"
        )


def _buffer_state(buffer: ReplayBuffer) -> dict[str, Any]:
    arrays = ("observations", "next_observations", "actions", "rewards", "terminateds", "dones")
    state: dict[str, Any] = {name: th.from_numpy(getattr(buffer, name).copy()) for name in arrays}
    state.update(current_idx=buffer.current_idx, is_full=buffer.is_full)
    if hasattr(buffer, "state_extra"):
        state.update(buffer.state_extra())
    return state


def _load_buffer(buffer: ReplayBuffer, state: dict[str, Any]) -> None:
    for name in ("observations", "next_observations", "actions", "rewards", "terminateds", "dones"):
        getattr(buffer, name)[:] = state[name].numpy()
    buffer.current_idx, buffer.is_full = int(state["current_idx"]), bool(state["is_full"])
    if hasattr(buffer, "load_state_extra"):
        buffer.load_state_extra(state)


def load_agent(path: str | Path) -> tuple[DQNConfig, QNetwork]:
    """Load the config and Q-network from a checkpoint file or a run folder.

    :param path: A ``.pt`` checkpoint, or a run folder (its ``checkpoints/latest.pt`` is used).
    :return: The run's config and its network (on the CPU, in eval mode).
    """
    path = Path(path)
    if path.is_dir():
        found = runs.latest_checkpoint(path)
        if found is None:
            raise QiterError(f"no checkpoint found in {path / 'checkpoints'}")
        path = found
    state = runs.load_checkpoint(path)
    config = config_from_dict(state["config"])
    env, eval_env = make_training_envs(config)
    eval_env.close()
    q_net = build_q_network(config, env)
    env.close()
    check_compatible(state, config, q_net)
    q_net.load_state_dict(state["q_net"])
    return config, q_net.eval()


def greedy_actor(q_net: QNetwork) -> Callable[[np.ndarray], int]:
    """A fast greedy action function for a CPU network (numpy views), or a torch one otherwise."""
    if supports_numpy(q_net):
        from qiter.dqn.fast import NumpyQFunction

        return NumpyQFunction(q_net).act
    device = next(q_net.parameters()).device
    dtype = next(q_net.parameters()).dtype

    def act(obs: np.ndarray) -> int:
        with th.no_grad():
            return int(q_net(th.as_tensor(obs[np.newaxis], device=device, dtype=dtype)).argmax(dim=1).item())

    return act
