"""One array vocabulary for numpy and torch, so the DQN core, the array environments and the buffers are
written once.

Why: the DQN core (:mod:`qiter.core`) and the population code must run on numpy (the CPU fast path), on
torch's CPU backend and on CUDA. Python
operators (``@``, ``*``, ``+=``, ``.mT``, indexing) already mean the same in both libraries; the few calls
that differ in name or signature (reductions, gathers, dtypes) go through an :class:`Ops`
object. Every method is one library call, so the indirection costs a Python call, not a copy. Where
torch's CPU kernel is measured faster on numpy's arrays (large matrix products, the im2col gather),
:class:`NumpyOps` calls it on views of the same memory (``torch.from_numpy``: no copy either).

Nothing here synchronizes the host with a GPU: Python scalars enter kernels as arguments, so a CUDA step
can be captured in a graph. Random numbers are not drawn here but computed by
:mod:`qiter.population.streams`, one stream per agent.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.special
import torch as th

Array = Any  # a numpy array or a torch tensor, depending on the Ops in use


class AdamArrays(Protocol):
    """What one Adam step reads and writes (:class:`qiter.core.adam.Adam` holds them): the parameters,
    their gradient, the learning rate(s), the two moments, a scratch array, and the constants."""

    params: Array
    grad: Array
    lr: float | Array
    eps: float
    beta1: float
    beta2: float
    exp_avg: Array
    exp_avg_sq: Array
    tmp: Array


#: Per float dtype, the integer type of its size and the mask of its exponent bits (zero exponent: zero or
#: a subnormal number).
_EXPONENT_BITS = {
    np.dtype(np.float32): (np.int32, 0x7F800000),
    np.dtype(np.float64): (np.int64, 0x7FF0000000000000),
}
#: Multiply-adds of one matrix product from which :class:`NumpyOps` hands it to torch's BLAS (MKL), on
#: views of the same memory: measured on the 2-core Xeon, 1 thread, for the MinAtar network's products,
#: (32, 1024) @ (1024, 128) 60 us against numpy's (OpenBLAS) 90, (32, 128) @ (128, 1024) 72 against 124,
#: (2048, 36) @ (36, 16) 24 against 31; smaller products (the MLPs of classic control) stay in numpy, whose
#: call costs less.
_TORCH_MATMUL_MIN = 1 << 20
_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "bool": np.bool_}
_TH_DTYPES = {"float32": th.float32, "float64": th.float64, "int64": th.int64, "bool": th.bool}


class Ops:
    """The array calls that differ between numpy and torch (see :class:`NumpyOps`, :class:`TorchOps`)."""

    name: str = ""
    device: str = "cpu"

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        raise NotImplementedError

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float32") -> Array:
        raise NotImplementedError

    def arange(self, n: int) -> Array:
        raise NotImplementedError

    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        """A copy of ``x`` (a list or a numpy array) on this backend's device."""
        raise NotImplementedError

    def to_numpy(self, x: Array) -> np.ndarray:
        raise NotImplementedError

    def astype(self, x: Array, dtype: str) -> Array:
        raise NotImplementedError

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def clip(self, x: Array, low: float, high: float) -> Array:
        raise NotImplementedError

    def sin(self, x: Array) -> Array:
        raise NotImplementedError

    def cos(self, x: Array) -> Array:
        raise NotImplementedError

    def sqrt(self, x: Array) -> Array:
        raise NotImplementedError

    def abs(self, x: Array) -> Array:
        raise NotImplementedError

    def erf(self, x: Array) -> Array:
        raise NotImplementedError

    def expm1(self, x: Array) -> Array:
        raise NotImplementedError

    def stack(self, xs: list[Array], axis: int) -> Array:
        raise NotImplementedError

    def sum(self, x: Array, axis: int | tuple[int, ...], keepdims: bool = False) -> Array:
        raise NotImplementedError

    def max(self, x: Array, axis: int) -> Array:
        raise NotImplementedError

    def argmax(self, x: Array, axis: int) -> Array:
        raise NotImplementedError

    def gather_last(self, x: Array, index: Array) -> Array:
        """``x[..., index]`` row by row: ``x`` (..., k), ``index`` (...) of integers -> (...)."""
        raise NotImplementedError

    def scatter_last(self, index: Array, values: Array, k: int) -> Array:
        """A new array ``index.shape + (k,)`` of zeros with ``values[...]`` at position ``index[...]`` of the
        last axis (a one-hot row scaled by the value)."""
        raise NotImplementedError

    def take_rows(self, x: Array, index: Array) -> Array:
        """Rows ``index`` (any shape) of the 2-d ``x``: shape ``index.shape + (x.shape[1],)``."""
        raise NotImplementedError

    def gather_rows_into(self, x: Array, index: Array, out: Array) -> None:
        """``out[:, k] = x[:, index[k]]`` for 3-d ``x`` and ``out`` of one dtype and a 1-d integer ``index``
        (the convolution's im2col)."""
        raise NotImplementedError

    def select(self, x: Array, axis: int, index: int | Array) -> Array:
        """``x`` at position ``index`` of ``axis`` (that axis removed); ``index`` may be a 0-d device tensor."""
        raise NotImplementedError

    def put_rows(self, table: Array, index: Array, rows: Array) -> None:
        """``table[index[k]] = rows[k]`` for the 1-d integer ``index``."""
        raise NotImplementedError

    def concat(self, xs: list[Array], axis: int) -> Array:
        raise NotImplementedError

    def matmul_into(self, a: Array, b: Array, out: Array) -> None:
        """``out[...] = a @ b`` without a temporary."""
        raise NotImplementedError

    def matmul_bt_into(self, a: Array, b: Array, out: Array) -> None:
        """``out[...] = a @ b^T`` (``b^T`` swaps the last two axes)."""
        self.matmul_into(a, b.mT, out)

    def copy_into(self, dst: Array, src: Array) -> None:
        raise NotImplementedError

    def relu_(self, x: Array) -> None:
        raise NotImplementedError

    def adam_(self, state: AdamArrays, step_size: float | Array, denom_scale: float | Array) -> None:
        """One Adam step in place: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
        ``p <- p - lr * step_size * m / (sqrt(v) * denom_scale + eps)``, with no allocation (large
        temporaries cost page faults on every call)."""
        raise NotImplementedError

    def tanh_(self, x: Array) -> None:
        raise NotImplementedError

    def flush_denormals_(self, x: Array, scratch: Array, mask: Array) -> None:
        """Set the subnormal numbers of ``x`` to zero, in place (``scratch``: a float array like ``x``,
        ``mask``: a bool one). Only where subnormal arithmetic is slow (numpy on the CPU)."""


class NumpyOps(Ops):
    """numpy arrays on the CPU."""

    name = "numpy"

    def __init__(self) -> None:
        # Arrays kept from one call to the next, by role and shape (a dict per role: keys built per call
        # cost as much as a small numpy call).
        self._aranges: dict[int, np.ndarray] = {}
        self._transposes: dict[tuple[int, ...], np.ndarray] = {}
        self._zeros: dict[tuple[int, ...], np.ndarray] = {}

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return np.zeros(shape, dtype=_NP_DTYPES[dtype])

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float32") -> Array:
        return np.full(shape, value, dtype=_NP_DTYPES[dtype])

    def arange(self, n: int) -> Array:
        return np.arange(n)

    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        return np.array(x, dtype=_NP_DTYPES[dtype])

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def astype(self, x: Array, dtype: str) -> Array:
        return x.astype(_NP_DTYPES[dtype])

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        return np.where(cond, a, b)

    def clip(self, x: Array, low: float, high: float) -> Array:
        return np.clip(x, low, high)

    def sin(self, x: Array) -> Array:
        return np.sin(x)

    def cos(self, x: Array) -> Array:
        return np.cos(x)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def abs(self, x: Array) -> Array:
        return np.abs(x)

    def erf(self, x: Array) -> Array:
        return scipy.special.erf(x)

    def expm1(self, x: Array) -> Array:
        return np.expm1(x)

    def stack(self, xs: list[Array], axis: int) -> Array:
        return np.stack(xs, axis=axis)

    def sum(self, x: Array, axis: int | tuple[int, ...], keepdims: bool = False) -> Array:
        return np.add.reduce(x, axis, keepdims=keepdims)  # type: ignore[call-overload]  # np.sum's wrapper costs as much again

    def max(self, x: Array, axis: int) -> Array:
        if axis in (-1, x.ndim - 1) and 1 < x.shape[-1] <= 16:
            # numpy reduces a short last axis slowly (77 us for (32, 64, 2) here): the maximum of its
            # columns, two at a time, takes 3 us and gives the same values.
            out = np.maximum(x[..., 0], x[..., 1])
            for j in range(2, x.shape[-1]):
                np.maximum(out, x[..., j], out=out)
            return out
        return np.maximum.reduce(x, axis)

    def argmax(self, x: Array, axis: int) -> Array:
        return x.argmax(axis)

    def _rows(self, n: int) -> np.ndarray:
        """``arange(n)``, kept (the minibatch size rarely changes)."""
        rows = self._aranges.get(n)
        if rows is None:
            rows = self._aranges[n] = np.arange(n)
        return rows

    def gather_last(self, x: Array, index: Array) -> Array:
        # Fancy indexing of the rows: take_along_axis costs 2.7x as much on a (1, 64, 2) array here.
        flat_index = index.reshape(-1)
        rows = self._rows(len(flat_index))
        return x.reshape(-1, x.shape[-1])[rows, flat_index].reshape(index.shape)

    def scatter_last(self, index: Array, values: Array, k: int) -> Array:
        out = np.zeros((*index.shape, k), dtype=values.dtype)
        flat_index = index.reshape(-1)
        out.reshape(-1, k)[self._rows(len(flat_index)), flat_index] = values.reshape(-1)
        return out

    def take_rows(self, x: Array, index: Array) -> Array:
        return x[index]

    def gather_rows_into(self, x: Array, index: Array, out: Array) -> None:
        # torch's index_select on views of the same memory: 11 us against np.take's 26 for the MinAtar
        # network's (1, 400, 32) -> (1, 2304, 32) here.
        th.index_select(th.from_numpy(x), 1, th.from_numpy(index), out=th.from_numpy(out))

    def select(self, x: Array, axis: int, index: int | Array) -> Array:
        return np.take(x, index, axis)

    def put_rows(self, table: Array, index: Array, rows: Array) -> None:
        table[index] = rows

    def concat(self, xs: list[Array], axis: int) -> Array:
        return np.concatenate(xs, axis=axis)

    def matmul_into(self, a: Array, b: Array, out: Array) -> None:
        if a.shape[-2] * a.shape[-1] * b.shape[-1] >= _TORCH_MATMUL_MIN:
            th.matmul(th.from_numpy(a), th.from_numpy(b), out=th.from_numpy(out))
        else:
            np.matmul(a, b, out=out)

    def matmul_bt_into(self, a: Array, b: Array, out: Array) -> None:
        if a.shape[-2] * a.shape[-1] * b.shape[-2] >= _TORCH_MATMUL_MIN:  # MKL takes b^T as it is
            th.matmul(th.from_numpy(a), th.from_numpy(b).mT, out=th.from_numpy(out))
            return
        # OpenBLAS is slow on a stack of products whose second factor is transposed (255 vs 156 us for 32
        # of (64, 64) @ (64, 64)^T here): a contiguous copy of b^T (44 us) and a plain product are faster.
        b_t = self._transposes.get(b.shape)
        if b_t is None:
            b_t = self._transposes[b.shape] = np.empty(b.mT.shape, dtype=b.dtype)
        np.copyto(b_t, b.mT)
        np.matmul(a, b_t, out=out)

    def copy_into(self, dst: Array, src: Array) -> None:
        np.copyto(dst, src)

    def relu_(self, x: Array) -> None:
        # Against an array of zeros, not the scalar 0: numpy's SIMD loop takes two arrays (3x faster here).
        zeros = self._zeros.get(x.shape)
        if zeros is None:
            zeros = self._zeros[x.shape] = np.zeros(x.shape, dtype=x.dtype)
        np.maximum(x, zeros, out=x)

    def tanh_(self, x: Array) -> None:
        np.tanh(x, out=x)

    def flush_denormals_(self, x: Array, scratch: Array, mask: Array) -> None:
        # On the bits, in integer arithmetic: float arithmetic on subnormals is what is slow, and
        # np.copyto(where=) took 260 us on 132k numbers here (the three calls below: 57 us).
        int_type, exponent = _EXPONENT_BITS[x.dtype]
        bits, exponents = x.view(int_type), scratch.view(int_type)
        np.bitwise_and(bits, exponent, out=exponents)
        np.not_equal(exponents, 0, out=mask)
        np.multiply(bits, mask, out=bits)

    def adam_(self, state: AdamArrays, step_size: float | Array, denom_scale: float | Array) -> None:
        m, v, g, tmp = state.exp_avg, state.exp_avg_sq, state.grad, state.tmp
        m *= state.beta1
        np.multiply(g, 1.0 - state.beta1, out=tmp)
        m += tmp
        v *= state.beta2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - state.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= denom_scale
        tmp += state.eps
        np.divide(m, tmp, out=tmp)
        if isinstance(state.lr, float):  # one learning rate for all (one agent): one product fewer
            tmp *= state.lr * step_size
        else:
            tmp *= state.lr
            tmp *= step_size
        state.params -= tmp


class TorchOps(Ops):
    """torch tensors on ``device``.

    :param device: A torch device string (``"cpu"``, ``"cuda"``...).
    """

    name = "torch"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return th.zeros(shape, dtype=_TH_DTYPES[dtype], device=self.device)

    def full(self, shape: tuple[int, ...], value: float, dtype: str = "float32") -> Array:
        return th.full(shape, value, dtype=_TH_DTYPES[dtype], device=self.device)

    def arange(self, n: int) -> Array:
        return th.arange(n, device=self.device)

    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        return th.tensor(np.asarray(x), dtype=_TH_DTYPES[dtype], device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return x.detach().cpu().numpy()

    def astype(self, x: Array, dtype: str) -> Array:
        return x.to(_TH_DTYPES[dtype])

    def where(self, cond: Array, a: Array, b: Array) -> Array:
        return th.where(cond, a, b)

    def clip(self, x: Array, low: float, high: float) -> Array:
        return th.clamp(x, low, high)

    def sin(self, x: Array) -> Array:
        return th.sin(x)

    def cos(self, x: Array) -> Array:
        return th.cos(x)

    def sqrt(self, x: Array) -> Array:
        return th.sqrt(x)

    def abs(self, x: Array) -> Array:
        return th.abs(x)

    def erf(self, x: Array) -> Array:
        return th.special.erf(x)

    def expm1(self, x: Array) -> Array:
        return th.expm1(x)

    def stack(self, xs: list[Array], axis: int) -> Array:
        return th.stack(xs, dim=axis)

    def sum(self, x: Array, axis: int | tuple[int, ...], keepdims: bool = False) -> Array:
        return th.sum(x, dim=axis, keepdim=keepdims)

    def max(self, x: Array, axis: int) -> Array:
        return th.amax(x, dim=axis)

    def argmax(self, x: Array, axis: int) -> Array:
        return th.argmax(x, dim=axis)

    def gather_last(self, x: Array, index: Array) -> Array:
        return th.gather(x, -1, index.unsqueeze(-1)).squeeze(-1)

    def scatter_last(self, index: Array, values: Array, k: int) -> Array:
        out = th.zeros((*index.shape, k), dtype=values.dtype, device=values.device)
        return out.scatter_(-1, index.unsqueeze(-1), values.unsqueeze(-1))

    def take_rows(self, x: Array, index: Array) -> Array:
        return x.index_select(0, index.reshape(-1)).reshape(*index.shape, x.shape[1])

    def gather_rows_into(self, x: Array, index: Array, out: Array) -> None:
        th.index_select(x, 1, index, out=out)

    def select(self, x: Array, axis: int, index: int | Array) -> Array:
        if isinstance(index, int):
            return x.select(axis, index)
        # index_select, not x[..., index]: indexing with a 0-d tensor reads it back to the host.
        return x.index_select(axis, index.reshape(1)).squeeze(axis)

    def put_rows(self, table: Array, index: Array, rows: Array) -> None:
        table.index_copy_(0, index, rows)

    def concat(self, xs: list[Array], axis: int) -> Array:
        return th.cat(xs, dim=axis)

    def matmul_into(self, a: Array, b: Array, out: Array) -> None:
        th.matmul(a, b, out=out)

    def copy_into(self, dst: Array, src: Array) -> None:
        dst.copy_(src)

    def relu_(self, x: Array) -> None:
        x.clamp_(min=0)

    def tanh_(self, x: Array) -> None:
        x.tanh_()

    def adam_(self, state: AdamArrays, step_size: float | Array, denom_scale: float | Array) -> None:
        m, v, g, tmp = state.exp_avg, state.exp_avg_sq, state.grad, state.tmp
        m.lerp_(g, 1.0 - state.beta1)
        v.mul_(state.beta2).addcmul_(g, g, value=1.0 - state.beta2)
        th.sqrt(v, out=tmp)
        tmp.mul_(denom_scale).add_(state.eps)
        th.div(m, tmp, out=tmp)
        tmp.mul_(state.lr)
        # A product, then a subtraction (not add_'s alpha, which must be a host number): step_size may be
        # a 0-d device tensor in a captured CUDA graph.
        tmp.mul_(step_size)
        state.params.sub_(tmp)


def make_ops(backend: str, device: str) -> Ops:
    """The :class:`Ops` for ``backend`` (``"numpy"`` or ``"torch"``) on ``device``.

    :param backend: ``"numpy"`` (CPU only) or ``"torch"``.
    :param device: A torch device string.
    """
    if backend == "numpy":
        return NumpyOps()
    return TorchOps(device)
