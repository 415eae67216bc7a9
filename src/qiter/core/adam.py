"""Adam as ``torch.optim.Adam`` (no weight decay, no amsgrad) on one flat parameter vector, in place.

The vector may hold many agents' parameters: the learning rate is then a vector too (each agent's rate
spread over its parameters). The step counter is a host integer, or a 0-d device tensor whose bias
corrections are looked up in tables made on the host, as a captured CUDA graph needs (it replays the
memory it saw, so no host number may change between replays).
"""

from __future__ import annotations

import math

import numpy as np
import torch as th

from qiter.core.arrays import Array, Ops

#: Parameters from which one agent's Adam on numpy runs torch's fused kernel (see :class:`Adam`).
FUSED_MIN_SIZE = 1 << 15
#: Adam steps between two flushes of subnormal moments to zero (numpy; see :meth:`Adam.step`).
FLUSH_INTERVAL = 4
#: The same for the second moments, which decay 100 times slower (by 0.999 a step: once subnormal, one
#: stays so for ~16k steps, so a flush every 64 steps keeps it for at most 64) and become subnormal far more
#: rarely; each flush is three passes over the vector, 27 us a step for the MinAtar network's 132k
#: parameters if both moments went every 4 steps.
SECOND_MOMENT_FLUSH_INTERVAL = 64


class Adam:
    """Adam's state and step.

    :param ops: The array backend.
    :param params: The flat parameters (updated in place).
    :param grad: Their gradient (read by :meth:`step`).
    :param lr: One learning rate (a host number) or one per element (an array like ``params``).
    :param eps: Adam's epsilon.
    """

    def __init__(self, ops: Ops, params: Array, grad: Array, lr: float | Array, eps: float) -> None:
        self.ops = ops
        self.params, self.grad, self.lr, self.eps = params, grad, lr, eps
        self.beta1, self.beta2 = 0.9, 0.999
        self.exp_avg = ops.zeros(tuple(params.shape))
        self.exp_avg_sq = ops.zeros(tuple(params.shape))
        self.tmp = ops.zeros(tuple(params.shape))
        self.step_count: int | Array = 0
        self._mask = ops.zeros(tuple(params.shape), "bool")
        self._step_sizes: Array | None = None
        self._denom_scales: Array | None = None
        # numpy with one learning rate (the single agent) and many parameters: torch's fused Adam kernel
        # (the one torch.optim.Adam(fused=True) runs) on views of the same memory, one pass over the vectors
        # where numpy makes 13: 111 us against 270 for the MinAtar network's 132k parameters on the 2-core
        # Xeon. (6 against 12 us for a 4.8k-parameter MLP, but the MLPs keep numpy's arithmetic, which
        # their documented runs were made with.)
        self._fused: tuple[list[th.Tensor], ...] | None = None
        # th._fused_adam_ is private: a torch build without it keeps numpy's passes (the same algorithm).
        fusable = ops.name == "numpy" and isinstance(lr, float) and hasattr(th, "_fused_adam_")
        if fusable and params.size >= FUSED_MIN_SIZE:
            self._fused = (
                [th.from_numpy(params)], [th.from_numpy(grad)], [th.from_numpy(self.exp_avg)],
                [th.from_numpy(self.exp_avg_sq)], [], [th.zeros((), dtype=th.float32)],
            )  # fmt: skip

    def bias_corrections(self, step: int) -> tuple[float, float]:
        """``1 / (1 - beta1^t)`` and ``1 / sqrt(1 - beta2^t)`` at step ``t`` (computed in float64)."""
        return 1.0 / (1.0 - self.beta1**step), 1.0 / math.sqrt(1.0 - self.beta2**step)

    def use_device_counter(self, max_steps: int) -> None:
        """Count steps in a 0-d tensor on the device, with the bias corrections in tables (the same float32
        values as the host path's).

        :param max_steps: The most steps the run will make.
        """
        ops = self.ops
        table = np.array([(1.0, 1.0)] + [self.bias_corrections(t) for t in range(1, max_steps + 1)])
        self._step_sizes = ops.asarray(table[:, 0], "float32")
        self._denom_scales = ops.asarray(table[:, 1], "float32")
        self.step_count = ops.asarray(int(self.step_count), "int64")

    def step(self) -> None:
        """One step with the gradient in :attr:`grad`."""
        self.step_count += 1
        if isinstance(self.step_count, int):
            if self._fused is not None and isinstance(self.lr, float):
                self._fused[-1][0].fill_(self.step_count)
                th._fused_adam_(
                    *self._fused, lr=self.lr, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0,
                    eps=self.eps, amsgrad=False, maximize=False,
                )  # fmt: skip
            else:
                self.ops.adam_(self, *self.bias_corrections(self.step_count))
            if self.step_count % FLUSH_INTERVAL == 0:
                # A parameter whose gradient stays zero (a dead ReLU unit's) sees its first moment decay by
                # 0.9 per step through the subnormal range for ~150 steps, and on the CPU each vector
                # operation over such numbers is several times slower: measured in CartPole training, Adam
                # took 180-320 us per step instead of 13. Flushed to zero here; the parameters cannot see it
                # (a step of lr * 1e-38 / eps is far below a float32 parameter's resolution).
                self.ops.flush_denormals_(self.exp_avg, self.tmp, self._mask)
            if self.step_count % SECOND_MOMENT_FLUSH_INTERVAL == 0:
                self.ops.flush_denormals_(self.exp_avg_sq, self.tmp, self._mask)
            return
        ops = self.ops
        assert self._step_sizes is not None and self._denom_scales is not None
        step_size = ops.select(self._step_sizes, 0, self.step_count)
        ops.adam_(self, step_size, ops.select(self._denom_scales, 0, self.step_count))
