"""Where a trial runs and in which precision, from its `train.device` and `train.precision`."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a precision setting; None: plain fp32 (`auto`: bf16 on a GPU)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
