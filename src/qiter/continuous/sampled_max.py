"""Q-learning with a sampled max, refined by the cross-entropy method (CEM), as in QT-Opt (Kalashnikov et
al., 2018).

A critic Q(s, a) over state and action; max_a Q(s, a) and its argmax, in acting and in the TD target, are
approximated by :func:`cem_max`: the best of ``n_samples`` uniform actions, then ``iterations`` rounds of
sampling from a Gaussian fitted to the ``n_elites`` best. Every sample of a batch is scored in one batched
forward pass. With ``n_critics=2`` the target uses the min of two target critics (clipped double Q).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import ClassVar

import torch as th
import torch.nn.functional as F
from gymnasium import spaces

from qiter.buffers.replay import TorchReplayBufferSamples
from qiter.continuous.agent import ContinuousAgent, q_stats
from qiter.continuous.config import CEMConfig
from qiter.continuous.networks import Critics
from qiter.optim import make_adam, polyak_update

__all__ = ["CEMAgent", "cem_max"]

#: Smallest CEM standard deviation: the search keeps some width once the elites agree.
MIN_STD = 1e-3


def cem_max(
    score: Callable[[th.Tensor, th.Tensor], th.Tensor],
    observations: th.Tensor,
    action_dim: int,
    n_samples: int,
    n_elites: int,
    iterations: int,
    initial_actions: th.Tensor | None = None,
) -> tuple[th.Tensor, th.Tensor]:
    """Approximate argmax_a and max_a of ``score(s, a)`` over [-1, 1]^action_dim for each observation.

    :param score: ``(observations (M, obs_dim), actions (M, action_dim)) -> values (M,)``.
    :param observations: ``(batch, obs_dim)``.
    :param action_dim: Action size.
    :param n_samples: Actions scored per observation and round.
    :param n_elites: Best actions the Gaussian of the next round is fitted to.
    :param iterations: CEM rounds after the uniform one (0: the best of the uniform samples).
    :param initial_actions: The first round's actions, ``(batch, n_samples, action_dim)``, instead of
        uniform ones (to seed the search, or to test it).
    :return: The best action seen and its value, shapes ``(batch, action_dim)`` and ``(batch,)``.
    """
    batch = len(observations)
    # Each observation repeated once per sample: one forward pass scores the whole round.
    repeated = observations.repeat_interleave(n_samples, dim=0)
    if initial_actions is None:
        actions = th.rand(batch, n_samples, action_dim, device=observations.device) * 2 - 1
    else:
        actions = initial_actions
    best_actions = observations.new_zeros(batch, action_dim)
    best_values = observations.new_full((batch,), -th.inf)
    rows = th.arange(batch, device=observations.device)
    for round_ in range(iterations + 1):
        values = score(repeated, actions.reshape(-1, action_dim)).reshape(batch, n_samples)
        round_best, index = values.max(dim=1)
        better = round_best > best_values
        best_values = th.where(better, round_best, best_values)
        best_actions = th.where(better.unsqueeze(1), actions[rows, index], best_actions)
        if round_ == iterations:
            break
        elites = actions.gather(
            1, values.topk(n_elites, dim=1).indices.unsqueeze(-1).expand(-1, -1, action_dim)
        )
        mean, std = elites.mean(dim=1, keepdim=True), elites.std(dim=1, unbiased=False, keepdim=True)
        std = std.clamp_min(MIN_STD)
        actions = (mean + std * th.randn(batch, n_samples, action_dim, device=observations.device)).clamp(
            -1, 1
        )
    return best_actions, best_values


class CEMAgent(ContinuousAgent):
    """Q-learning whose max is found by sampling and the cross-entropy method.

    :param config: The hyperparameters.
    :param observation_space: A Box space (flattened).
    :param action_space: A bounded Box space.
    """

    algo: ClassVar[str] = "cem"
    checkpoint_format: ClassVar[str] = "qiter-cem-v1"
    config_class: ClassVar[type[CEMConfig]] = CEMConfig
    fixed_keys: ClassVar[tuple[str, ...]] = ("env_id", "n_envs", "hidden_sizes", "n_critics")
    policy_modules: ClassVar[tuple[str, ...]] = ("q_net",)

    def __init__(
        self, config: CEMConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__(config, observation_space, action_space)
        self.config: CEMConfig = config
        self.q_net = Critics(self.obs_dim, self.action_dim, self.hidden_sizes, config.n_critics).to(
            self.device
        )
        self.q_target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = make_adam(self.q_net.parameters(), config.learning_rate)

    def _max(self, q_net: Critics, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        cfg = self.config

        def score(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
            return q_net(obs, actions).min(dim=0).values

        return cem_max(
            score, observations, self.action_dim, cfg.cem_samples, cfg.cem_elites, cfg.cem_iterations
        )

    def greedy_tensor(self, observations: th.Tensor) -> th.Tensor:
        return self._max(self.q_net, observations)[0]

    def gradient_step(self, samples: TorchReplayBufferSamples) -> dict[str, float]:
        cfg = self.config
        with th.no_grad():
            next_q = self._max(self.q_target_net, samples.next_observations)[1]
            td_target = samples.rewards + cfg.gamma * next_q.masked_fill(samples.terminateds, 0.0)
        q_values = self.q_net(samples.observations, samples.actions)
        loss = F.mse_loss(q_values, td_target.expand_as(q_values), reduction="none").mean(dim=1).sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.q_target_net, self.q_net, cfg.tau)
        return {"loss": float(loss.item()) / cfg.n_critics, **q_stats(q_values[0].detach())}

    def modules(self) -> dict[str, th.nn.Module | th.optim.Optimizer]:
        return {"q_net": self.q_net, "q_target_net": self.q_target_net, "optimizer": self.optimizer}
