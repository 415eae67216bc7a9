"""The two PyTorch optimisation pieces every autograd agent uses: Adam and Polyak target averaging."""

from __future__ import annotations

from collections.abc import Iterable

import torch as th


def make_adam(
    params: Iterable[th.nn.Parameter], lr: float, eps: float = 1e-8, device: th.device | None = None
) -> th.optim.Adam:
    """Adam, fused where this torch build supports it (one kernel for all parameters: far less overhead;
    Adam was 13% of a TD3 step with 400x300 networks on the CPU).

    :param params: The parameters to optimise.
    :param lr: Learning rate.
    :param eps: Adam's epsilon.
    :param device: Where they live (only for the fallback: ``foreach`` on CUDA).
    """
    params = list(params)
    try:
        return th.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - older builds or devices without a fused kernel
        return th.optim.Adam(params, lr=lr, eps=eps, foreach=device is not None and device.type == "cuda")


def polyak_update(target: th.nn.Module, source: th.nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, in one fused call over all parameters."""
    with th.no_grad():
        th._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
