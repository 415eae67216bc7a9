"""The seed tutorial's DQN cells, with only their imports changed: every ``assert`` of the seed holds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import torch.nn as nn

from qiter.dqn import (
    QNetwork,
    ReplayBuffer,
    collect_one_step,
    dqn_update,
    epsilon_greedy_action_selection,
    evaluate_policy,
    linear_schedule,
    run_dqn,
)


def test_q_network_cell() -> None:
    env = gym.make("CartPole-v1")
    q_net = QNetwork(env.observation_space, env.action_space)
    assert isinstance(q_net.q_net, nn.Sequential)
    assert len(q_net.q_net) == 5
    assert isinstance(q_net.q_net[0], nn.Linear)
    assert isinstance(q_net.q_net[1], nn.ReLU)
    assert isinstance(q_net.q_net[-1], nn.Linear)
    obs, _ = env.reset()
    with th.no_grad():
        obs_tensor = th.as_tensor(obs[np.newaxis, ...])
        q_values = q_net(obs_tensor)
        assert q_values.shape == (1, 2)
        best_action = q_values.argmax().item()
        assert isinstance(best_action, int)


def test_collect_one_step_and_linear_schedule_cells() -> None:
    env = gym.make("CartPole-v1")
    q_net = QNetwork(env.observation_space, env.action_space)
    buffer = ReplayBuffer(2000, env.observation_space, env.action_space)
    obs, _ = env.reset()
    for _ in range(1000):
        obs = collect_one_step(env, q_net, buffer, obs, exploration_rate=0.1)
    assert buffer.current_idx == 1000
    for _ in range(1000):
        obs = collect_one_step(env, q_net, buffer, obs, exploration_rate=0.1)
    assert buffer.current_idx == 0
    assert buffer.is_full

    exploration_initial_eps = 1.0
    exploration_final_eps = 0.01
    exploration_rate = exploration_initial_eps
    n_steps = 100
    for step in range(n_steps + 1):
        exploration_rate = linear_schedule(exploration_initial_eps, exploration_final_eps, step, n_steps)
        if step == 0:
            assert exploration_rate == exploration_initial_eps
        obs = collect_one_step(env, q_net, buffer, obs, exploration_rate=exploration_rate)
    assert np.allclose(exploration_rate, exploration_final_eps)
    # The schedule is clipped after max_steps.
    assert linear_schedule(1.0, 0.1, 500, 100) == pytest.approx(0.1)


def test_epsilon_greedy_is_greedy_at_zero_and_random_at_one() -> None:
    env = gym.make("CartPole-v1")
    q_net = QNetwork(env.observation_space, env.action_space)
    obs, _ = env.reset(seed=0)
    with th.no_grad():
        greedy = int(q_net(th.as_tensor(obs[None])).argmax())
    assert all(
        epsilon_greedy_action_selection(q_net, obs, 0.0, env.action_space) == greedy for _ in range(20)
    )
    env.action_space.seed(0)
    actions = {epsilon_greedy_action_selection(q_net, obs, 1.0, env.action_space) for _ in range(50)}
    assert actions == {0, 1}


def test_dqn_update_is_one_gradient_step_on_the_td_target() -> None:
    """dqn_update must move Q(s, a) towards r + gamma * max Q_target(s'), not bootstrapping on termination."""
    env = gym.make("CartPole-v1")
    th.manual_seed(0)
    q_net = QNetwork(env.observation_space, env.action_space)
    q_target_net = QNetwork(env.observation_space, env.action_space)
    buffer = ReplayBuffer(10, env.observation_space, env.action_space)
    obs = np.ones(4, dtype=np.float32)
    buffer.store_transition(obs, obs * 2, 1, 1.0, True)
    optimizer = th.optim.SGD(q_net.parameters(), lr=0.01)
    with th.no_grad():
        before = q_net(th.as_tensor(obs[None]))[0, 1].item()
    dqn_update(q_net, q_target_net, optimizer, buffer, batch_size=4, gamma=0.99)
    with th.no_grad():
        after = q_net(th.as_tensor(obs[None]))[0, 1].item()
    # Terminated: the target is the reward alone, whatever the target network says.
    assert abs(after - 1.0) < abs(before - 1.0)


def test_evaluate_policy_returns_mean_and_std_and_writes_video(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eval_env = gym.make("CartPole-v1", render_mode="rgb_array")
    q_net = QNetwork(eval_env.observation_space, eval_env.action_space)
    mean, std = evaluate_policy(eval_env, q_net, 2, video_name="DQN_test", video_folder=tmp_path)
    assert mean > 0 and std >= 0
    video = tmp_path / "DQN_test.mp4"
    assert video.exists() and video.stat().st_size > 1000


@pytest.mark.slow
def test_run_dqn_with_the_seeds_cartpole_call_reaches_500(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The seed's own CartPole call (RL Zoo tuned values) must reach a mean evaluation return of 500."""
    env_id = "CartPole-v1"
    returns: list[float] = []
    q_net = run_dqn(
        env_id=env_id,
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
        n_eval_episodes=10,
        evaluation_interval=5000,
        eval_exploration_rate=0.0,
        seed=2022,
        checkpoint_folder=tmp_path,
        progress=False,
        on_evaluation=lambda step, mean, std, net: returns.append(mean),
    )
    assert isinstance(q_net, QNetwork)
    assert len(returns) == 16
    assert max(returns) == 500.0
    # Checkpoints named as in the seed.
    assert (tmp_path / f"q_net_checkpoint_{env_id}_80000.pth").exists()
    loaded = QNetwork(gym.make(env_id).observation_space, gym.make(env_id).action_space)
    loaded.load_state_dict(th.load(tmp_path / f"q_net_checkpoint_{env_id}_80000.pth"))
