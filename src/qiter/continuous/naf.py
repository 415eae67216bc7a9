"""NAF (Gu, Lillicrap, Sutskever & Levine, 2016): Q-learning with a Q-function quadratic in the action.

Q(s, a) = V(s) - 1/2 (a - mu(s))^T L(s) L(s)^T (a - mu(s)) (:class:`~qiter.continuous.networks.NAFNetwork`),
so max_a Q(s, a) = V(s) and argmax_a Q(s, a) = mu(s): the greedy action and the TD target
r + gamma (1 - terminated) V_target(s') are exact, with no maximizer to learn. Exploration adds noise to mu.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch as th
import torch.nn.functional as F
from gymnasium import spaces

from qiter.buffers.replay import TorchReplayBufferSamples
from qiter.continuous.agent import ContinuousAgent, q_stats
from qiter.continuous.config import NAFConfig
from qiter.continuous.networks import NAFNetwork
from qiter.optim import make_adam, polyak_update

__all__ = ["NAFAgent"]


class NAFAgent(ContinuousAgent):
    """Normalized Advantage Functions with a Polyak-averaged target network.

    :param config: The hyperparameters.
    :param observation_space: A Box space (flattened).
    :param action_space: A bounded Box space.
    """

    algo: ClassVar[str] = "naf"
    checkpoint_format: ClassVar[str] = "qiter-naf-v1"
    config_class: ClassVar[type[NAFConfig]] = NAFConfig
    policy_modules: ClassVar[tuple[str, ...]] = ("q_net",)

    def __init__(
        self, config: NAFConfig, observation_space: spaces.Space, action_space: spaces.Space
    ) -> None:
        super().__init__(config, observation_space, action_space)
        self.q_net = NAFNetwork(self.obs_dim, self.action_dim, self.hidden_sizes).to(self.device)
        self.q_target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.optimizer = make_adam(self.q_net.parameters(), config.learning_rate)

    def greedy_tensor(self, observations: th.Tensor) -> th.Tensor:
        # mu is a tanh output, already within the bounds: the exact argmax.
        return self.q_net.heads(observations)[1]

    def gradient_step(self, samples: TorchReplayBufferSamples) -> dict[str, float]:
        cfg = self.config
        with th.no_grad():
            # max_a' Q_target(s', a') = V_target(s'): NAF's closed-form max.
            next_v = self.q_target_net.value(samples.next_observations)
            td_target = samples.rewards + cfg.gamma * next_v.masked_fill(samples.terminateds, 0.0)
        q_values = self.q_net(samples.observations, samples.actions)
        loss = F.mse_loss(q_values, td_target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.q_target_net, self.q_net, cfg.tau)
        return {"loss": float(loss.item()), **q_stats(q_values.detach())}

    def modules(self) -> dict[str, th.nn.Module | th.optim.Optimizer]:
        return {"q_net": self.q_net, "q_target_net": self.q_target_net, "optimizer": self.optimizer}
