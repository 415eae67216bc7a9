"""The DQN core's convolutional input layer: one ``k x k`` convolution of stride 1 without padding, then a
ReLU, over small channel-first images (the MinAtar network's 3x3 convolution of 16 channels on 10x10
grids; Young & Tian, 2019), for a leading agent axis like the rest of the core.

How: an im2col gather copies each output position's ``c x k x k`` input patch into a column (one gather of
the stored uint8 observations, cast and scaled once per minibatch), so the convolution of every position
of every sample is one batched matrix product with the kernel shared over positions, ``(N, out, c*k*k) @
(N, c*k*k, P*B)``. The features go on to the MLP in the order of ``nn.Flatten`` after ``nn.Conv2d``
(channel, then row, then column), so one agent's parameters map onto the torch module's. The backward pass
needs the kernel's gradient only (the observations have none): one more batched product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qiter.core.arrays import Array, Ops


@dataclass(frozen=True)
class ConvSpec:
    """One agent's convolution.

    :param in_channels: The observation's channels ``c``.
    :param height: Its rows.
    :param width: Its columns.
    :param out_channels: The convolution's channels.
    :param kernel: The side ``k`` of its square kernel.
    :param scale: The observations are multiplied by this first (1/255 for 8-bit pixels, 1 for MinAtar's
        0/1 channels), as :class:`qiter.dqn.networks.ConvQNetwork` does.
    """

    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if min(self.in_channels, self.out_channels, self.kernel) < 1 or self.kernel > min(
            self.height, self.width
        ):
            raise ValueError(f"bad convolution {self}")

    @property
    def positions(self) -> tuple[int, int]:
        """The output's rows and columns."""
        return self.height - self.kernel + 1, self.width - self.kernel + 1

    @property
    def n_positions(self) -> int:
        rows, cols = self.positions
        return rows * cols

    @property
    def patch_size(self) -> int:
        """Inputs of one output position: ``c * k * k``."""
        return self.in_channels * self.kernel * self.kernel

    @property
    def n_features(self) -> int:
        """The flattened output: ``out_channels * positions``."""
        return self.out_channels * self.n_positions

    def patch_index(self) -> np.ndarray:
        """``(positions, c * k * k)``: where each patch element sits in a flattened ``(c, h, w)``
        observation, the patch in the order of a ``Conv2d`` weight's ``(c, k, k)``."""
        rows, cols = self.positions
        k = self.kernel
        y, x = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        c, dy, dx = np.meshgrid(np.arange(self.in_channels), np.arange(k), np.arange(k), indexing="ij")
        row = y.reshape(-1, 1) + dy.reshape(1, -1)
        col = x.reshape(-1, 1) + dx.reshape(1, -1)
        return (c.reshape(1, -1) * self.height + row) * self.width + col


class Conv2d:
    """Forward (im2col, product, bias, ReLU) and backward (the kernels' and biases' gradients) of ``n``
    agents' convolutions on an :class:`Ops` backend. Results live in scratch arrays per role and batch
    size, valid until the next call of the same role.

    Everything is laid out with the minibatch last, ``(N, rows, B)``: the patches ``(N, c k k, P B)``, the
    output ``(N, out, P B)``, which is the features transposed, ``(N, out P, B)`` in ``nn.Flatten``'s
    order. The products then read every operand as it lies (a transposed operand costs a BLAS call
    nothing), where the minibatch-first layout needed a transposing copy of the features in each pass.

    :param ops: The array backend.
    :param spec: The convolution.
    :param n: The number of agents N.
    """

    def __init__(self, ops: Ops, spec: ConvSpec, n: int) -> None:
        self.ops, self.spec, self.n = ops, spec, n
        # Row j * P + p of the patches is element j of position p's patch.
        self.index = ops.asarray(spec.patch_index().T.reshape(-1), "int64")
        self.n_inputs = spec.in_channels * spec.height * spec.width
        self.n_positions, self.patch_size = spec.n_positions, spec.patch_size
        self.out_channels, self.n_features = spec.out_channels, spec.n_features
        self._scratch: dict[tuple[str, int], Array] = {}

    def _array(self, role: str, rows: int, batch: int) -> Array:
        key = (role, batch)
        array = self._scratch.get(key)
        if array is None:
            array = self._scratch[key] = self.ops.zeros((self.n, rows, batch))
        return array

    def patches(self, x: Array, role: str) -> Array:
        """The patches ``(N, c k k, P B)`` (float32, scaled) of observations ``x`` ``(N, B, c, h, w)`` of
        any dtype."""
        ops, n, batch = self.ops, self.n, x.shape[1]
        # The observations as float32 (N, c h w, B), scaled, before the gather: a fifth of the patches' size.
        inputs = self._array(role + ".inputs", self.n_inputs, batch)
        ops.copy_into(inputs, x.reshape(n, batch, self.n_inputs).mT)
        if self.spec.scale != 1.0:
            inputs *= self.spec.scale
        out = self._array(role + ".patches", self.patch_size * self.n_positions, batch)
        ops.gather_rows_into(inputs, self.index, out)
        return out.reshape(n, self.patch_size, self.n_positions * batch)

    def forward(self, weight: Array, bias: Array, x: Array, role: str) -> tuple[Array, Array]:
        """The features after the ReLU, transposed: ``(N, out * P, B)`` (``nn.Flatten``'s order down the
        rows), and the patches the backward pass needs.

        :param weight: The kernels ``(N, c * k * k, out_channels)``.
        :param bias: Their biases ``(N, 1, out_channels)``.
        :param x: Observations ``(N, B, c, h, w)``.
        :param role: Names the scratch arrays.
        """
        ops, batch = self.ops, x.shape[1]
        patches = self.patches(x, role)
        out = self._array(role + ".features", self.n_features, batch)
        conv = out.reshape(self.n, self.out_channels, self.n_positions * batch)
        ops.matmul_into(weight.mT, patches, conv)
        conv += bias.mT
        ops.relu_(out)
        return out, patches

    def backward(self, patches: Array, d_features: Array, grad_weight: Array, grad_bias: Array) -> None:
        """Write the kernels' and biases' gradients.

        :param patches: What :meth:`forward` returned with the features.
        :param d_features: dLoss/d(convolution output before the ReLU), transposed as the features,
            ``(N, out * P, B)``.
        :param grad_weight: ``(N, c * k * k, out_channels)``, written.
        :param grad_bias: ``(N, 1, out_channels)``, written.
        """
        ops = self.ops
        delta = d_features.reshape(self.n, self.out_channels, -1)  # (N, out, P B)
        ops.matmul_into(patches, delta.mT, grad_weight)
        ops.copy_into(grad_bias, ops.sum(delta, -1)[:, None, :])


def conv_features_one(
    index: np.ndarray, weight: np.ndarray, bias: np.ndarray, scale: float, observation: np.ndarray
) -> np.ndarray:
    """One agent's features ``(out_channels * P,)`` for one observation, in numpy (the acting path).

    :param index: :meth:`ConvSpec.patch_index`.
    :param weight: The kernels ``(c * k * k, out_channels)``.
    :param bias: ``(out_channels,)``.
    :param scale: :attr:`ConvSpec.scale`.
    :param observation: ``(c, h, w)``, any dtype.
    """
    patches = observation.reshape(-1)[index].astype(np.float32)
    if scale != 1.0:
        patches *= scale
    h = patches @ weight
    h += bias
    np.maximum(h, 0.0, out=h)
    return h.T.reshape(-1)
