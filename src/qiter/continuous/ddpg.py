"""DDPG (Lillicrap et al., 2016) and TD3 (Fujimoto et al., 2018): Q-learning with a learned maximizer.

The actor mu(s) approximates argmax_a Q(s, a); the TD target uses the target actor's action in place of the
max. TD3 is DDPG with three options of :class:`~qiter.continuous.config.ActorCriticConfig` turned on:

- ``n_critics=2``: twin critics, the TD target takes the min of the two target critics (clipped double Q);
- ``target_policy_noise``: clipped Gaussian noise on the target action (target policy smoothing);
- ``policy_delay``: the actor and the targets are updated once every ``policy_delay`` critic updates.

One gradient step, in the paper's order: critic(s) towards ``td_target``; then, on every
``policy_delay``-th step, the actor up the first critic's gradient and Polyak averaging of both targets.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch as th
import torch.nn.functional as F
from gymnasium import spaces

from qiter.buffers.replay import TorchReplayBufferSamples
from qiter.continuous.agent import ContinuousAgent, q_stats
from qiter.continuous.config import ActorCriticConfig, DDPGConfig, TD3Config
from qiter.continuous.networks import Actor, Critics
from qiter.optim import make_adam, polyak_update

__all__ = ["ActorCriticAgent", "DDPGAgent", "TD3Agent", "td_target"]


def td_target(
    samples: TorchReplayBufferSamples,
    actor_target: Actor,
    q_target_net: Critics,
    gamma: float,
    target_policy_noise: float,
    target_noise_clip: float,
) -> th.Tensor:
    """r + gamma (1 - terminated) min_i Q_target_i(s', clip(mu_target(s') + clip(noise))), no gradient.

    :param samples: A batch.
    :param actor_target: The target actor.
    :param q_target_net: The target critic(s); with two, the min is taken.
    :param gamma: Discount.
    :param target_policy_noise: Std of the smoothing noise (0: DDPG's plain target action).
    :param target_noise_clip: The noise is clipped to [-c, c].
    """
    with th.no_grad():
        next_actions = actor_target(samples.next_observations)
        if target_policy_noise > 0:
            noise = (th.randn_like(next_actions) * target_policy_noise).clamp(
                -target_noise_clip, target_noise_clip
            )
            next_actions = (next_actions + noise).clamp(-1.0, 1.0)
        next_q = q_target_net(samples.next_observations, next_actions).min(dim=0).values
        return samples.rewards + gamma * next_q.masked_fill(samples.terminateds, 0.0)


class ActorCriticAgent(ContinuousAgent):
    """DDPG and TD3, as options of one agent (see the module's description).

    :param config: The hyperparameters.
    :param observation_space: A Box space (flattened).
    :param action_space: A bounded Box space.
    """

    config_class: ClassVar[type[ActorCriticConfig]] = ActorCriticConfig
    fixed_keys: ClassVar[tuple[str, ...]] = ("env_id", "n_envs", "hidden_sizes", "n_critics")
    policy_modules: ClassVar[tuple[str, ...]] = ("actor",)

    def __init__(
        self, config: ActorCriticConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__(config, observation_space, action_space)
        self.config: ActorCriticConfig = config
        self.actor = Actor(self.obs_dim, self.action_dim, self.hidden_sizes).to(self.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.q_net = Critics(self.obs_dim, self.action_dim, self.hidden_sizes, config.n_critics).to(
            self.device
        )
        self.q_target_net = copy.deepcopy(self.q_net)
        for target in (self.actor_target, self.q_target_net):
            target.requires_grad_(False)
        self.actor_optimizer = make_adam(self.actor.parameters(), config.learning_rate)
        self.critic_optimizer = make_adam(self.q_net.parameters(), config.learning_rate)
        self._last_actor_loss = 0.0

    def greedy_tensor(self, observations: th.Tensor) -> th.Tensor:
        return self.actor(observations)

    def gradient_step(self, samples: TorchReplayBufferSamples) -> dict[str, float]:
        cfg = self.config
        target = td_target(
            samples,
            self.actor_target,
            self.q_target_net,
            cfg.gamma,
            cfg.target_policy_noise,
            cfg.target_noise_clip,
        )
        q_values = self.q_net(samples.observations, samples.actions)
        # Each critic regresses on the same target; summing their losses trains them in one backward pass.
        critic_loss = F.mse_loss(q_values, target.expand_as(q_values), reduction="none").mean(dim=1).sum()
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        if self.n_updates % cfg.policy_delay == 0:
            self._last_actor_loss = self._actor_step(samples.observations)
            polyak_update(self.q_target_net, self.q_net, cfg.tau)
            polyak_update(self.actor_target, self.actor, cfg.tau)
        return {
            "critic_loss": float(critic_loss.item()) / cfg.n_critics,
            "actor_loss": self._last_actor_loss,
            **q_stats(q_values[0].detach()),
        }

    def _actor_step(self, observations: th.Tensor) -> float:
        """Move mu(s) up the first critic's gradient; the critics are not updated by this loss."""
        critic = self.q_net.q_nets[0]
        critic.requires_grad_(False)  # no weight gradients of the critic: only the actor learns here
        actor_loss = -self.q_net.first(observations, self.actor(observations)).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        critic.requires_grad_(True)
        return float(actor_loss.item())

    def modules(self) -> dict[str, th.nn.Module | th.optim.Optimizer]:
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "q_net": self.q_net,
            "q_target_net": self.q_target_net,
            "actor_optimizer": self.actor_optimizer,
            "critic_optimizer": self.critic_optimizer,
        }


class DDPGAgent(ActorCriticAgent):
    """DDPG: one critic, the actor updated at every step, no target smoothing."""

    algo: ClassVar[str] = "ddpg"
    checkpoint_format: ClassVar[str] = "qiter-ddpg-v1"
    config_class: ClassVar[type[ActorCriticConfig]] = DDPGConfig


class TD3Agent(ActorCriticAgent):
    """TD3: twin critics, delayed actor updates, target policy smoothing."""

    algo: ClassVar[str] = "td3"
    checkpoint_format: ClassVar[str] = "qiter-td3-v1"
    config_class: ClassVar[type[ActorCriticConfig]] = TD3Config
