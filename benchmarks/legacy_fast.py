"""LEGACY COPY, for benchmarks/bench_dqn.py only: the numpy fast path as it was before the DQN core
(``qiter.dqn.fast`` at main 9ae1b62), kept so the benchmark can compare old and new in one run.

The fast path: a DQN update written out by hand in numpy, on the network's own parameters.

Why: for the small MLPs of classic control, a torch forward/backward/Adam step costs hundreds of
microseconds of framework overhead for a few hundred thousand floating-point operations. The same
arithmetic in numpy, with every array preallocated and the parameters held in one flat vector, costs a
fraction of that (see ``docs/performance.md``).

Nothing about the algorithm changes: the numpy arrays are *views* of the torch parameters (the network
stays a normal ``nn.Module`` for checkpoints and evaluation), the TD target and loss are those of
:mod:`qiter.dqn.losses`, and Adam follows ``torch.optim.Adam`` step for step. ``tests/test_fast.py`` checks
both paths against each other on the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch as th
import torch.nn as nn

from qiter.buffers.replay import ReplayBufferSamples
from qiter.dqn.learner import Learner, TDSettings, UpdateResult
from qiter.dqn.networks import QNetwork

SUPPORTED_ACTIVATIONS = (nn.ReLU, nn.Tanh)

#: One hidden layer as the numpy path sees it: the linear map, its layer norm (or ``None``), the activation.
HiddenLayer = tuple[nn.Linear, nn.LayerNorm | None, nn.Module]


def parse_mlp(q_net: nn.Module) -> tuple[list[HiddenLayer], nn.Linear] | None:
    """Split a :class:`QNetwork`'s ``q_net`` into hidden layers and the output layer, or ``None`` when the
    numpy path cannot run it.

    Accepted: ``Linear [-> LayerNorm] -> activation`` repeated, then a final ``Linear``, with one activation
    kind (ReLU or Tanh) and either a layer norm in every hidden layer or in none (the layouts
    :func:`qiter.dqn.networks._mlp` builds). Both :func:`supports_numpy` and :class:`NumpyQFunction` read
    the network through this function, so what is accepted is exactly what is computed.

    :param q_net: The network to inspect.
    :return: ``(hidden layers, output layer)``, or ``None`` for any other layout.
    """
    if not isinstance(q_net, QNetwork):
        return None
    mods = list(q_net.q_net)
    if not mods or not isinstance(mods[-1], nn.Linear):
        return None
    hidden: list[HiddenLayer] = []
    i = 0
    while i < len(mods) - 1:
        linear, norm = mods[i], None
        if not isinstance(linear, nn.Linear) or linear.bias is None:
            return None
        i += 1
        candidate = mods[i]
        if isinstance(candidate, nn.LayerNorm):
            # The backward pass below is written for the default affine norm over the layer's features.
            affine = candidate.weight is not None and candidate.bias is not None
            if not affine or candidate.normalized_shape != (linear.out_features,):
                return None
            norm = candidate
            i += 1
        if i >= len(mods) - 1 or not isinstance(mods[i], SUPPORTED_ACTIVATIONS):
            return None
        hidden.append((linear, norm, mods[i]))
        i += 1
    # One activation kind and one layout for all layers: the loops choose them once, not per layer.
    if len({type(act) for _, _, act in hidden}) > 1 or len({norm is None for _, norm, _ in hidden}) > 1:
        return None
    output = mods[-1]
    return (hidden, output) if output.bias is not None else None


def supports_numpy(q_net: nn.Module) -> bool:
    """Whether the numpy path can run this network: a CPU MLP of Linear layers, optionally each followed by
    a LayerNorm, with ReLU or Tanh (see :func:`parse_mlp`)."""
    on_cpu = all(p.device.type == "cpu" for p in q_net.parameters())
    return on_cpu and parse_mlp(q_net) is not None


def flatten_parameters(module: nn.Module) -> np.ndarray:
    """Move all parameters of ``module`` into one contiguous buffer and return it as a numpy array.

    Each ``nn.Parameter`` becomes a view into that buffer, so torch and numpy see the same memory: an
    optimizer step on the flat vector updates the module, and element-wise ops (Adam, Polyak averaging,
    gradient clipping) run as a handful of vector operations instead of one per tensor.
    """
    params = list(module.parameters())
    flat = th.zeros(sum(p.numel() for p in params), dtype=params[0].dtype)
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset : offset + n].copy_(p.detach().reshape(-1))
        p.data = flat[offset : offset + n].view_as(p)
        offset += n
    return flat.numpy()


def mlp_modules(q_net: nn.Module) -> tuple[list[nn.Linear], list[nn.LayerNorm]]:
    """The Linear layers (hidden ones, then the output layer) and the LayerNorms of a supported network.

    :param q_net: A network that :func:`parse_mlp` accepts.
    :raises ValueError: For any other network (the numpy path would compute something else).
    """
    parsed = parse_mlp(q_net)
    if parsed is None:
        raise ValueError(f"the numpy path cannot run this network (see supports_numpy): {q_net}")
    hidden, output = parsed
    linears = [linear for linear, _, _ in hidden] + [output]
    norms = [norm for _, norm, _ in hidden if norm is not None]
    return linears, norms


class ForwardCache:
    """What :meth:`NumpyQFunction.backward` needs from the forward pass it differentiates.

    :ivar inputs: The input of every Linear layer: the observations, then each hidden activation's output.
    :ivar normalized: Per LayerNorm, the normalized features ``(x - mean) / std`` (before scale and shift).
    :ivar inv_std: Per LayerNorm, ``1 / sqrt(var + eps)`` of each row, shape (batch, 1).
    """

    __slots__ = ("inputs", "inv_std", "normalized")

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []
        self.normalized: list[np.ndarray] = []
        self.inv_std: list[np.ndarray] = []


class NumpyQFunction:
    """numpy views of a :class:`QNetwork`'s layers: forward passes without torch overhead.

    :param q_net: A CPU network that :func:`supports_numpy` accepts (its parameters are shared, not copied).
    """

    def __init__(self, q_net: QNetwork) -> None:
        linears, norms = mlp_modules(q_net)
        self.weights = [m.weight.detach().numpy() for m in linears]  # (out, in), as torch stores them
        self.biases = [m.bias.detach().numpy() for m in linears]
        # The LayerNorms' scale (gamma) and shift (beta), one per hidden layer, or none at all.
        self.norm_weights = [m.weight.detach().numpy() for m in norms]
        self.norm_biases = [m.bias.detach().numpy() for m in norms]
        self.layer_norm = bool(norms)
        activations = [m for m in q_net.q_net if isinstance(m, SUPPORTED_ACTIVATIONS)]
        self.tanh = bool(activations) and isinstance(activations[0], nn.Tanh)
        self.dueling = q_net.dueling
        self.dtype = self.weights[0].dtype
        # (W^T, b) per layer, the transposes made once: still views of the live weights.
        self.layers = [(w.T, b) for w, b in zip(self.weights, self.biases)]
        # The hidden layers and the output layer apart, so the per-step loops test nothing per layer.
        self._hidden = list(zip(self.weights[:-1], self.biases[:-1]))
        self._output = (self.weights[-1], self.biases[-1])
        self._norms = [(g, b, float(m.eps)) for g, b, m in zip(self.norm_weights, self.norm_biases, norms)]
        self._row_mean = [np.full((len(g), 1), 1.0 / len(g), dtype=self.dtype) for g in self.norm_weights]

    def forward(self, x: np.ndarray, cache: ForwardCache | None = None) -> np.ndarray:
        """Q-values of a batch of observations, shape (batch, n_actions).

        :param x: Observations, shape (batch, obs_dim).
        :param cache: When given, filled with what :meth:`backward` needs (layer inputs, layer norm
            statistics).
        """
        h = x
        last = len(self.layers) - 1
        for i, (w_t, b) in enumerate(self.layers):
            if cache is not None:
                cache.inputs.append(h)
            h = h @ w_t
            h += b
            if i < last:
                if self.layer_norm:
                    h = self._layer_norm(h, i, cache)
                # Inlined activation: this runs twice per layer and update, a method call shows.
                if self.tanh:
                    np.tanh(h, out=h)
                else:
                    np.maximum(h, 0, out=h)
        if self.dueling:
            advantage = h[:, 1:]
            return h[:, :1] + advantage - advantage.mean(axis=1, keepdims=True)
        return h

    def _layer_norm(self, h: np.ndarray, i: int, cache: ForwardCache | None) -> np.ndarray:
        """``nn.LayerNorm`` of hidden layer ``i`` on a batch, each row normalized over its features.

        :param h: The Linear layer's output, shape (batch, units); overwritten with the normalized features.
        :param i: Index of the hidden layer.
        :param cache: When given, receives the normalized features and the inverse standard deviations.
        :return: ``gamma * (h - mean) / sqrt(var + eps) + beta``.
        """
        gamma, beta, eps = self._norms[i]
        # Row means as a product with a (units, 1) column of 1/units: one BLAS call, about half the cost of
        # numpy's reduction along the last axis on these small arrays.
        row_mean = self._row_mean[i]
        h -= h @ row_mean
        # The biased variance (divided by units, not units - 1), as torch's LayerNorm computes it.
        inv_std = (h * h) @ row_mean
        inv_std += eps
        np.sqrt(inv_std, out=inv_std)
        np.divide(1.0, inv_std, out=inv_std)
        h *= inv_std
        if cache is None:
            h *= gamma
            h += beta
            return h
        # The backward pass needs the normalized features themselves: the affine map goes to a new array.
        cache.normalized.append(h)
        cache.inv_std.append(inv_std)
        out = h * gamma
        out += beta
        return out

    @staticmethod
    def _layer_norm_1d(h: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> None:
        """``nn.LayerNorm`` of one feature vector, in place (scalar statistics, no axis bookkeeping).

        :param h: The features of one observation, overwritten with the result.
        :param gamma: The LayerNorm's weight.
        :param beta: The LayerNorm's bias.
        :param eps: The LayerNorm's epsilon.
        """
        n = len(h)
        h -= np.add.reduce(h) / n
        h *= 1.0 / math.sqrt(float(h @ h) / n + eps)
        h *= gamma
        h += beta

    def act(self, observation: np.ndarray) -> int:
        """Greedy action for one observation (matrix-vector products, no batch dimension)."""
        h = observation
        # Once per environment step: the layout and the activation are chosen outside the loop over layers.
        if self.layer_norm:
            norm = self._layer_norm_1d
            if self.tanh:
                for (w, b), (gamma, beta, eps) in zip(self._hidden, self._norms):
                    h = w @ h
                    h += b
                    norm(h, gamma, beta, eps)
                    np.tanh(h, out=h)
            else:
                for (w, b), (gamma, beta, eps) in zip(self._hidden, self._norms):
                    h = w @ h
                    h += b
                    norm(h, gamma, beta, eps)
                    np.maximum(h, 0, out=h)
        elif self.tanh:
            for w, b in self._hidden:
                h = w @ h
                h += b
                np.tanh(h, out=h)
        else:
            for w, b in self._hidden:
                h = w @ h
                h += b
                np.maximum(h, 0, out=h)
        w, b = self._output
        h = w @ h
        h += b
        # In a dueling head V(s) and the mean advantage are the same for every action.
        return int((h[1:] if self.dueling else h).argmax())

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations."""
        return self.forward(observations.astype(self.dtype, copy=False)).argmax(axis=1)

    def backward(
        self,
        cache: ForwardCache,
        d_q: np.ndarray,
        grads_w: list[np.ndarray],
        grads_b: list[np.ndarray],
        grads_norm_w: Sequence[np.ndarray] = (),
        grads_norm_b: Sequence[np.ndarray] = (),
    ) -> None:
        """Backpropagate ``d_q = dLoss/dQ`` (batch, n_actions) and write the gradients in place.

        :param cache: What :meth:`forward` recorded.
        :param d_q: Gradient of the loss with respect to the Q-values.
        :param grads_w: Output arrays for the Linear weight gradients (views of the flat gradient).
        :param grads_b: Output arrays for the Linear bias gradients.
        :param grads_norm_w: Output arrays for the LayerNorm weight gradients (networks with layer norm).
        :param grads_norm_b: Output arrays for the LayerNorm bias gradients (networks with layer norm).
        """
        if self.dueling:
            # Q_j = V + A_j - mean(A): dV = sum_j dQ_j, dA_k = dQ_k - mean_j dQ_j.
            delta = np.empty((d_q.shape[0], d_q.shape[1] + 1), dtype=d_q.dtype)
            delta[:, 0] = d_q.sum(axis=1)
            delta[:, 1:] = d_q - d_q.mean(axis=1, keepdims=True)
        else:
            delta = d_q
        if len(grads_norm_w) != len(self.norm_weights) or len(grads_norm_b) != len(self.norm_biases):
            raise ValueError("backward needs one gradient array per LayerNorm weight and bias")
        # delta is dLoss/d(output of Linear i); each pass turns it into that of Linear i - 1.
        for i in range(len(self.weights) - 1, -1, -1):
            h_in = cache.inputs[i]
            np.matmul(delta.T, h_in, out=grads_w[i])
            np.add.reduce(delta, 0, out=grads_b[i])
            if i > 0:
                delta = delta @ self.weights[i]
                # h_in is the activation output of the previous layer: its derivative is cheap from it.
                if self.tanh:
                    delta *= 1.0 - h_in * h_in
                else:
                    delta *= h_in > 0
                if self.layer_norm:
                    delta = self._layer_norm_backward(
                        delta, i - 1, cache, grads_norm_w[i - 1], grads_norm_b[i - 1]
                    )

    def _layer_norm_backward(
        self, delta: np.ndarray, i: int, cache: ForwardCache, grad_gamma: np.ndarray, grad_beta: np.ndarray
    ) -> np.ndarray:
        """Backpropagate through the LayerNorm of hidden layer ``i``.

        :param delta: dLoss/d(LayerNorm output), shape (batch, units); overwritten.
        :param i: Index of the hidden layer.
        :param cache: The forward pass's normalized features and inverse standard deviations.
        :param grad_gamma: Output array for the LayerNorm weight gradient.
        :param grad_beta: Output array for the LayerNorm bias gradient.
        :return: dLoss/d(LayerNorm input), the Linear layer's output.
        """
        x_hat, inv_std = cache.normalized[i], cache.inv_std[i]
        gamma = self.norm_weights[i]
        # out = gamma * x_hat + beta, feature by feature: the gradients are sums over the batch.
        delta_x_hat = delta * x_hat
        np.add.reduce(delta_x_hat, 0, out=grad_gamma)
        np.add.reduce(delta, 0, out=grad_beta)
        # x_hat = (x - mean) * inv_std, where mean and inv_std depend on every feature of the row. With
        # g = dLoss/dx_hat = gamma * delta, the chain rule gives
        #     dLoss/dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)),
        # and both row means are products with gamma / units (a BLAS call each, as in the forward pass).
        gamma_mean = gamma[:, np.newaxis] * self._row_mean[i]
        mean_g = delta @ gamma_mean
        mean_g_x_hat = delta_x_hat @ gamma_mean
        delta *= gamma
        delta -= mean_g
        np.multiply(x_hat, mean_g_x_hat, out=delta_x_hat)
        delta -= delta_x_hat
        delta *= inv_std
        return delta


class NumpyAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) on one flat parameter vector, in place.

    :param params: The flat parameters (updated in place).
    :param lr: Learning rate.
    :param betas: Adam's decay rates.
    :param eps: Term added to the denominator.
    """

    def __init__(
        self, params: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = np.zeros_like(params)
        self.exp_avg_sq = np.zeros_like(params)
        self.step_count = 0
        self._tmp = np.empty_like(params)

    def step(self, grad: np.ndarray) -> None:
        """One Adam step with gradient ``grad`` (same shape as the parameters)."""
        self.step_count += 1
        tmp = self._tmp
        self.exp_avg *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=tmp)
        self.exp_avg += tmp
        self.exp_avg_sq *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta2
        self.exp_avg_sq += tmp
        bias_correction1 = 1.0 - self.beta1**self.step_count
        bias_correction2 = 1.0 - self.beta2**self.step_count
        step_size = self.lr / bias_correction1
        np.sqrt(self.exp_avg_sq, out=tmp)
        tmp /= math.sqrt(bias_correction2)
        tmp += self.eps
        np.divide(self.exp_avg, tmp, out=tmp)
        tmp *= step_size
        self.params -= tmp

    def state_dict(self) -> dict[str, object]:
        """Optimizer state for checkpoints (tensors, so that ``torch.load(weights_only=True)`` reads it)."""
        return {
            "exp_avg": th.from_numpy(self.exp_avg.copy()),
            "exp_avg_sq": th.from_numpy(self.exp_avg_sq.copy()),
            "step": self.step_count,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        assert isinstance(exp_avg, th.Tensor) and isinstance(exp_avg_sq, th.Tensor)
        self.exp_avg[:] = exp_avg.numpy()
        self.exp_avg_sq[:] = exp_avg_sq.numpy()
        self.step_count = int(state["step"])  # type: ignore[call-overload]
        self.lr = float(state["lr"])  # type: ignore[arg-type]


class NumpyLearner(Learner):
    """DQN gradient steps in numpy on a CPU :class:`QNetwork` and its target network.

    :param q_net: The online network (its parameters are moved into one flat buffer).
    :param q_target_net: The target network (same architecture).
    :param settings: Learning rate, gamma, Double DQN, loss, gradient clipping, Adam's epsilon.
    """

    def __init__(self, q_net: QNetwork, q_target_net: QNetwork, settings: TDSettings) -> None:
        super().__init__(q_net, q_target_net, settings)
        self.params = flatten_parameters(q_net)
        self.target_params = flatten_parameters(q_target_net)
        self.q = NumpyQFunction(q_net)
        self.q_target = NumpyQFunction(q_target_net)
        self.huber = settings.loss == "huber"
        self.optimizer = NumpyAdam(self.params, settings.learning_rate, eps=settings.adam_eps)
        self.grad = np.zeros_like(self.params)
        # Views of the flat gradient, laid out as flatten_parameters laid out the parameters (in the order
        # of q_net.parameters(): Linear weight and bias, then LayerNorm weight and bias when there is one,
        # layer after layer), then handed out by role so that backward writes each gradient in its place.
        views: dict[int, np.ndarray] = {}
        offset = 0
        for p in q_net.parameters():
            views[id(p)] = self.grad[offset : offset + p.numel()].reshape(p.shape)
            offset += p.numel()
        linears, norms = mlp_modules(q_net)
        self.grads_w = [views[id(m.weight)] for m in linears]
        self.grads_b = [views[id(m.bias)] for m in linears]
        self.grads_norm_w = [views[id(m.weight)] for m in norms]
        self.grads_norm_b = [views[id(m.bias)] for m in norms]
        self._tmp = np.empty_like(self.params)
        self._d_q: np.ndarray | None = None
        self._arange = np.arange(0)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.lr = value

    def act(self, observation: np.ndarray) -> int:
        """Greedy action of the online network for one observation."""
        return self.q.act(observation)

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network for a batch of observations."""
        return self.q.greedy(observations)

    def update(self, samples: ReplayBufferSamples) -> UpdateResult:
        """One gradient step on a minibatch.

        :param samples: The minibatch (numpy arrays, observations in the network's dtype).
        """
        obs, next_obs = samples.observations, samples.next_observations
        batch_size = len(obs)
        rows = self._rows(batch_size)
        actions = samples.actions[:, 0]
        # TD target, no gradient: y = r + gamma^k * (1 - terminated) * V_target(s')
        next_q = self.q_target.forward(next_obs)
        if self.double_dqn:
            next_values = next_q[rows, self.q.forward(next_obs).argmax(axis=1)]
        else:
            next_values = np.maximum.reduce(next_q, 1)
        discount = self.gamma if samples.discounts is None else samples.discounts
        td_target = samples.rewards + discount * next_values * ~samples.terminateds
        # Forward with the online network, keeping what backpropagation needs.
        cache = ForwardCache()
        q_values = self.q.forward(obs, cache)
        current_q = q_values[rows, actions]
        td_errors = current_q - td_target
        weights = samples.weights
        if self.huber:
            abs_err = np.abs(td_errors)
            elementwise = np.where(abs_err < 1.0, 0.5 * td_errors * td_errors, abs_err - 0.5)
            d_loss = np.clip(td_errors, -1.0, 1.0)
            if weights is not None:
                elementwise *= weights
                d_loss *= weights
            loss = float(elementwise.sum()) / batch_size
        else:
            # Mean squared error as a dot product: one BLAS call instead of square, then mean.
            weighted = td_errors if weights is None else td_errors * weights
            loss = float(np.dot(weighted, td_errors)) / batch_size
            d_loss = 2.0 * weighted
        d_q = self._d_q_buffer(q_values)
        d_q[rows, actions] = d_loss / batch_size
        self.q.backward(cache, d_q, self.grads_w, self.grads_b, self.grads_norm_w, self.grads_norm_b)
        if self.max_grad_norm is not None:
            # As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
            clip_coef = self.max_grad_norm / (math.sqrt(float(np.dot(self.grad, self.grad))) + 1e-6)
            if clip_coef < 1.0:
                self.grad *= clip_coef
        self.optimizer.step(self.grad)
        mean_q = float(np.add.reduce(current_q)) / batch_size
        return UpdateResult(loss, mean_q, float(q_values.max()), td_errors)

    def _rows(self, batch_size: int) -> np.ndarray:
        """``arange(batch_size)``, kept from one update to the next (the batch size rarely changes)."""
        if len(self._arange) != batch_size:
            self._arange = np.arange(batch_size)
        return self._arange

    def _d_q_buffer(self, q_values: np.ndarray) -> np.ndarray:
        """A zeroed (batch, n_actions) array for dLoss/dQ, reused from one update to the next."""
        if self._d_q is None or self._d_q.shape != q_values.shape:
            self._d_q = np.zeros_like(q_values)
        else:
            self._d_q.fill(0.0)
        return self._d_q

    def update_target(self, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging ``target <- tau * online + (1 - tau) * target``."""
        if tau >= 1.0:
            np.copyto(self.target_params, self.params)
        else:
            self.target_params *= 1.0 - tau
            np.multiply(self.params, tau, out=self._tmp)
            self.target_params += self._tmp

    def optimizer_state(self) -> dict[str, object]:
        """State of the optimizer for checkpoints."""
        return {"kind": "numpy-adam", **self.optimizer.state_dict()}

    def load_optimizer_state(self, state: dict[str, object]) -> None:
        """Restore the optimizer state from a checkpoint."""
        self.optimizer.load_state_dict(state)
