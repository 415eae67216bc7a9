"""The seed tutorial's DQN functions, with their names, signatures and behaviour.

These are the building blocks the tutorial writes one by one. ``run_dqn`` keeps the seed's signature but
runs the library's trainer (:func:`qiter.dqn.trainer.train`), so it gets the fast path, logs and
checkpoints; ``dqn_update`` and ``collect_one_step`` stay the plain, readable versions.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces

from qiter.buffers.replay import ReplayBuffer
from qiter.dqn.config import DQNConfig
from qiter.dqn.losses import dqn_loss
from qiter.dqn.networks import QNetwork
from qiter.dqn.trainer import linear_schedule, train
from qiter.envs import make_env
from qiter.evaluation import run_episodes
from qiter.policies import epsilon_greedy
from qiter.video import DEFAULT_VIDEO_FOLDER

__all__ = [
    "collect_one_step",
    "dqn_update",
    "epsilon_greedy_action_selection",
    "evaluate_policy",
    "linear_schedule",
    "run_dqn",
]


def _as_input(q_net: th.nn.Module, observation: np.ndarray, device: str | th.device) -> th.Tensor:
    """Add a batch dimension and match the network's dtype (float64 FlappyBird observations, float32 nets)."""
    dtype = next(q_net.parameters()).dtype
    return th.as_tensor(observation[np.newaxis, ...], device=device, dtype=dtype)


def epsilon_greedy_action_selection(
    q_net: QNetwork,
    observation: np.ndarray,
    exploration_rate: float,
    action_space: spaces.Discrete,
    device: str = "cpu",
) -> int:
    """
    Select an action according to an espilon-greedy policy:
    with a probability of epsilon (`exploration_rate`),
    sample a random action, otherwise follow the best known action
    according to the q-value.

    :param observation: A single observation.
    :param q_net: Q-network for estimating the q value
    :param exploration_rate: Current rate of exploration (in [0, 1], 0 means no exploration),
        probability to select a random action,
        this is "epsilon".
    :param action_space: Action space of the env,
        contains information about the number of actions.
    :param device: PyTorch device
    :return: An action selected according to the epsilon-greedy policy.
    """

    def greedy_action() -> int:
        with th.no_grad():
            q_values = q_net(_as_input(q_net, observation, device))
            return int(q_values.argmax(dim=1).item())

    return epsilon_greedy(greedy_action, lambda: int(action_space.sample()), exploration_rate, np.random.rand)


def collect_one_step(
    env: gym.Env,
    q_net: QNetwork,
    replay_buffer: ReplayBuffer,
    obs: np.ndarray,
    exploration_rate: float = 0.1,
    verbose: int = 0,
) -> np.ndarray:
    """
    Collect one transition and fill the replay buffer following an epsilon greedy policy.

    :param env: The environment object.
    :param q_net: Q-network for estimating the q value
    :param replay_buffer: Replay buffer to store the new transitions.
    :param obs: The current observation.
    :param exploration_rate: Current rate of exploration (in [0, 1], 0 means no exploration),
        probability to select a random action,
        this is "epsilon".
    :param verbose: The verbosity level (1 to print some info).
    :return: The last observation (important when collecting data multiple times).
    """
    device = next(q_net.parameters()).device
    assert isinstance(env.action_space, spaces.Discrete), "DQN only supports discrete actions"
    action = epsilon_greedy_action_selection(
        q_net, obs, exploration_rate, env.action_space, device=str(device)
    )
    next_obs, reward, terminated, truncated, info = env.step(action)
    replay_buffer.store_transition(obs, next_obs, action, float(reward), terminated, truncated)
    obs = next_obs
    if "episode" in info and verbose >= 1:
        print(f"Episode return={float(info['episode']['r']):.2f} length={int(info['episode']['l'])}")
    if terminated or truncated:
        # Don't forget to reset the env at the end of an episode
        obs, _ = env.reset()
    return obs


def dqn_update(
    q_net: QNetwork,
    q_target_net: QNetwork,
    optimizer: th.optim.Optimizer,
    replay_buffer: ReplayBuffer,
    batch_size: int,
    gamma: float,
) -> None:
    """
    Perform one gradient step on the Q-network
    using the data from the replay buffer.

    :param q_net: The Q-network to update
    :param q_target_net: The target Q-network, to compute the td-target.
    :param optimizer: The optimizer to use
    :param replay_buffer: The replay buffer containing the transitions
    :param batch_size: The minibatch size, how many transitions to sample
    :param gamma: The discount factor
    """
    device = next(q_net.parameters()).device
    replay_data = replay_buffer.sample(batch_size).to_torch(device=device)
    # 1-step TD target from the target network; no bootstrap on terminated transitions.
    loss = dqn_loss(q_net, q_target_net, replay_data, gamma).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def evaluate_policy(
    eval_env: gym.Env,
    q_net: QNetwork,
    n_eval_episodes: int,
    eval_exploration_rate: float = 0.0,
    video_name: str | None = None,
    video_folder: str | os.PathLike[str] = DEFAULT_VIDEO_FOLDER,
) -> tuple[float, float]:
    """
    Evaluate the policy by computing the average episode reward
    over n_eval_episodes episodes.

    :param eval_env: The environment to evaluate the policy on
    :param q_net: The Q-network to evaluate
    :param n_eval_episodes: The number of episodes to evaluate the policy on
    :param eval_exploration_rate: The exploration rate to use during evaluation
    :param video_name: When provided and the render_mode is "rgb_array",
        name of the video to record.
    :param video_folder: Where the video goes.
    :return: Mean and standard deviation of the episode returns.
    """
    device = next(q_net.parameters()).device
    action_space = eval_env.action_space
    assert isinstance(action_space, spaces.Discrete), "DQN only supports discrete actions"

    def act(obs: np.ndarray) -> int:
        return epsilon_greedy_action_selection(q_net, obs, 0.0, action_space, device=str(device))

    record = video_name if video_name is not None and eval_env.render_mode == "rgb_array" else None
    returns = run_episodes(
        eval_env, act, n_eval_episodes, eval_exploration_rate, video_name=record, video_folder=video_folder
    )
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(f"Mean episode reward: {mean:.2f} +/- {std:.2f}")
    return mean, std


def run_dqn(
    env_id: str = "CartPole-v1",
    replay_buffer_size: int = 50_000,
    target_network_update_interval: int = 1000,
    learning_starts: int = 100,
    exploration_initial_eps: float = 1.0,
    exploration_final_eps: float = 0.01,
    exploration_fraction: float = 0.1,
    n_timesteps: int = 20_000,
    update_interval: int = 2,
    learning_rate: float = 3e-4,
    batch_size: int = 64,
    gamma: float = 0.99,
    n_hidden_units: int = 64,
    n_eval_episodes: int = 10,
    evaluation_interval: int = 1000,
    eval_exploration_rate: float = 0.0,
    seed: int = 2023,
    eval_render_mode: str | None = None,
    *,
    checkpoint_folder: str | os.PathLike[str] = "logs",
    run_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_evaluation: Callable[[int, float, float, QNetwork], None] | None = None,
    **options: object,
) -> QNetwork:
    """
    Run Deep Q-Learning (DQN) on a given environment.
    (with a target network)

    :param env_id: Name of the environment
    :param replay_buffer_size: Max capacity of the replay buffer
    :param target_network_update_interval: How often do we copy the parameters
         to the target network
    :param learning_starts: Warmup phase to fill the replay buffer
        before starting the optimization.
    :param exploration_initial_eps: The initial exploration rate
    :param exploration_final_eps: The final exploration rate
    :param exploration_fraction: The fraction of the number of steps
        during which the exploration rate is annealed from
        initial_eps to final_eps.
        After this many steps, the exploration rate remains constant.
    :param n_timesteps: Number of timesteps in total
    :param update_interval: How often to update the Q-network
        (every update_interval steps)
    :param learning_rate: The learning rate to use for the optimizer
    :param batch_size: The minibatch size
    :param gamma: The discount factor
    :param n_hidden_units: Number of units for each hidden layer
        of the Q-Network.
    :param n_eval_episodes: The number of episodes to evaluate the policy on
    :param evaluation_interval: How often to evaluate the policy
    :param eval_exploration_rate: The exploration rate to use during evaluation
    :param seed: Random seed for the pseudo random generator
    :param eval_render_mode: The render mode to use for evaluation
    :param checkpoint_folder: Where the seed-named ``q_net_checkpoint_{env_id}_{step}.pth`` files go.
    :param run_dir: Also write a full run folder (config, CSV/TensorBoard logs, resumable checkpoints).
    :param progress: Show a progress bar.
    :param on_evaluation: Called after each evaluation with ``(step, mean, std, q_net)``.
    :param options: Any other :class:`~qiter.dqn.config.DQNConfig` field (``double_dqn=True``, ...).
    :return: The trained Q-network (float64 when the observations are, as in the seed).
    """
    config = DQNConfig(
        env_id=env_id,
        replay_buffer_size=replay_buffer_size,
        target_network_update_interval=target_network_update_interval,
        learning_starts=learning_starts,
        exploration_initial_eps=exploration_initial_eps,
        exploration_final_eps=exploration_final_eps,
        exploration_fraction=exploration_fraction,
        n_timesteps=n_timesteps,
        update_interval=update_interval,
        learning_rate=learning_rate,
        batch_size=batch_size,
        gamma=gamma,
        n_hidden_units=n_hidden_units,
        n_eval_episodes=n_eval_episodes,
        evaluation_interval=evaluation_interval,
        eval_exploration_rate=eval_exploration_rate,
        seed=seed,
        **options,  # type: ignore[arg-type]
    )
    folder = Path(checkpoint_folder)
    folder.mkdir(parents=True, exist_ok=True)

    def save_seed_checkpoint(step: int, mean: float, std: float, q_net: QNetwork) -> None:
        th.save(q_net.state_dict(), folder / f"q_net_checkpoint_{env_id}_{step}.pth")
        if on_evaluation is not None:
            on_evaluation(step, mean, std, q_net)

    result = train(
        config,
        None if run_dir is None else Path(run_dir),
        progress=progress,
        on_evaluation=save_seed_checkpoint,
    )
    q_net = result.q_net
    if make_env(env_id).observation_space.dtype == np.float64:
        # For flappy bird: the seed trains in float64; we train in float32 and hand back a float64 copy.
        q_net = q_net.double()
    if eval_render_mode is not None:
        eval_env = make_env(env_id, render_mode=eval_render_mode, flatten=True)
        evaluate_policy(eval_env, q_net, n_eval_episodes, eval_exploration_rate)
        eval_env.close()
    return q_net
