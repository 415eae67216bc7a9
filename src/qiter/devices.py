"""Checking a torch device name before a run starts.

A wrong ``--device`` otherwise fails deep inside torch, after the run folder exists, with a long traceback
(``Torch not compiled with CUDA enabled``); checked here it is one line the user can act on.
"""

from __future__ import annotations

import torch

from qiter.errors import QiterError


def check_device(name: str) -> None:
    """Raise a :class:`QiterError` unless ``name`` is a torch device this machine can use.

    :param name: A torch device string such as ``"cpu"``, ``"cuda"`` or ``"cuda:1"``.
    :raises QiterError: The string is not a torch device, or it names CUDA (or a CUDA device that does not
        exist) on this machine.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise QiterError(
            f"device must be a torch device such as 'cpu', 'cuda' or 'cuda:0', got {name!r}"
        ) from None
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise QiterError(f"device {name!r} needs Apple's MPS, which is not available here: use --device cpu")
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise QiterError(
            f"device {name!r} needs CUDA, which is not available on this machine "
            "(no GPU, or a torch built without CUDA): use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise QiterError(
            f"device {name!r} does not exist: this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1})"
        )
