"""The ``device`` setting of everything that trains (children, shared weights, retraining).

Accepted values: ``auto`` (the first CUDA GPU if torch sees one, else the CPU), ``cpu``, ``cuda`` and
``cuda:N``. Asking for CUDA where torch has none is refused in one line, before anything trains.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """The torch device that the setting ``name`` means on this machine; a ``ValueError`` naming the value
    and what is accepted here when it cannot be used."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise ValueError(f"device={name!r} is not a device; accepted are {list(DEVICES)} (N a GPU index)")
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name!r}, but this torch ({torch.__version__}) sees no CUDA GPU; "
                "accepted here are 'auto' and 'cpu'"
            )
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise ValueError(f"device={name!r}, but this machine has {count} CUDA GPU(s): cuda:0..cuda:{count - 1}")
        return torch.device(text)
    raise ValueError(f"device={name!r} is not a device; accepted are {list(DEVICES)} (N a GPU index)")


def worker_device(device: torch.device, worker: int, count: int | None = None) -> torch.device:
    """The device that worker number ``worker`` of a pool trains on. ``device`` CUDA without an index (the
    settings ``cuda``, or ``auto`` on a GPU machine) spreads the workers over the GPUs: GPU ``worker mod
    count`` (``count``: the GPUs torch sees). An explicit ``cuda:N`` pins every worker to GPU N; the CPU
    stays the CPU."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count() if count is None else count
    return torch.device("cuda", worker % max(1, count))


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The dtype of mixed precision (``amp``) on ``device``: bfloat16 on a GPU that has it, else float16.
    None, full precision, without ``amp`` or off CUDA: amp is ignored on the CPU, where autocasting to
    bfloat16 is slower than float32 on most processors, so one config serves GPU and CPU machines."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """Autocast to ``dtype`` on ``device``; nothing at all for ``dtype`` None (the full-precision path is
    exactly the code that ran before mixed precision existed)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
