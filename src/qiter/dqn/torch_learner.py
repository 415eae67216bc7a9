"""The autograd path: DQN gradient steps with PyTorch, on any device (CPU or CUDA), for any network.

The trainer uses it when the numpy DQN core does not apply (a GPU, a network the core does not run) or
when asked for with ``backend: torch``; it is also the reference the core is tested against
(``tests/test_core.py``).
"""

from __future__ import annotations

import numpy as np
import torch as th

from qiter.buffers.replay import ReplayBufferSamples
from qiter.dqn.core_learner import numpy_actor
from qiter.dqn.learner import Learner, TDSettings, UpdateResult
from qiter.dqn.losses import dqn_loss
from qiter.dqn.networks import ConvQNetwork, QNetwork
from qiter.optim import make_adam, polyak_update


class TorchLearner(Learner):
    """DQN gradient steps with autograd.

    :param q_net: The online network (already on ``device``).
    :param q_target_net: The target network (already on ``device``).
    :param settings: Learning rate, gamma, Double DQN, loss, gradient clipping, Adam's epsilon.
    :param device: Where the networks live.
    """

    def __init__(
        self, q_net: QNetwork, q_target_net: QNetwork, settings: TDSettings, device: th.device | str = "cpu"
    ) -> None:
        super().__init__(q_net, q_target_net, settings)
        self.device = th.device(device)
        self.loss = settings.loss
        self.optimizer = make_adam(
            list(q_net.parameters()), settings.learning_rate, settings.adam_eps, self.device
        )
        self.dtype = next(q_net.parameters()).dtype
        # Images travel to the device as the uint8 they are stored as; the network scales them there.
        self._obs_dtype = None if isinstance(q_net, ConvQNetwork) else self.dtype
        # Acting on the CPU goes through numpy views of the weights: no per-step torch call.
        self._numpy_act = numpy_actor(q_net)

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def act(self, observation: np.ndarray) -> int:
        """Greedy action of the online network for one observation."""
        if self._numpy_act is not None:
            return self._numpy_act(observation)
        with th.no_grad():
            obs = th.as_tensor(observation[np.newaxis], device=self.device, dtype=self._obs_dtype)
            return int(self.q_net(obs).argmax(dim=1).item())

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network for a batch of observations."""
        with th.no_grad():
            obs = th.as_tensor(observations, device=self.device, dtype=self._obs_dtype)
            return self.q_net(obs).argmax(dim=1).cpu().numpy()

    def update(self, samples: ReplayBufferSamples) -> UpdateResult:
        """One gradient step on a minibatch."""
        data = samples.to_torch(self.device)
        loss, td_errors, current_q, max_q = dqn_loss(
            self.q_net, self.q_target_net, data, self.gamma, self.double_dqn, self.loss
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(self.q_net.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return UpdateResult(
            float(loss.detach()), float(current_q.mean()), float(max_q), td_errors.cpu().numpy()
        )

    def update_target(self, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging of the online parameters into the target network."""
        if tau < 1.0:
            polyak_update(self.q_target_net, self.q_net, tau)
            return
        with th.no_grad():
            for p_target, p in zip(self.q_target_net.parameters(), self.q_net.parameters()):
                p_target.copy_(p)

    def optimizer_state(self) -> dict[str, object]:
        """State of the optimizer for checkpoints."""
        return {"kind": "torch-adam", "state": self.optimizer.state_dict()}

    def load_optimizer_state(self, state: dict[str, object]) -> None:
        """Restore the optimizer state from a checkpoint."""
        inner = state["state"]
        assert isinstance(inner, dict)
        self.optimizer.load_state_dict(inner)
