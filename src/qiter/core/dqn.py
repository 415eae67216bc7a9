"""The DQN core: one gradient step of N independent DQN agents at once, over a leading agent axis.

Each agent has its own online network, target network, Adam state and hyperparameters; a step is a fixed
number of array calls whatever N is (batched matrix products, one Adam over one flat vector), never a
Python loop over agents. The single agent is the case N = 1 (:class:`qiter.dqn.core_learner.CoreLearner`);
a population is the same code with N agents (:mod:`qiter.population`). Written over
:class:`~qiter.core.arrays.Ops`, it runs on numpy (the CPU fast path), on torch's CPU backend and on CUDA,
and reads nothing back to the host inside :meth:`BatchedDQN.update` on torch (a CUDA graph can capture it).

The arithmetic is that of :func:`qiter.dqn.losses.dqn_loss` with autograd and ``torch.optim.Adam``:
``tests/test_core.py`` checks it against :class:`~qiter.dqn.torch_learner.TorchLearner` for every option.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch as th

from qiter.core.adam import Adam
from qiter.core.arrays import Array, Ops
from qiter.core.mlp import MLP, ForwardCache, MLPSpec, Parameters, act_one
from qiter.errors import QiterError


def _per_agent(value: float | bool | Sequence[float] | np.ndarray, n: int, dtype: type) -> np.ndarray:
    """``value`` as an ``(n,)`` host array (a scalar is repeated)."""
    array: np.ndarray = np.asarray(value, dtype=dtype)
    if array.ndim == 0:
        return np.full(n, array, dtype=dtype)
    if array.shape != (n,):
        raise ValueError(f"expected one value per agent ({n}), got shape {array.shape}")
    return array


@dataclass(frozen=True)
class AgentSettings:
    """The hyperparameters of the update, one entry per agent (host arrays).

    :param learning_rate: Adam's learning rates ``(N,)`` (changed during a run with
        :meth:`BatchedDQN.set_learning_rate`).
    :param gamma: Discount factors ``(N,)`` (n-step samples bring their own discounts).
    :param double_dqn: Double DQN targets ``(N,)`` bool.
    :param huber: Huber loss (delta = 1) instead of the squared error ``(N,)`` bool.
    :param max_grad_norm: Clip each agent's gradient norm to this ``(N,)`` (``inf``: no clipping).
    :param adam_eps: Adam's epsilon (one for all).
    """

    learning_rate: np.ndarray
    gamma: np.ndarray
    double_dqn: np.ndarray
    huber: np.ndarray
    max_grad_norm: np.ndarray
    adam_eps: float = 1e-8

    @classmethod
    def make(
        cls,
        n: int,
        learning_rate: float | Sequence[float] | np.ndarray,
        gamma: float | Sequence[float] | np.ndarray,
        double_dqn: bool | Sequence[bool] | np.ndarray = False,
        huber: bool | Sequence[bool] | np.ndarray = False,
        max_grad_norm: float | Sequence[float] | np.ndarray | None = None,
        adam_eps: float = 1e-8,
    ) -> AgentSettings:
        """Settings for ``n`` agents from scalars (shared) or sequences (one per agent)."""
        clip = math.inf if max_grad_norm is None else max_grad_norm
        return cls(
            _per_agent(learning_rate, n, np.float64), _per_agent(gamma, n, np.float64),
            _per_agent(double_dqn, n, np.bool_), _per_agent(huber, n, np.bool_),
            _per_agent(clip, n, np.float64), adam_eps,
        )  # fmt: skip


class UpdateOutputs(NamedTuple):
    """What one step reports, per agent (arrays on the backend's device: nothing is read back).

    :param loss: The minibatch loss ``(N,)``.
    :param mean_q: Mean of Q(s, a) over the minibatch ``(N,)``.
    :param max_q: Largest Q-value over the minibatch's states and every action ``(N,)``.
    :param td_errors: Q(s, a) - TD target ``(N, B)`` (prioritized replay's priorities).
    """

    loss: Array
    mean_q: Array
    max_q: Array
    td_errors: Array


class BatchedDQN:
    """N online networks, their target networks and Adam states, updated in one step.

    :param ops: The array backend.
    :param n: The number of agents N.
    :param spec: The networks' architecture (the same for all).
    :param settings: Per-agent hyperparameters.
    :param host_scalars: One agent on numpy (the single agent's fast path): keep the learning rate and the
        clipping coefficient as host numbers, which saves a vector product per Adam step. The last bit of
        rounding then differs from an agent's in an N-agent core, which keeps an agent's run the same
        whatever N is.
    """

    def __init__(
        self, ops: Ops, n: int, spec: MLPSpec, settings: AgentSettings, host_scalars: bool = False
    ) -> None:
        self.ops, self.n, self.spec = ops, n, spec
        self.mlp = MLP(ops, spec, n)
        total = n * spec.n_params
        self.params = ops.zeros((total,))
        self.target_params = ops.zeros((total,))
        self.grad = ops.zeros((total,))
        self._tmp = ops.zeros((total,))
        self.online = Parameters(self.params, spec, n)
        self.target = Parameters(self.target_params, spec, n)
        self.grads = Parameters(self.grad, spec, n)
        if host_scalars and (ops.name != "numpy" or n != 1):
            raise ValueError("host_scalars is for one agent on numpy")
        self.host_scalars = host_scalars
        self._lr: Array | None = None if self.host_scalars else ops.zeros((total,))
        self._lr_views = None if self._lr is None else Parameters(self._lr, spec, n)
        self.adam = Adam(
            ops, self.params, self.grad, 0.0 if self._lr is None else self._lr, settings.adam_eps
        )
        self.set_settings(settings)

    # -- settings ------------------------------------------------------------------------------------

    def set_settings(self, settings: AgentSettings) -> None:
        """Install per-agent hyperparameters (Adam's epsilon is fixed at construction)."""
        ops = self.ops
        self.settings = settings
        self.gamma = ops.asarray(settings.gamma, "float32")[:, None]  # (N, 1): broadcasts over the batch
        self._host_gamma = float(settings.gamma[0])
        self.double = ops.asarray(settings.double_dqn, "bool")[:, None]
        self.any_double, self.all_double = bool(settings.double_dqn.any()), bool(settings.double_dqn.all())
        self.huber = ops.asarray(settings.huber, "bool")[:, None]
        self.any_huber, self.all_huber = bool(settings.huber.any()), bool(settings.huber.all())
        finite = np.isfinite(settings.max_grad_norm)
        self.clipping = bool(finite.any())
        self.max_grad_norm = ops.asarray(np.where(finite, settings.max_grad_norm, np.inf), "float32")
        self.set_learning_rate(settings.learning_rate)

    @property
    def lr(self) -> Array:
        """The per-parameter learning rates Adam reads (N agents; each agent's rate over its parameters).
        Written in place (a captured CUDA graph reads them), by :meth:`set_learning_rate` or directly; the
        host copy :attr:`learning_rate` follows only :meth:`set_learning_rate`.

        :raises ValueError: With ``host_scalars`` (one host number instead)."""
        if self._lr is None:
            raise ValueError("a core with host_scalars keeps one learning rate: use set_learning_rate")
        return self._lr

    def set_learning_rate(self, learning_rate: float | Sequence[float] | np.ndarray) -> None:
        """Adam's learning rates from now on (a scalar for all, or one per agent); written in place, so a
        captured CUDA graph sees them."""
        self.learning_rate = _per_agent(learning_rate, self.n, np.float64)
        if self._lr_views is None:
            self.adam.lr = float(self.learning_rate[0])
            return
        per_agent = self.ops.asarray(self.learning_rate, "float32")[:, None, None]
        for view in self._lr_views.tensors:
            self.ops.copy_into(view, per_agent)  # broadcast over each agent's part of the tensor

    def initialize(self, uniform: Callable[[int, tuple[int, ...]], Array]) -> None:
        """PyTorch's initialization for every agent: convolution and linear weights and biases uniform in
        +-1/sqrt(fan_in), layer norms at scale 1 and shift 0; the targets start as copies.

        :param uniform: ``uniform(k, shape)``: ``(N, *shape)`` numbers uniform in [0, 1), draw ``k`` of each
            agent's own stream (``2 i`` for layer ``i``'s weights, ``2 i + 1`` for its biases, the
            convolution, if any, being layer 0).
        """
        ops, online = self.ops, self.online
        layers = list(zip(online.weights, online.biases))
        if online.conv_weight is not None:
            layers.insert(0, (online.conv_weight, online.conv_bias))
        for i, (w, b) in enumerate(layers):
            bound = 1.0 / math.sqrt(w.shape[1])
            ops.copy_into(w, uniform(2 * i, tuple(w.shape[1:])) * (2 * bound) - bound)
            ops.copy_into(b, uniform(2 * i + 1, tuple(b.shape[1:])) * (2 * bound) - bound)
        for scale, shift in zip(self.online.norm_weights, self.online.norm_biases):
            ops.copy_into(scale, ops.full(tuple(scale.shape), 1.0))
            shift *= 0.0
        self.update_target()

    # -- acting --------------------------------------------------------------------------------------

    def q_values(self, observations: Array) -> Array:
        """Q-values ``(N, B, n_actions)`` of the online networks for ``(N, B, obs_dim)`` observations."""
        return self.mlp.forward(self.online, observations)

    def greedy(self, observations: Array) -> Array:
        """Greedy actions ``(N, B)`` of the online networks."""
        return self.ops.argmax(self.q_values(observations), -1)

    def act_one(self, observation: np.ndarray) -> int:
        """Greedy action of agent 0 for one observation (numpy: matrix-vector products)."""
        online = self.online
        return act_one(self.spec, online.first_hidden, online.first_output, observation, online.first_conv)

    # -- the update ----------------------------------------------------------------------------------

    def update(
        self,
        obs: Array,
        actions: Array,
        rewards: Array,
        next_obs: Array,
        terminateds: Array,
        discounts: Array | None = None,
        weights: Array | None = None,
    ) -> UpdateOutputs:
        """One gradient step of every agent on its own minibatch (arrays ``(N, B, ...)``).

        :param obs: Observations ``(N, B, obs_dim)``.
        :param actions: Actions taken ``(N, B)`` (integers).
        :param rewards: Rewards ``(N, B)`` (n-step: the discounted sums).
        :param next_obs: Next observations ``(N, B, obs_dim)``.
        :param terminateds: Whether the next state is terminal ``(N, B)`` (bool).
        :param discounts: Per-sample bootstrap discounts ``gamma^k`` ``(N, B)`` (n-step), else each agent's gamma.
        :param weights: Importance-sampling weights ``(N, B)`` (prioritized replay).
        """
        ops, mlp = self.ops, self.mlp
        batch_size = obs.shape[1]
        # TD target, no gradient: y = r + gamma^k * (1 - terminated) * V_target(s').
        next_q = mlp.forward(self.target, next_obs, role="target")
        if self.any_double:
            # Double DQN (van Hasselt et al., 2016): the online network picks a', the target values it.
            next_actions = ops.argmax(mlp.forward(self.online, next_obs, role="next"), -1)
            double_values = ops.gather_last(next_q, next_actions)
            next_values = (
                double_values
                if self.all_double
                else ops.where(self.double, double_values, ops.max(next_q, -1))
            )
        else:
            next_values = ops.max(next_q, -1)
        if discounts is not None:
            discount = discounts
        else:  # a host number for one agent on numpy: no broadcast of a (1, 1) array
            discount = self._host_gamma if self.host_scalars else self.gamma
        td_target = rewards + discount * next_values * ~terminateds
        cache = ForwardCache()
        q_values = mlp.forward(self.online, obs, cache, role="online")
        current_q = ops.gather_last(q_values, actions)
        td_errors = current_q - td_target
        elementwise, d_loss = self._loss(td_errors)
        if weights is not None:
            elementwise = elementwise * weights
            d_loss = d_loss * weights
        # dLoss/dQ is d_loss / B at the taken action, 0 elsewhere.
        d_q = ops.scatter_last(actions, d_loss * (1.0 / batch_size), self.spec.n_actions)
        mlp.backward(self.online, cache, d_q, self.grads)
        if self.clipping:
            self._clip_gradients()
        self.adam.step()
        # The logged means as sums (not BLAS products, whose last bit can depend on the arrays' memory
        # alignment: a resumed run would log other digits); the maximum over the flattened (B, n_actions).
        max_q = ops.max(q_values.reshape(self.n, -1), -1)
        loss = ops.sum(elementwise, 1) / batch_size
        return UpdateOutputs(loss, ops.sum(current_q, 1) / batch_size, max_q, td_errors)

    def _loss(self, td_errors: Array) -> tuple[Array, Array]:
        """Elementwise loss and its derivative with respect to the TD error, per agent's choice."""
        ops = self.ops
        if self.any_huber:
            abs_err = ops.abs(td_errors)
            huber = ops.where(abs_err < 1.0, 0.5 * td_errors * td_errors, abs_err - 0.5)
            d_huber = ops.clip(td_errors, -1.0, 1.0)
            if self.all_huber:
                return huber, d_huber
            return (
                ops.where(self.huber, huber, td_errors * td_errors),
                ops.where(self.huber, d_huber, 2.0 * td_errors),
            )
        return td_errors * td_errors, 2.0 * td_errors

    def _clip_gradients(self) -> None:
        """As ``torch.nn.utils.clip_grad_norm_`` for each agent: scale by max_norm / (norm + 1e-6) if below 1."""
        ops = self.ops
        if self.host_scalars:
            max_norm = float(self.settings.max_grad_norm[0])
            coef = max_norm / (math.sqrt(float(np.dot(self.grad, self.grad))) + 1e-6)
            if coef < 1.0:
                self.grad *= coef
            return
        squares = [ops.sum(g * g, (1, 2)) for g in self.grads.tensors]
        total = squares[0]
        for sq in squares[1:]:
            total = total + sq
        coef = ops.clip(self.max_grad_norm / (ops.sqrt(total) + 1e-6), 0.0, 1.0)[:, None, None]
        for g in self.grads.tensors:
            g *= coef

    def use_device_counter(self, max_steps: int) -> None:
        """Count Adam's steps on the device (:meth:`Adam.use_device_counter`), as a CUDA graph needs."""
        self.adam.use_device_counter(max_steps)

    @property
    def step_count(self) -> int | Array:
        """Adam's step counter (a host integer, or a 0-d device tensor)."""
        return self.adam.step_count

    @step_count.setter
    def step_count(self, value: int | Array) -> None:
        self.adam.step_count = value

    # -- targets -------------------------------------------------------------------------------------

    def update_target(self, mask: Array | None = None, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging ``target <- tau * online + (1 - tau) * target``.

        :param mask: ``(N,)`` bool: update only these agents' targets (``None``: all).
        :param tau: The Polyak coefficient.
        """
        ops = self.ops
        if mask is None:
            if tau >= 1.0:
                ops.copy_into(self.target_params, self.params)
                return
            self.target_params *= 1.0 - tau
            ops.copy_into(self._tmp, self.params)
            self._tmp *= tau
            self.target_params += self._tmp
            return
        for online, target in zip(self.online.tensors, self.target.tensors):
            new = online if tau >= 1.0 else tau * online + (1.0 - tau) * target
            ops.copy_into(target, ops.where(mask[:, None, None], new, target))

    # -- reading and saving --------------------------------------------------------------------------

    def layers(self) -> list[tuple[np.ndarray, ...]]:
        """Every agent's MLP layers (a convolution's are in :meth:`arrays`) as host arrays: per layer ``(W
        (N, in, out), b (N, out))``, followed for a hidden layer with layer norm by its scale and shift
        ``(N, units)``."""
        ops = self.ops
        layers: list[tuple[np.ndarray, ...]] = []
        for i, (w, b) in enumerate(zip(self.online.weights, self.online.biases)):
            tensors = [w, b[:, 0]]
            if i < len(self.online.norm_weights):
                tensors += [self.online.norm_weights[i][:, 0], self.online.norm_biases[i][:, 0]]
            layers.append(tuple(ops.to_numpy(t).copy() for t in tensors))
        return layers

    def arrays(self) -> dict[str, Array]:
        """The state as views with a leading agent axis (so the states of slices of a population
        concatenate): for ``params``, ``target_params``, ``exp_avg`` and ``exp_avg_sq``, each tensor of the
        network, named ``{name}.{layer}.weight``, ``.bias``, ``.norm_weight``, ``.norm_bias`` (and
        ``{name}.conv.weight``, ``.bias`` for a convolution). Adam's step
        count (one for all agents) and the learning rates are apart."""
        out: dict[str, Array] = {}
        flats = {
            "params": self.params, "target_params": self.target_params,
            "exp_avg": self.adam.exp_avg, "exp_avg_sq": self.adam.exp_avg_sq,
        }  # fmt: skip
        for name, flat in flats.items():
            views = Parameters(flat, self.spec, self.n)
            if views.conv_weight is not None:
                out[f"{name}.conv.weight"], out[f"{name}.conv.bias"] = views.conv_weight, views.conv_bias
            for i, (w, b) in enumerate(zip(views.weights, views.biases)):
                out[f"{name}.{i}.weight"], out[f"{name}.{i}.bias"] = w, b
            for i, (g, s) in enumerate(zip(views.norm_weights, views.norm_biases)):
                out[f"{name}.{i}.norm_weight"], out[f"{name}.{i}.norm_bias"] = g, s
        return out

    def agent_tensors(self, agent: int) -> list[np.ndarray]:
        """Agent ``agent``'s online tensors as host arrays, in :meth:`MLPSpec.tensor_shapes` order and
        shapes (weights ``(in, out)``)."""
        ops = self.ops
        return [
            ops.to_numpy(t[agent]).reshape(shape).copy()
            for t, shape in zip(self.online.tensors, self.spec.tensor_shapes())
        ]

    def _host_tensor(self, x: Array) -> th.Tensor:
        return th.from_numpy(x.copy()) if self.ops.name == "numpy" else x.detach().cpu().clone()

    def state_dict(self) -> dict[str, Any]:
        """Parameters, target parameters, Adam's moments and step count, learning rates: CPU tensors and
        numbers that ``torch.load(weights_only=True)`` reads."""
        return {
            "n_agents": self.n,
            "n_params": self.spec.n_params,
            "params": self._host_tensor(self.params),
            "target_params": self._host_tensor(self.target_params),
            "exp_avg": self._host_tensor(self.adam.exp_avg),
            "exp_avg_sq": self._host_tensor(self.adam.exp_avg_sq),
            "step": int(self.adam.step_count),
            "learning_rate": th.from_numpy(self.learning_rate.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved, in place (views of the arrays stay valid).

        :raises QiterError: A state of another number of agents or another network size.
        """
        for key, expected in (("n_agents", self.n), ("n_params", self.spec.n_params)):
            if int(state.get(key, -1)) != expected:
                raise QiterError(
                    f"the saved DQN core has {key} {state.get(key)!r}, this one {expected}: another population or network size"
                )
        ops = self.ops
        for name, array in (
            ("params", self.params), ("target_params", self.target_params),
            ("exp_avg", self.adam.exp_avg), ("exp_avg_sq", self.adam.exp_avg_sq),
        ):  # fmt: skip
            ops.copy_into(array, ops.asarray(state[name].numpy()))
        step = int(state["step"])
        if isinstance(self.adam.step_count, int):
            self.adam.step_count = step
        else:
            ops.copy_into(self.adam.step_count, ops.asarray(step, "int64"))
        self.set_learning_rate(state["learning_rate"].numpy())
