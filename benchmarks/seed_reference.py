"""The seed tutorial's DQN, written as the seed writes it: the honest reference for speed comparisons.

This file is deliberately self-contained (gymnasium, numpy and torch only; no qiter import) so that a
change in qiter can never make the reference faster or slower. It follows the seed's DQN section line
for line: ``ReplayBuffer`` (numpy ring buffer, ``np.random.randint`` sampling), ``QNetwork`` (two hidden
``nn.Linear`` + ``nn.ReLU`` layers in an ``nn.Sequential``), ``epsilon_greedy_action_selection``
(``th.no_grad`` and ``th.as_tensor`` on every greedy step), ``collect_one_step``, ``linear_schedule``,
``dqn_update`` (target network, MSE loss, default ``th.optim.Adam``) and the ``run_dqn`` loop.

The only departure: ``run_dqn`` does not evaluate or save checkpoints during training
(``evaluation_interval=0``), so that the timed part is training only; :func:`evaluate_policy` evaluates
the returned network afterwards.

Run it on its own: ``python benchmarks/seed_reference.py --steps 80000``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch as th
import torch.nn as nn
from gymnasium import spaces


@dataclass
class TorchReplayBufferSamples:
    observations: th.Tensor
    next_observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    terminateds: th.Tensor


@dataclass
class ReplayBufferSamples:
    """A dataclass containing transitions from the replay buffer."""

    observations: np.ndarray  # same as states in the theory
    next_observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminateds: np.ndarray

    def to_torch(self, device: str = "cpu") -> TorchReplayBufferSamples:
        """Convert the samples to PyTorch tensors."""
        return TorchReplayBufferSamples(
            th.as_tensor(self.observations, device=device),
            th.as_tensor(self.next_observations, device=device),
            th.as_tensor(self.actions, device=device),
            th.as_tensor(self.rewards, device=device),
            th.as_tensor(self.terminateds, device=device),
        )


class ReplayBuffer:
    """A simple replay buffer class to store and sample transitions (the seed's)."""

    def __init__(
        self, buffer_size: int, observation_space: spaces.Box, action_space: spaces.Discrete
    ) -> None:
        self.current_idx = 0
        self.buffer_size = buffer_size
        self.is_full = False
        self.observation_space = observation_space
        self.action_space = action_space
        self.observations = np.zeros((buffer_size, *observation_space.shape), dtype=observation_space.dtype)
        self.next_observations = np.zeros(
            (buffer_size, *observation_space.shape), dtype=observation_space.dtype
        )
        action_dim = 1
        self.actions = np.zeros((buffer_size, action_dim), dtype=action_space.dtype)
        self.rewards = np.zeros((buffer_size,), dtype=np.float32)
        self.terminateds = np.zeros((buffer_size,), dtype=bool)

    def store_transition(
        self, obs: np.ndarray, next_obs: np.ndarray, action: int, reward: float, terminated: bool
    ) -> None:
        self.observations[self.current_idx] = obs
        self.next_observations[self.current_idx] = next_obs
        self.actions[self.current_idx] = action
        self.rewards[self.current_idx] = reward
        self.terminateds[self.current_idx] = terminated
        self.current_idx += 1
        if self.current_idx == self.buffer_size:
            self.current_idx = 0
            self.is_full = True

    def sample(self, batch_size: int) -> ReplayBufferSamples:
        upper_bound = self.buffer_size if self.is_full else self.current_idx
        batch_indices = np.random.randint(0, upper_bound, size=batch_size)
        return ReplayBufferSamples(
            self.observations[batch_indices],
            self.next_observations[batch_indices],
            self.actions[batch_indices],
            self.rewards[batch_indices],
            self.terminateds[batch_indices],
        )


class QNetwork(nn.Module):
    """A Q-Network for the DQN algorithm (the seed's)."""

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        n_hidden_units: int = 64,
        activation_fn: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        obs_dim = observation_space.shape[0]
        n_actions = int(action_space.n)
        self.q_net = nn.Sequential(
            nn.Linear(obs_dim, n_hidden_units),
            activation_fn(),
            nn.Linear(n_hidden_units, n_hidden_units),
            activation_fn(),
            nn.Linear(n_hidden_units, n_actions),
        )

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.q_net(observations)


def epsilon_greedy_action_selection(
    q_net: QNetwork,
    observation: np.ndarray,
    exploration_rate: float,
    action_space: spaces.Discrete,
    device: str = "cpu",
) -> int:
    if np.random.rand() < exploration_rate:
        action = int(action_space.sample())
    else:
        with th.no_grad():
            obs_tensor = th.as_tensor(observation[np.newaxis, ...], device=device)
            q_values = q_net(obs_tensor)
            action = q_values.argmax().item()
    return action


def collect_one_step(
    env: gym.Env,
    q_net: QNetwork,
    replay_buffer: ReplayBuffer,
    obs: np.ndarray,
    exploration_rate: float = 0.1,
    verbose: int = 0,
) -> np.ndarray:
    action = epsilon_greedy_action_selection(q_net, obs, exploration_rate, env.action_space)
    next_obs, reward, terminated, truncated, info = env.step(action)
    replay_buffer.store_transition(obs, next_obs, action, float(reward), terminated)
    obs = next_obs
    if "episode" in info and verbose >= 1:
        print(f"Episode return={float(info['episode']['r']):.2f} length={int(info['episode']['l'])}")
    done = terminated or truncated
    if done:
        obs, _ = env.reset()
    return obs


def linear_schedule(initial_value: float, final_value: float, current_step: int, max_steps: int) -> float:
    progress = current_step / max_steps
    progress = min(progress, 1.0)
    return initial_value + progress * (final_value - initial_value)


def dqn_update(
    q_net: QNetwork,
    q_target_net: QNetwork,
    optimizer: th.optim.Optimizer,
    replay_buffer: ReplayBuffer,
    batch_size: int,
    gamma: float,
) -> None:
    replay_data = replay_buffer.sample(batch_size).to_torch()
    with th.no_grad():
        next_q_values = q_target_net(replay_data.next_observations)
        next_q_values, _ = next_q_values.max(dim=1)
        should_bootstrap = th.logical_not(replay_data.terminateds)
        next_q_values = next_q_values * should_bootstrap
        td_target = replay_data.rewards + gamma * next_q_values
    q_values = q_net(replay_data.observations)
    current_q_values = th.gather(q_values, dim=1, index=replay_data.actions)
    current_q_values = current_q_values.squeeze(dim=1)
    assert current_q_values.shape == (batch_size,), f"{current_q_values.shape} != {(batch_size,)}"
    assert current_q_values.shape == td_target.shape, f"{current_q_values.shape} != {td_target.shape}"
    loss = ((current_q_values - td_target) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def evaluate_policy(
    eval_env: gym.Env, q_net: QNetwork, n_eval_episodes: int, eval_exploration_rate: float = 0.0
) -> np.ndarray:
    """Returns of ``n_eval_episodes`` episodes of the epsilon-greedy policy (the seed's evaluation, no video)."""
    episode_returns = []
    for _ in range(n_eval_episodes):
        obs, _ = eval_env.reset()
        total_reward, done = 0.0, False
        while not done:
            action = epsilon_greedy_action_selection(q_net, obs, eval_exploration_rate, eval_env.action_space)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            total_reward += float(reward)
            done = terminated or truncated
        episode_returns.append(total_reward)
    return np.array(episode_returns)


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
    evaluation_interval: int = 0,
    eval_exploration_rate: float = 0.0,
    seed: int = 2023,
) -> QNetwork:
    """The seed's ``run_dqn`` (with a target network). ``evaluation_interval=0``: no evaluation inside."""
    np.random.seed(seed)
    th.manual_seed(seed)
    env = gym.make(env_id)
    env = gym.wrappers.FlattenObservation(env)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    assert isinstance(env.observation_space, spaces.Box)
    assert isinstance(env.action_space, spaces.Discrete)
    env.action_space.seed(seed)
    eval_env = gym.make(env_id)
    eval_env = gym.wrappers.FlattenObservation(eval_env)
    eval_env.reset(seed=seed)
    eval_env.action_space.seed(seed)

    q_net = QNetwork(env.observation_space, env.action_space, n_hidden_units=n_hidden_units)
    q_target_net = QNetwork(env.observation_space, env.action_space, n_hidden_units=n_hidden_units)
    q_target_net.load_state_dict(q_net.state_dict())
    if env.observation_space.dtype == np.float64:
        q_net.double()
        q_target_net.double()
    optimizer = th.optim.Adam(q_net.parameters(), lr=learning_rate)
    replay_buffer = ReplayBuffer(replay_buffer_size, env.observation_space, env.action_space)
    obs, _ = env.reset(seed=seed)
    for current_step in range(1, n_timesteps + 1):
        exploration_rate = linear_schedule(
            exploration_initial_eps,
            exploration_final_eps,
            current_step,
            int(exploration_fraction * n_timesteps),
        )
        obs = collect_one_step(env, q_net, replay_buffer, obs, exploration_rate=exploration_rate, verbose=0)
        if (current_step % target_network_update_interval) == 0:
            q_target_net.load_state_dict(q_net.state_dict())
        if (current_step % update_interval) == 0 and current_step > learning_starts:
            dqn_update(q_net, q_target_net, optimizer, replay_buffer, batch_size, gamma=gamma)
        if evaluation_interval > 0 and (current_step % evaluation_interval) == 0:
            returns = evaluate_policy(
                eval_env, q_net, n_eval_episodes, eval_exploration_rate=eval_exploration_rate
            )
            print(
                f"Evaluation at step {current_step}: mean return {returns.mean():.2f} +/- {returns.std():.2f}"
            )
    env.close()
    eval_env.close()
    return q_net


# The seed's CartPole call (tuned hyperparameters from the RL Zoo), without evaluation inside the loop.
SEED_CARTPOLE = dict(
    env_id="CartPole-v1",
    replay_buffer_size=100_000,
    target_network_update_interval=10,
    learning_starts=1000,
    exploration_initial_eps=1.0,
    exploration_final_eps=0.04,
    exploration_fraction=0.1,
    n_timesteps=80_000,
    update_interval=2,
    learning_rate=1e-3,
    batch_size=64,
    gamma=0.99,
    n_hidden_units=64,
    seed=2022,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80_000)
    parser.add_argument("--seed", type=int, default=2022)
    args = parser.parse_args()
    th.set_num_threads(1)
    start = time.perf_counter()
    q_net = run_dqn(**{**SEED_CARTPOLE, "n_timesteps": args.steps, "seed": args.seed})
    elapsed = time.perf_counter() - start
    eval_env = gym.make("CartPole-v1")
    eval_env.reset(seed=args.seed + 1)
    returns = evaluate_policy(eval_env, q_net, 10)
    print(
        f"{args.steps} steps in {elapsed:.1f} s: {args.steps / elapsed:,.0f} steps/s; "
        f"greedy return {returns.mean():.1f} +/- {returns.std():.1f}"
    )


if __name__ == "__main__":
    main()
