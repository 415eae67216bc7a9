"""Hand-built cases for the pieces of the continuous-action agents: NAF's quadratic, the sampled max and
CEM, TD3's target and its delayed actor."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.agent import Transitions
from qiter.buffers.replay import TorchReplayBufferSamples
from qiter.continuous.config import DDPGConfig, NAFConfig, TD3Config
from qiter.continuous.ddpg import ActorCriticAgent, TD3Agent, td_target
from qiter.continuous.naf import NAFAgent
from qiter.continuous.networks import NAFNetwork, advantage
from qiter.continuous.noise import ExplorationNoise
from qiter.continuous.sampled_max import cem_max

OBS_SPACE = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACTION_SPACE = spaces.Box(-2.0, 2.0, (2,), np.float32)


def test_naf_advantage_is_zero_at_mu_and_negative_elsewhere() -> None:
    th.manual_seed(0)
    net = NAFNetwork(obs_dim=3, action_dim=3, hidden_sizes=(16, 16))
    obs = th.randn(64, 3)
    value, mu, lower = net.heads(obs)
    assert th.allclose(advantage(mu, mu, lower), th.zeros(64))
    assert th.allclose(net(obs, mu), value)  # Q(s, mu(s)) = V(s): the max is exact
    other = mu + th.randn(64, 3) * 0.3
    assert (advantage(other, mu, lower) < 0).all()
    # L L^T is positive definite: every eigenvalue positive, also when the raw diagonal outputs are negative
    # (the exp keeps L's diagonal positive, and a triangular L with a positive diagonal is invertible).
    with th.no_grad():
        net.l_head.bias.fill_(-1.0)
    for _, _, lower in (net.heads(obs), net.heads(obs * 10)):
        assert th.equal(lower.triu(1), th.zeros_like(lower))  # lower triangular
        assert (th.diagonal(lower, dim1=1, dim2=2) > 0).all()
        precision = (lower @ lower.transpose(1, 2)).double()
        assert (th.linalg.eigvalsh(precision) > 0).all()


def test_naf_advantage_is_the_quadratic_form() -> None:
    mu = th.tensor([[0.1, -0.2]])
    lower = th.tensor([[[2.0, 0.0], [0.5, 1.0]]])
    action = th.tensor([[0.4, 0.3]])
    d = (action - mu)[0]
    expected = -0.5 * d @ (lower[0] @ lower[0].T) @ d
    assert advantage(action, mu, lower).item() == pytest.approx(expected.item())


def _quadratic_score(target: th.Tensor):  # type: ignore[no-untyped-def]
    """Q(s, a) = -|a - target(s)|^2, with s the row's index carried in the observation."""

    def score(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return -((actions - target[obs[:, 0].long()]) ** 2).sum(dim=1)

    return score


def test_sampled_max_is_exact_when_the_maximizer_is_sampled() -> None:
    th.manual_seed(0)
    batch, n_samples, dim = 5, 16, 2
    target = th.rand(batch, dim) * 2 - 1
    samples = th.rand(batch, n_samples, dim) * 2 - 1
    slots = th.tensor([3, 0, 15, 7, 9])
    samples[th.arange(batch), slots] = target  # the maximizer is among the samples
    obs = th.arange(batch, dtype=th.float32).unsqueeze(1)
    actions, values = cem_max(_quadratic_score(target), obs, dim, n_samples, 4, 0, initial_actions=samples)
    assert th.equal(actions, target)
    assert th.equal(values, th.zeros(batch))


def test_sampled_max_without_the_maximizer_is_below_the_max() -> None:
    th.manual_seed(0)
    target = th.full((4, 1), 0.5)
    samples = th.linspace(-1, 0, 8).reshape(1, 8, 1).repeat(4, 1, 1)  # all left of the maximizer
    obs = th.arange(4, dtype=th.float32).unsqueeze(1)
    actions, values = cem_max(_quadratic_score(target), obs, 1, 8, 2, 0, initial_actions=samples)
    assert th.allclose(actions, th.zeros(4, 1)) and (values < 0).all()


def test_cem_converges_to_the_maximizer_of_a_concave_q() -> None:
    th.manual_seed(1)
    batch, dim = 32, 3
    target = th.rand(batch, dim) * 1.6 - 0.8
    obs = th.arange(batch, dtype=th.float32).unsqueeze(1)
    uniform_actions, _ = cem_max(_quadratic_score(target), obs, dim, 64, 10, 0)
    actions, values = cem_max(_quadratic_score(target), obs, dim, 64, 10, 8)
    error = (actions - target).norm(dim=1)
    assert error.max() < 0.02 and error.median() < 0.002
    assert error.mean() < (uniform_actions - target).norm(dim=1).mean() / 5  # the rounds do refine
    assert th.allclose(values, -(error**2), atol=1e-6)


class _ConstantCritic(th.nn.Module):
    """Critic i returns values[i] whatever the input."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = th.tensor(values)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return self.values.unsqueeze(1).expand(len(self.values), len(obs))


def _samples(batch: int = 4) -> TorchReplayBufferSamples:
    return TorchReplayBufferSamples(
        observations=th.zeros(batch, 3), next_observations=th.zeros(batch, 3), actions=th.zeros(batch, 2),
        rewards=th.tensor([1.0, -1.0, 0.5, 2.0][:batch]), terminateds=th.tensor([False, True, False, False][:batch]),
    )  # fmt: skip


def test_td3_target_takes_the_min_of_the_twin_critics() -> None:
    actor = th.nn.Sequential(th.nn.Linear(3, 2), th.nn.Tanh())
    samples = _samples()
    for values in ([3.0, 7.0], [7.0, 3.0]):
        target = td_target(samples, actor, _ConstantCritic(values), 0.9, 0.2, 0.5)  # type: ignore[arg-type]
        expected = samples.rewards + 0.9 * 3.0 * (~samples.terminateds)
        assert th.allclose(target, expected)
    # DDPG's single critic: its own value.
    target = td_target(samples, actor, _ConstantCritic([7.0]), 0.9, 0.0, 0.5)  # type: ignore[arg-type]
    assert th.allclose(target, samples.rewards + 0.9 * 7.0 * (~samples.terminateds))


def test_td3_target_policy_noise_is_clipped() -> None:
    th.manual_seed(0)
    actor = th.nn.Sequential(th.nn.Linear(3, 2), th.nn.Tanh())
    with th.no_grad():
        for p in actor.parameters():
            p.zero_()
    seen: list[th.Tensor] = []

    class Recorder(_ConstantCritic):
        def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
            seen.append(actions)
            return super().forward(obs, actions)

    td_target(_samples(), actor, Recorder([0.0, 0.0]), 0.9, 10.0, 0.3)  # type: ignore[arg-type]
    assert seen[0].abs().max() <= 0.3 + 1e-6 and seen[0].abs().max() > 0.29  # huge noise, clipped at c


def _filled_agent(cls: type[ActorCriticAgent], config: DDPGConfig) -> ActorCriticAgent:
    th.manual_seed(0)
    agent = cls(config, OBS_SPACE, ACTION_SPACE)
    rng = np.random.default_rng(0)
    for _ in range(64):
        agent.buffer.add(
            rng.normal(size=(1, 3)), rng.normal(size=(1, 3)), rng.uniform(-1, 1, (1, 2)), rng.normal(size=1),
            np.zeros(1, bool), np.zeros(1, bool),
        )  # fmt: skip
    return agent


@pytest.mark.parametrize("policy_delay", [1, 2, 3])
def test_td3_actor_and_targets_update_every_policy_delay_steps(policy_delay: int) -> None:
    config = TD3Config(hidden_sizes="8,8", batch_size=16, policy_delay=policy_delay, learning_starts=0)
    agent = _filled_agent(TD3Agent, config)
    changed = []
    for _ in range(6):
        actor_before = [p.clone() for p in agent.actor.parameters()]
        target_before = [p.clone() for p in agent.q_target_net.parameters()]
        critic_before = [p.clone() for p in agent.q_net.parameters()]
        agent.n_updates += 1  # as ContinuousAgent.update counts them
        agent.gradient_step(agent.buffer.sample(16).to_torch())
        actor_moved = any(not th.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
        target_moved = any(not th.equal(a, b) for a, b in zip(target_before, agent.q_target_net.parameters()))
        assert any(not th.equal(a, b) for a, b in zip(critic_before, agent.q_net.parameters()))  # every step
        assert actor_moved == target_moved
        changed.append(actor_moved)
    assert changed == [step % policy_delay == 0 for step in range(1, 7)]


def test_the_actor_step_leaves_the_critic_alone() -> None:
    agent = _filled_agent(TD3Agent, TD3Config(hidden_sizes="8,8", batch_size=16))
    critic_before = [p.clone() for p in agent.q_net.parameters()]
    agent._actor_step(agent.buffer.sample(16).to_torch().observations)
    assert all(th.equal(a, b) for a, b in zip(critic_before, agent.q_net.parameters()))
    assert all(p.requires_grad for p in agent.q_net.parameters())


def test_ornstein_uhlenbeck_noise_has_the_stationary_std_and_resets() -> None:
    noise = ExplorationNoise((2, 1), std=0.5, theta=0.05, rng=np.random.default_rng(0))
    draws = np.array([noise()[:, 0].copy() for _ in range(20_000)])
    assert draws[2000:].std() == pytest.approx(0.5, rel=0.1)
    assert abs(np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1] - 0.95) < 0.02  # correlated in time
    noise.reset(np.array([True, False]))
    assert noise.state[0, 0] == 0 and noise.state[1, 0] != 0
    gaussian = ExplorationNoise((1, 1), std=0.5, theta=1.0, rng=np.random.default_rng(0))
    draws = np.array([gaussian()[0, 0] for _ in range(20_000)])
    assert (
        draws.std() == pytest.approx(0.5, rel=0.05) and abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03
    )


def test_naf_gradient_step_regresses_on_the_target_value_and_averages_the_target() -> None:
    """The TD target is r + gamma (1 - terminated) V_target(s'), from the target network's value head (not
    the online network, not Q at a stored action); then target <- (1 - tau) target + tau online."""
    th.manual_seed(0)
    config = NAFConfig(hidden_sizes="8,8", gamma=0.9, tau=0.25, learning_rate=1e-2)
    agent = NAFAgent(config, OBS_SPACE, ACTION_SPACE)
    with th.no_grad():
        agent.q_target_net.value_head.bias.add_(5.0)  # the target's V differs from the online one's
    samples = _samples()
    samples.observations, samples.next_observations = th.randn(4, 3), th.randn(4, 3)
    samples.actions = th.rand(4, 2) * 2 - 1
    with th.no_grad():
        next_v = agent.q_target_net.value(samples.next_observations)
        expected_target = samples.rewards + 0.9 * next_v * (~samples.terminateds)
        expected_loss = ((agent.q_net(samples.observations, samples.actions) - expected_target) ** 2).mean()
    target_before = [p.clone() for p in agent.q_target_net.parameters()]
    metrics = agent.gradient_step(samples)
    assert metrics["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    for old, new, online in zip(target_before, agent.q_target_net.parameters(), agent.q_net.parameters()):
        assert th.allclose(new, 0.75 * old + 0.25 * online, atol=1e-6)
    # The greedy action is mu(s) in [-1, 1], scaled once to the environment's [-2, 2].
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32) * 10
    mu = agent.q_net.heads(th.as_tensor(obs))[1].detach().numpy()
    assert np.abs(mu).max() <= 1.0
    np.testing.assert_allclose(agent.act(obs, explore=False), 2.0 * mu, rtol=1e-6)


def _count_gradient_steps(config: TD3Config, episode_ends: list[list[int]]) -> list[int]:
    """Drive a TD3 agent as the run loop does (observe, then update(step)) and return how many gradient
    steps each call of ``update`` made; ``episode_ends[t]`` lists the copies whose episode ends at step t."""
    agent = TD3Agent(config, OBS_SPACE, ACTION_SPACE)
    made: list[int] = []
    agent.gradient_step = lambda samples: made.__setitem__(-1, made[-1] + 1) or {}  # type: ignore[method-assign]
    n, step = config.n_envs, 0
    rng = np.random.default_rng(0)
    for ends in episode_ends:
        done = np.isin(np.arange(n), ends)
        agent.observe(Transitions(
            rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.uniform(-2, 2, (n, 2)), rng.normal(size=n),
            done, np.zeros(n, bool),
        ))  # fmt: skip
        step += n
        made.append(0)
        agent.update(step)
    return made


def test_the_step_schedule_makes_gradient_steps_every_update_interval_steps() -> None:
    config = TD3Config(
        hidden_sizes="8,8", batch_size=4, learning_starts=4, update_interval=3, gradient_steps=2
    )
    made = _count_gradient_steps(config, [[]] * 12)
    assert made == [0, 0, 0, 0, 0, 2, 0, 0, 2, 0, 0, 2]  # at steps 6, 9, 12: multiples of 3 after step 4
    # gradient_steps=-1: one per step collected since the last update, counted also before learning starts
    config.gradient_steps = -1
    assert _count_gradient_steps(config, [[]] * 12) == [0, 0, 0, 0, 0, 3, 0, 0, 3, 0, 0, 3]


def test_the_episode_schedule_trains_once_an_episode_as_many_steps_as_it_had() -> None:
    # SB3's train_freq=(1, "episode"), gradient_steps=-1: episodes end at steps 3, 8 and 12; learning starts
    # after step 4, so the episode ending at 3 trains nothing, and the one ending at 8 trains its own 5 steps.
    config = TD3Config(hidden_sizes="8,8", batch_size=4, learning_starts=4, update_unit="episodes",
                       gradient_steps=-1)  # fmt: skip
    ends = [[0] if step in (3, 8, 12) else [] for step in range(1, 14)]
    assert _count_gradient_steps(config, ends) == [0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 4, 0]
    # Every second episode, 3 gradient steps; two copies ending together are two episodes.
    config = TD3Config(hidden_sizes="8,8", batch_size=4, learning_starts=0, update_unit="episodes",
                       update_interval=2, gradient_steps=3, n_envs=2)  # fmt: skip
    made = _count_gradient_steps(config, [[0], [], [0, 1], [1], [], [0]])
    assert made == [0, 0, 3, 3, 0, 0]  # 1 episode, 3 (update, 1 left over), 2 (update), then 1


def test_the_episode_schedule_counts_survive_a_checkpoint() -> None:
    config = TD3Config(hidden_sizes="8,8", batch_size=4, update_unit="episodes", gradient_steps=-1)
    agent = _filled_agent(TD3Agent, config)
    agent.steps_since_update, agent.episodes_since_update = 7, 1  # in the middle of a second episode
    restored = TD3Agent(config, OBS_SPACE, ACTION_SPACE)
    restored.load_state_dict(agent.state_dict())
    assert (restored.steps_since_update, restored.episodes_since_update) == (7, 1)
