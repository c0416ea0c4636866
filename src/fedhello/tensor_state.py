"""Named tensors: the only thing servers and clients exchange (LoRA factors and the head).

A `TensorState` maps parameter names of the shared PEFT model to tensors. A reduced-rank
client's tensor is the leading block of the full-size one (A[:r, :], B[:, :r]).
"""

from __future__ import annotations

import torch

TensorState = dict[str, torch.Tensor]


def state_delta(after: TensorState, before: TensorState) -> TensorState:
    return {name: after[name] - before[name] for name in after}


def state_bytes(state: TensorState) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in state.values())


def pad_factor(tensor: torch.Tensor, full_shape: torch.Size) -> torch.Tensor:
    """Zero-pad a truncated factor back to the full shape (leading block keeps the values)."""
    padded = torch.zeros(full_shape, dtype=tensor.dtype, device=tensor.device)
    padded[leading_block(tensor.shape)] = tensor
    return padded


def leading_block(shape: torch.Size) -> tuple[slice, ...]:
    """Index of the leading block of a given shape inside a larger tensor."""
    return tuple(slice(0, size) for size in shape)
