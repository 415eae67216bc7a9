"""LEGACY COPY, for benchmarks/bench_population.py only: the population learner as it was before the DQN
core (``qiter.population.learner`` at main 9ae1b62), kept so the benchmark can compare old and new in one run.

DQN gradient steps for N agents at once: batched forward, backward and Adam over a leading agent axis.

The same arithmetic as :class:`qiter.dqn.fast.NumpyLearner` (forward, hand-written backward, Adam as
``torch.optim.Adam``), with every array given a leading axis of agents: layer ``i`` of all agents is one
``(N, in, out)`` array, a layer is one batched matrix product, and Adam runs over one flat vector holding
every agent's parameters. Written once over :class:`~qiter.population.arrays.Ops`, it runs on numpy, on
torch's CPU backend and on CUDA.

Per-agent hyperparameters (learning rate, gamma, Double DQN on or off) are arrays over the agent axis.

Layout of the flat vector: tensor by tensor (W1 of all agents, b1 of all agents, W2...), so each
``(N, in, out)`` view is contiguous; ``tests/test_population_learner.py`` checks one agent's slice against
the single-agent numpy learner.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qiter.core.arrays import Array, Ops
from qiter.population.streams import INIT, Streams


class AdamState:
    """Adam's arrays over one flat parameter vector (the old ``qiter.population.arrays.AdamState``)."""

    def __init__(self, ops: Ops, params: Array, grad: Array, lr: Array, eps: float) -> None:
        self.params, self.grad, self.lr, self.eps = params, grad, lr, eps
        self.exp_avg = ops.zeros(tuple(params.shape))
        self.exp_avg_sq = ops.zeros(tuple(params.shape))
        self.tmp = ops.zeros(tuple(params.shape))
        self.beta1, self.beta2 = 0.9, 0.999


@dataclass
class AgentSettings:
    """Per-agent hyperparameters of the update, one entry per agent (host arrays)."""

    learning_rate: np.ndarray  # (N,) float
    gamma: np.ndarray  # (N,) float
    double_dqn: np.ndarray  # (N,) bool


class PopulationLearner:
    """N independent Q-networks (MLPs), their target networks and Adam states, updated in one step.

    :param ops: The array backend.
    :param n_agents: N.
    :param sizes: Layer widths, input first: ``[obs_dim, hidden..., n_actions]``.
    :param settings: Per-agent hyperparameters.
    :param activation: ``"relu"`` or ``"tanh"``.
    :param loss: ``"mse"`` or ``"huber"``.
    :param max_grad_norm: Per-agent gradient-norm clipping (``None``: off).
    :param adam_eps: Adam's epsilon.
    """

    def __init__(
        self,
        ops: Ops,
        n_agents: int,
        sizes: list[int],
        settings: AgentSettings,
        activation: str = "relu",
        loss: str = "mse",
        max_grad_norm: float | None = None,
        adam_eps: float = 1e-8,
    ) -> None:
        self.ops = ops
        self.n = n = n_agents
        self.sizes = sizes
        self.tanh = activation == "tanh"
        self.huber = loss == "huber"
        self.max_grad_norm = max_grad_norm
        self.adam_eps = adam_eps
        self.beta1, self.beta2 = 0.9, 0.999
        shapes = [((n, i, o), (n, 1, o)) for i, o in itertools.pairwise(sizes)]
        self.n_params = sum(i * o + o for i, o in itertools.pairwise(sizes))
        total = n * self.n_params
        self.params = ops.zeros((total,))
        self.target_params = ops.zeros((total,))
        self.grad = ops.zeros((total,))
        self.step_count: int | Array = 0
        self.weights, self.biases = self._views(self.params, shapes)
        self.target_weights, self.target_biases = self._views(self.target_params, shapes)
        self.grad_w, self.grad_b = self._views(self.grad, shapes)
        self.n_actions = sizes[-1]
        self._buffers: dict[tuple[object, ...], Array] = {}
        self.set_settings(settings)

    def _views(
        self, flat: Array, shapes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]
    ) -> tuple[list[Array], list[Array]]:
        """Per-layer (N, in, out) and (N, 1, out) views of a flat vector, tensor by tensor."""
        ws, bs, offset = [], [], 0
        for w_shape, b_shape in shapes:
            size = math.prod(w_shape)
            ws.append(flat[offset : offset + size].reshape(w_shape))
            offset += size
            size = math.prod(b_shape)
            bs.append(flat[offset : offset + size].reshape(b_shape))
            offset += size
        return ws, bs

    def set_settings(self, settings: AgentSettings) -> None:
        """Install per-agent hyperparameters (learning rates are spread over each agent's parameters)."""
        ops, n = self.ops, self.n
        self.settings = settings
        self.gamma = ops.asarray(settings.gamma, "float32")[:, None]  # (N, 1): broadcasts over the batch
        self.double = ops.asarray(settings.double_dqn, "bool")[:, None]
        self.any_double = bool(np.any(settings.double_dqn))
        self.all_double = bool(np.all(settings.double_dqn))
        lr = ops.zeros((n * self.n_params,))
        lr_w, lr_b = self._views(lr, [(w.shape, b.shape) for w, b in zip(self.weights, self.biases)])
        per_agent = ops.asarray(settings.learning_rate, "float32")
        for w, b in zip(lr_w, lr_b):
            w += per_agent[:, None, None]
            b += per_agent[:, None, None]
        self.lr = lr
        self.adam = AdamState(ops, self.params, self.grad, lr, self.adam_eps)

    def initialize(self, streams: Streams) -> None:
        """PyTorch's ``nn.Linear`` initialization for every agent (weights and biases uniform in
        +-1/sqrt(fan_in)), each agent from its own stream; the target networks start as copies."""
        ops = self.ops
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            bound = 1.0 / math.sqrt(w.shape[1])
            ops.copy_into(w, streams.uniform(INIT, 2 * i, tuple(w.shape[1:])) * (2 * bound) - bound)
            ops.copy_into(b, streams.uniform(INIT, 2 * i + 1, tuple(b.shape[1:])) * (2 * bound) - bound)
        self.update_target()

    # -- forward and backward --------------------------------------------------------------------------

    def _buffer(self, key: tuple[object, ...], shape: tuple[int, ...]) -> Array:
        """A scratch array kept from one call to the next: each layer's output and each backpropagated
        delta, per role and shape (fresh allocations of these sizes cost page faults on every call)."""
        full_key = (*key, *shape)
        buffer = self._buffers.get(full_key)
        if buffer is None:
            buffer = self._buffers[full_key] = self.ops.zeros(shape)
        return buffer

    def _ones(self, batch_size: int) -> Array:
        """``(N, 1, batch_size)`` ones, kept."""
        ones = self._buffers.get(("ones", batch_size))
        if ones is None:
            ones = self._buffers[("ones", batch_size)] = self.ops.full((self.n, 1, batch_size), 1.0)
        return ones

    def forward(
        self, x: Array, target: bool = False, cache: list[Array] | None = None, role: str = "act"
    ) -> Array:
        """Q-values ``(N, B, n_actions)`` of observations ``x`` ``(N, B, obs_dim)``.

        :param target: Use the target networks.
        :param cache: When given, each layer's input is appended (for :meth:`backward`).
        :param role: Names the scratch arrays the result lives in: valid until the next call of that role.
        """
        weights, biases = (self.target_weights, self.target_biases) if target else (self.weights, self.biases)
        ops = self.ops
        h = x
        last = len(weights) - 1
        for i, (w, b) in enumerate(zip(weights, biases)):
            if cache is not None:
                cache.append(h)
            out = self._buffer((role, i), (self.n, x.shape[1], w.shape[2]))
            ops.matmul_into(h, w, out)
            out += b
            if i < last:
                if self.tanh:
                    ops.tanh_(out)
                else:
                    ops.relu_(out)
            h = out
        return h

    def greedy(self, x: Array) -> Array:
        """Greedy actions ``(N, B)`` of the online networks."""
        return self.ops.argmax(self.forward(x), -1)

    def backward(self, cache: list[Array], d_q: Array) -> None:
        """Backpropagate ``d_q = dLoss/dQ`` ``(N, B, n_actions)`` into :attr:`grad`."""
        ops = self.ops
        delta = d_q
        for i in range(len(self.weights) - 1, -1, -1):
            h_in = cache[i]
            ops.matmul_into(h_in.mT, delta, self.grad_w[i])
            # The bias gradient sums delta over the batch: as a product with ones, 5x faster than a sum
            # over the middle axis in numpy.
            ops.matmul_into(self._ones(delta.shape[1]), delta, self.grad_b[i])
            if i > 0:
                out = self._buffer(("delta", i), tuple(h_in.shape))
                ops.matmul_bt_into(delta, self.weights[i], out)
                # h_in is the previous activation's output: its derivative follows from it.
                if self.tanh:
                    out *= 1.0 - h_in * h_in
                else:
                    out *= h_in > 0
                delta = out

    # -- the update ------------------------------------------------------------------------------------

    def update(
        self, obs: Array, actions: Array, rewards: Array, next_obs: Array, terminateds: Array
    ) -> tuple[Array, Array]:
        """One gradient step of every agent on its own minibatch (arrays ``(N, B, ...)``).

        :return: Per-agent ``(loss, mean Q(s, a))``, arrays ``(N,)`` left on the device.
        """
        ops = self.ops
        batch_size = obs.shape[1]
        # TD target, no gradient: y = r + gamma * (1 - terminated) * V_target(s').
        next_q = self.forward(next_obs, target=True, role="target")
        if self.any_double:
            # Double DQN (van Hasselt et al., 2016): the online network picks a', the target evaluates it.
            double_values = ops.gather_last(next_q, ops.argmax(self.forward(next_obs, role="next"), -1))
            next_values = (
                double_values
                if self.all_double
                else ops.where(self.double, double_values, ops.max(next_q, -1))
            )
        else:
            next_values = ops.max(next_q, -1)
        td_target = rewards + self.gamma * next_values * ~terminateds
        cache: list[Array] = []
        q_values = self.forward(obs, cache=cache, role="online")
        current_q = ops.gather_last(q_values, actions)
        td_errors = current_q - td_target
        if self.huber:
            abs_err = ops.abs(td_errors)
            loss = (
                ops.sum(ops.where(abs_err < 1.0, 0.5 * td_errors * td_errors, abs_err - 0.5), 1) / batch_size
            )
            d_loss = ops.clip(td_errors, -1.0, 1.0)
        else:
            loss = ops.sum(td_errors * td_errors, 1) / batch_size
            d_loss = 2.0 * td_errors
        # dLoss/dQ is d_loss / B at the taken action, 0 elsewhere: a one-hot mask avoids a scatter.
        one_hot = actions[..., None] == ops.arange(self.n_actions)
        d_q = one_hot * (d_loss / batch_size)[..., None]
        self.backward(cache, d_q)
        if self.max_grad_norm is not None:
            self._clip_gradients(self.max_grad_norm)
        self._adam()
        return loss, ops.sum(current_q, 1) / batch_size

    def _clip_gradients(self, max_norm: float) -> None:
        """As ``torch.nn.utils.clip_grad_norm_`` for each agent: scale by max_norm / (norm + 1e-6) if below 1."""
        ops = self.ops
        sq = ops.zeros((self.n,))
        for g in self.grad_w + self.grad_b:
            sq = sq + ops.sum(g * g, (1, 2))
        coef = ops.clip(max_norm / (ops.sqrt(sq) + 1e-6), 0.0, 1.0)[:, None, None]
        for g in self.grad_w + self.grad_b:
            g *= coef

    def _bias_corrections(self, step: int) -> tuple[float, float]:
        """Adam's ``1 / (1 - beta1^t)`` and ``1 / sqrt(1 - beta2^t)`` at step ``t`` (computed in float64)."""
        return 1.0 / (1.0 - self.beta1**step), 1.0 / math.sqrt(1.0 - self.beta2**step)

    def use_device_counter(self, max_steps: int) -> None:
        """Count Adam's steps in a 0-d tensor on the device, with its bias corrections looked up in tables
        made on the host (the same float32 values as the host path's), as a captured CUDA graph needs.

        :param max_steps: The most gradient steps the run will make.
        """
        ops = self.ops
        corrections = np.array([(1.0, 1.0)] + [self._bias_corrections(t) for t in range(1, max_steps + 1)])
        self._step_sizes = ops.asarray(corrections[:, 0], "float32")
        self._denom_scales = ops.asarray(corrections[:, 1], "float32")
        self.step_count = ops.asarray(self.step_count, "int64")

    def _adam(self) -> None:
        """``torch.optim.Adam`` on the flat vector of all agents, each with its own learning rate."""
        self.step_count += 1
        if isinstance(self.step_count, int):
            self.ops.adam_(
                self.adam,  # type: ignore[arg-type]
                *self._bias_corrections(self.step_count),
            )
        else:
            ops = self.ops
            step_size = ops.select(self._step_sizes, 0, self.step_count)
            ops.adam_(self.adam, step_size, ops.select(self._denom_scales, 0, self.step_count))

    def update_target(self, mask: Array | None = None, tau: float = 1.0) -> None:
        """Copy the online networks into the targets (all agents, or those where ``mask`` (N,) is true).

        :param tau: Polyak coefficient (1: a hard copy).
        """
        ops = self.ops
        if mask is None and tau >= 1.0:
            ops.copy_into(self.target_params, self.params)
            return
        for online, target in zip(self.weights + self.biases, self.target_weights + self.target_biases):
            new = online if tau >= 1.0 else tau * online + (1.0 - tau) * target
            ops.copy_into(target, new if mask is None else ops.where(mask[:, None, None], new, target))

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every agent's layers as host arrays: per layer ``(W (N, in, out), b (N, out))``."""
        ops = self.ops
        return [
            (ops.to_numpy(w).copy(), ops.to_numpy(b[:, 0]).copy()) for w, b in zip(self.weights, self.biases)
        ]
