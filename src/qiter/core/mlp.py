"""The Q-network of the DQN core: an MLP over a leading agent axis, its forward and its backward pass.

``N`` agents' networks share one architecture (:class:`MLPSpec`): ``Linear [-> LayerNorm] -> activation``
per hidden layer, then a ``Linear`` output layer, optionally read as a dueling head. Their parameters live
in one flat vector, tensor by tensor (layer 1's weights of all agents, then its biases, then its layer
norm's scale and shift, then layer 2...), so each tensor of all agents is one contiguous ``(N, ...)`` view
and a layer of all agents is one batched matrix product. With ``N = 1`` this is the order of a
:class:`~qiter.dqn.networks.QNetwork`'s ``parameters()``, so one agent's vector can back the torch module
itself. Weights are stored ``(in, out)``: the forward products, which run two or three times per update,
then need no transposed operand (a 64x64 product with a transposed factor costs 1.6x a plain one in numpy).

The backward pass is written out by hand (no autograd), over :class:`~qiter.core.arrays.Ops`, so the same
code runs on numpy, on torch's CPU backend and on CUDA, and allocates nothing a captured CUDA graph could
not replay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.special

from qiter.core.arrays import Array, Ops
from qiter.core.conv import Conv2d, ConvSpec, conv_features_one

#: The hidden activations the core computes (PyTorch's defaults: ELU with alpha 1, exact GELU).
ACTIVATIONS = ("relu", "tanh", "elu", "gelu")


@dataclass(frozen=True)
class MLPSpec:
    """One agent's network.

    :param sizes: Layer widths, input first: ``[obs_dim, hidden..., outputs]``; the outputs are the
        Q-values, or ``[V, A_1..A_n]`` with a dueling head.
    :param activation: One of :data:`ACTIVATIONS`.
    :param layer_norm: A layer normalization (with scale and shift) after each hidden layer's linear map.
    :param dueling: Read the outputs as ``Q = V + A - mean(A)`` (Wang et al., 2016).
    :param layer_norm_eps: The layer norms' epsilon.
    :param conv: A convolution (with its ReLU) before the MLP, which then takes its flattened features
        (``sizes[0]`` is :attr:`ConvSpec.n_features`) and observations are images ``(c, h, w)``.
    """

    sizes: tuple[int, ...]
    activation: str = "relu"
    layer_norm: bool = False
    dueling: bool = False
    layer_norm_eps: float = 1e-5
    conv: ConvSpec | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if len(self.sizes) < 2 or self.sizes[-1] < 1 + self.dueling:
            raise ValueError(f"bad layer sizes {self.sizes}")
        if self.conv is not None and self.conv.n_features != self.sizes[0]:
            raise ValueError(
                f"the convolution gives {self.conv.n_features} features, the MLP takes {self.sizes[0]}"
            )

    @property
    def n_actions(self) -> int:
        return self.sizes[-1] - int(self.dueling)

    def tensor_shapes(self) -> list[tuple[int, ...]]:
        """One agent's tensors in the flat vector's order: the convolution's kernels ``(c * k * k, out)``
        and biases if any, then per layer ``W (in, out)``, ``b (out,)``, and for a hidden layer with layer
        norm its scale and shift ``(out,)``."""
        shapes: list[tuple[int, ...]] = []
        if self.conv is not None:
            shapes += [(self.conv.patch_size, self.conv.out_channels), (self.conv.out_channels,)]
        last = len(self.sizes) - 2
        for i in range(last + 1):
            n_in, n_out = self.sizes[i], self.sizes[i + 1]
            shapes += [(n_in, n_out), (n_out,)]
            if self.layer_norm and i < last:
                shapes += [(n_out,), (n_out,)]
        return shapes

    @property
    def n_params(self) -> int:
        """Parameters of one agent."""
        return sum(math.prod(shape) for shape in self.tensor_shapes())


#: One agent's hidden layer for :func:`act_one`: ``W (in, out)``, ``b``, and the layer norm's scale and
#: shift (``None`` without layer norm). Numpy arrays (or views of torch tensors' memory).
HiddenLayer = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]
#: One agent's output layer for :func:`act_one`: ``W (in, out)``, ``b``.
OutputLayer = tuple[np.ndarray, np.ndarray]
#: One agent's convolution for :func:`act_one`: the patch index (:meth:`ConvSpec.patch_index`), the
#: kernels ``(c * k * k, out)`` and the biases ``(out,)``.
ConvLayer = tuple[np.ndarray, np.ndarray, np.ndarray]


class Parameters:
    """Views of a flat ``(N * n_params,)`` vector as the network's tensors, each with a leading agent axis.

    :ivar tensors: Every tensor in the vector's order, ``(N, *shape)`` (vectors as ``(N, 1, size)``, so they
        broadcast over a minibatch).
    :ivar weights: Per layer ``(N, in, out)``.
    :ivar biases: Per layer ``(N, 1, out)``.
    :ivar norm_weights: Per hidden layer with layer norm, the scale ``(N, 1, units)`` (else empty).
    :ivar norm_biases: The layer norms' shifts ``(N, 1, units)``.
    :ivar conv_weight: The convolution's kernels ``(N, c * k * k, out)`` (``None`` without one).
    :ivar conv_bias: Its biases ``(N, 1, out)``.
    """

    def __init__(self, flat: Array, spec: MLPSpec, n: int) -> None:
        self.flat = flat
        self.tensors: list[Array] = []
        offset = 0
        for shape in spec.tensor_shapes():
            size = n * math.prod(shape)
            view_shape = (n, *shape) if len(shape) == 2 else (n, 1, *shape)
            self.tensors.append(flat[offset : offset + size].reshape(view_shape))
            offset += size
        first = 0 if spec.conv is None else 2
        self.conv_weight: Array | None = self.tensors[0] if first else None
        self.conv_bias: Array | None = self.tensors[1] if first else None
        self.first_conv: ConvLayer | None = None
        if spec.conv is not None:
            self.first_conv = (spec.conv.patch_index(), self.tensors[0][0], self.tensors[1][0, 0])
        per_layer = 4 if spec.layer_norm else 2
        n_hidden = len(spec.sizes) - 2
        hidden = [self.tensors[first + i * per_layer : first + (i + 1) * per_layer] for i in range(n_hidden)]
        output = self.tensors[first + n_hidden * per_layer :]
        self.weights = [layer[0] for layer in hidden] + [output[0]]
        self.biases = [layer[1] for layer in hidden] + [output[1]]
        self.norm_weights = [layer[2] for layer in hidden] if spec.layer_norm else []
        self.norm_biases = [layer[3] for layer in hidden] if spec.layer_norm else []
        # Agent 0's hidden layers as (W, b, scale, shift) and its output layer, made once: acting with one
        # agent reads them at every environment step.
        self.first_hidden: list[HiddenLayer] = [
            (w[0], b[0, 0], *((g[0, 0], s[0, 0]) if spec.layer_norm else (None, None)))
            for w, b, g, s in zip(
                self.weights[:-1], self.biases[:-1],
                self.norm_weights or [None] * n_hidden, self.norm_biases or [None] * n_hidden,
            )
        ]  # fmt: skip
        self.first_output: OutputLayer = (self.weights[-1][0], self.biases[-1][0, 0])


class ForwardCache:
    """What :meth:`MLP.backward` needs from the forward pass it differentiates.

    :ivar inputs: The input of every linear layer: the observations, then each hidden activation's output.
    :ivar pre_activations: Per hidden layer, the activation's input (GELU's derivative needs it).
    :ivar normalized: Per layer norm, the normalized features ``(x - mean) / std``.
    :ivar inv_std: Per layer norm, ``1 / sqrt(var + eps)`` of each row, ``(N, B, 1)``.
    :ivar patches: The convolution's input patches (with a convolution).
    """

    __slots__ = ("inputs", "inv_std", "normalized", "patches", "pre_activations")

    def __init__(self) -> None:
        self.patches: Array | None = None
        self.inputs: list[Array] = []
        self.pre_activations: list[Array] = []
        self.normalized: list[Array] = []
        self.inv_std: list[Array] = []


class MLP:
    """Forward and backward passes of ``n`` networks of one :class:`MLPSpec` on an :class:`Ops` backend.

    Arrays are ``(N, B, features)``: agent ``i``'s minibatch goes through agent ``i``'s network. Outputs
    and deltas live in scratch arrays kept by role and shape (fresh allocations of these sizes cost page
    faults on every call): a result is valid until the next call of the same role.

    :param ops: The array backend.
    :param spec: The architecture.
    :param n: The number of agents N.
    """

    def __init__(self, ops: Ops, spec: MLPSpec, n: int) -> None:
        self.ops, self.spec, self.n = ops, spec, n
        self.activation = spec.activation
        self.n_layers = len(spec.sizes) - 1
        self.conv = None if spec.conv is None else Conv2d(ops, spec.conv, n)
        self._scratch: dict[tuple[object, ...], Array] = {}
        # Each layer's output per (role, batch size), and each backpropagated delta per batch size: looked up
        # once per pass, not per layer (a key built per layer showed in the profile).
        self._layer_outputs: dict[tuple[str, int], list[Array]] = {}
        # ReLU and tanh call the backend directly (looked up once per pass: a call per layer fewer).
        self._backend_activation = {"relu": "relu_", "tanh": "tanh_"}.get(spec.activation)
        self._deltas: dict[int, list[Array]] = {}
        # Row means of a layer norm as a product with a (units, 1) column of 1/units: one BLAS call, about
        # half the cost of a reduction along the last axis on these small arrays.
        self._mean_columns = {u: ops.full((u, 1), 1.0 / u) for u in set(spec.sizes[1:-1])}

    def scratch(self, key: tuple[object, ...], shape: tuple[int, ...]) -> Array:
        """A zeroed array kept from one call to the next, per role and shape."""
        full_key = (*key, *shape)
        array = self._scratch.get(full_key)
        if array is None:
            array = self._scratch[full_key] = self.ops.zeros(shape)
        return array

    def _ones(self, batch_size: int) -> Array:
        """``(N, 1, B)`` ones: sums over the minibatch as products (5x faster than numpy's middle-axis sum)."""
        ones = self._scratch.get(("ones", batch_size))
        if ones is None:
            ones = self._scratch[("ones", batch_size)] = self.ops.full((self.n, 1, batch_size), 1.0)
        return ones

    # -- forward -------------------------------------------------------------------------------------

    def forward(
        self, params: Parameters, x: Array, cache: ForwardCache | None = None, role: str = "act"
    ) -> Array:
        """Q-values ``(N, B, n_actions)`` of observations ``x`` ``(N, B, obs_dim)``, or images ``(N, B, c, h,
        w)`` of any dtype with a convolution.

        :param params: The networks' parameters (online or target).
        :param cache: When given, filled with what :meth:`backward` needs.
        :param role: Names the scratch arrays the result lives in.
        """
        ops = self.ops
        outputs = self._layer_outputs.get((role, x.shape[1]))
        if outputs is None:
            outputs = self._layer_outputs[(role, x.shape[1])] = [
                ops.zeros((self.n, x.shape[1], size)) for size in self.spec.sizes[1:]
            ]
        if self.conv is not None:
            features_t, patches = self.conv.forward(params.conv_weight, params.conv_bias, x, role)
            x = features_t.mT  # (N, B, features): the products read it transposed as it lies
            if cache is not None:
                cache.patches = patches
        h = x
        last = self.n_layers - 1
        name = self._backend_activation
        activate: Callable[[Array], None] = self._activate_any if name is None else getattr(ops, name)
        layer_norm = self.spec.layer_norm
        keep_inputs = cache is not None and self.activation == "gelu"
        for i, (w, b, out) in enumerate(zip(params.weights, params.biases, outputs)):
            if cache is not None:
                cache.inputs.append(h)
            ops.matmul_into(h, w, out)
            out += b
            if i < last:
                if layer_norm:
                    out = self._layer_norm(out, params.norm_weights[i], params.norm_biases[i], cache)
                if keep_inputs:
                    cache.pre_activations.append(out * 1.0)  # type: ignore[union-attr]  # a copy, in numpy and torch alike
                activate(out)
            h = out
        return self._dueling(h) if self.spec.dueling else h

    def _activate_any(self, z: Array) -> None:
        """The hidden activation, in place (ReLU and tanh go to the backend's call directly)."""
        ops, kind = self.ops, self.activation
        if kind == "relu":
            ops.relu_(z)
        elif kind == "tanh":
            ops.tanh_(z)
        elif kind == "elu":
            # max(z, 0) + expm1(min(z, 0)): exp never sees a large positive input.
            negative = ops.expm1(ops.clip(z, -math.inf, 0.0))
            ops.relu_(z)
            z += negative
        else:  # gelu: z * Phi(z), the exact form (nn.GELU's default)
            ops.copy_into(z, 0.5 * z * (1.0 + ops.erf(z * (1.0 / math.sqrt(2.0)))))

    def _layer_norm(self, h: Array, gamma: Array, beta: Array, cache: ForwardCache | None) -> Array:
        """``nn.LayerNorm`` over the last axis: ``gamma * (h - mean) / sqrt(var + eps) + beta``.

        :param h: The linear map's output, overwritten with the normalized features.
        :return: The result (``h`` itself without a cache; a new array with one, which keeps ``h``).
        """
        column = self._mean_columns[h.shape[-1]]
        h -= h @ column
        # The biased variance (divided by units), as torch's LayerNorm computes it.
        inv_std = (h * h) @ column
        inv_std += self.spec.layer_norm_eps
        inv_std = 1.0 / self.ops.sqrt(inv_std)
        h *= inv_std
        if cache is None:
            h *= gamma
            h += beta
            return h
        cache.normalized.append(h)
        cache.inv_std.append(inv_std)
        out = h * gamma
        out += beta
        return out

    def _dueling(self, out: Array) -> Array:
        """``Q = V + A - mean(A)`` from outputs ``[V, A_1..A_n]``."""
        advantage = out[..., 1:]
        return out[..., :1] + advantage - self.ops.sum(advantage, -1, keepdims=True) / advantage.shape[-1]

    # -- backward ------------------------------------------------------------------------------------

    def backward(self, params: Parameters, cache: ForwardCache, d_q: Array, grads: Parameters) -> None:
        """Backpropagate ``d_q = dLoss/dQ`` ``(N, B, n_actions)`` and write every gradient into ``grads``.

        :param params: The parameters :meth:`forward` ran with.
        :param cache: What :meth:`forward` recorded.
        :param grads: Views of the gradient vector (written, not accumulated).
        """
        ops = self.ops
        delta = self._dueling_backward(d_q) if self.spec.dueling else d_q
        batch = delta.shape[1]
        ones = self._ones(batch)
        deltas = self._deltas.get(batch)
        if deltas is None:
            deltas = self._deltas[batch] = [ops.zeros((self.n, batch, size)) for size in self.spec.sizes[:-1]]
        # delta is dLoss/d(output of linear layer i); each pass turns it into that of layer i - 1.
        for i in range(self.n_layers - 1, -1, -1):
            h_in = cache.inputs[i]
            ops.matmul_into(h_in.mT, delta, grads.weights[i])
            ops.matmul_into(ones, delta, grads.biases[i])
            if i == 0:
                if self.conv is not None:
                    # The observations need no gradient, the convolution's output does (through its ReLU),
                    # computed transposed as the features lie: (N, features, B).
                    features_t = h_in.mT
                    d_features = self.scratch(("conv",), tuple(features_t.shape))
                    ops.matmul_into(params.weights[0], delta.mT, d_features)
                    d_features *= features_t > 0
                    assert cache.patches is not None
                    self.conv.backward(cache.patches, d_features, grads.conv_weight, grads.conv_bias)
                break
            out = deltas[i]
            ops.matmul_bt_into(delta, params.weights[i], out)
            if self.activation == "relu":  # inline: the common case, twice per update
                out *= h_in > 0
            else:
                self._activation_backward(out, h_in, cache, i - 1)
            if self.spec.layer_norm:
                out = self._layer_norm_backward(out, params.norm_weights[i - 1], cache, i - 1, grads, ones)
            delta = out

    def _dueling_backward(self, d_q: Array) -> Array:
        """dLoss/d[V, A]: ``dV = sum_j dQ_j``, ``dA_k = dQ_k - mean_j dQ_j``."""
        ops = self.ops
        delta = self.scratch(("dueling",), (*d_q.shape[:-1], d_q.shape[-1] + 1))
        total = ops.sum(d_q, -1, keepdims=True)
        ops.copy_into(delta[..., :1], total)
        ops.copy_into(delta[..., 1:], d_q - total / d_q.shape[-1])
        return delta

    def _activation_backward(self, delta: Array, out: Array, cache: ForwardCache, i: int) -> None:
        """Multiply ``delta`` in place by the derivative of hidden layer ``i``'s activation, found from its
        output ``out`` (ReLU, tanh, ELU) or its input (GELU)."""
        kind = self.activation
        if kind == "relu":
            delta *= out > 0
        elif kind == "tanh":
            delta *= 1.0 - out * out
        elif kind == "elu":
            # z > 0: 1; else exp(z) = elu(z) + 1.
            delta *= self.ops.clip(out, -math.inf, 0.0) + 1.0
        else:  # gelu: Phi(z) + z * phi(z)
            z = cache.pre_activations[i]
            ops = self.ops
            cdf = 0.5 * (1.0 + ops.erf(z * (1.0 / math.sqrt(2.0))))
            pdf = ops.expm1(-0.5 * z * z) + 1.0
            pdf *= 1.0 / math.sqrt(2.0 * math.pi)
            delta *= cdf + z * pdf

    def _layer_norm_backward(
        self, delta: Array, gamma: Array, cache: ForwardCache, i: int, grads: Parameters, ones: Array
    ) -> Array:
        """Backpropagate through hidden layer ``i``'s layer norm.

        :param delta: dLoss/d(layer norm output) ``(N, B, units)``; overwritten.
        :return: dLoss/d(layer norm input).
        """
        ops = self.ops
        x_hat, inv_std = cache.normalized[i], cache.inv_std[i]
        # out = gamma * x_hat + beta, feature by feature: the gradients are sums over the minibatch.
        delta_x_hat = delta * x_hat
        ops.matmul_into(ones, delta_x_hat, grads.norm_weights[i])
        ops.matmul_into(ones, delta, grads.norm_biases[i])
        # With g = gamma * delta = dLoss/dx_hat, the chain rule through the row statistics gives
        #     dLoss/dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)),
        # and both row means are products with gamma / units (one batched BLAS call each).
        gamma_mean = gamma.mT * self._mean_columns[gamma.shape[-1]]
        mean_g = delta @ gamma_mean
        mean_g_x_hat = delta_x_hat @ gamma_mean
        delta *= gamma
        delta -= mean_g
        delta -= x_hat * mean_g_x_hat
        delta *= inv_std
        return delta


def act_one(
    spec: MLPSpec,
    hidden: Sequence[HiddenLayer],
    output: OutputLayer,
    observation: np.ndarray,
    conv: ConvLayer | None = None,
) -> int:
    """Greedy action of one agent for one observation, in numpy: vector-matrix products, no batch axis
    (the acting path of a single agent, run at every environment step, so it costs a few microseconds).

    :param spec: The architecture.
    :param hidden: The agent's hidden layers (:attr:`Parameters.first_hidden`, or views of a torch
        network's weights).
    :param output: Its output layer.
    :param observation: One observation ``(obs_dim,)``, or ``(c, h, w)`` with a convolution.
    :param conv: The agent's convolution (:attr:`Parameters.first_conv`), with ``spec.conv``.
    """
    h = observation
    if spec.conv is not None:
        assert conv is not None
        h = conv_features_one(*conv, spec.conv.scale, observation)
    kind = spec.activation
    for w, b, gamma, beta in hidden:
        h = h @ w
        h += b
        if gamma is not None:
            h -= np.add.reduce(h) / len(h)
            h *= 1.0 / math.sqrt(float(h @ h) / len(h) + spec.layer_norm_eps)
            h *= gamma
            h += beta
        if kind == "relu":
            np.maximum(h, 0, out=h)
        elif kind == "tanh":
            np.tanh(h, out=h)
        elif kind == "elu":
            h = np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
        else:
            h = 0.5 * h * (1.0 + scipy.special.erf(h * (1.0 / math.sqrt(2.0))))
    w, b = output
    h = h @ w
    h += b
    # In a dueling head V(s) and the mean advantage are the same for every action.
    return int((h[1:] if spec.dueling else h).argmax())
