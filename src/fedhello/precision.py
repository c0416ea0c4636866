"""Autocast of forward passes: one rule for training, evaluation and every device."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def autocast_for(device: torch.device, precision: Precision = "auto"):
    """The autocast context of a forward pass.

    auto: bf16 on CUDA, full precision elsewhere; fp32: full precision everywhere;
    bf16: bf16 autocast on any device (CPU included; see docs/benchmarks.md for its
    measured speed and accuracy on CPUs).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
