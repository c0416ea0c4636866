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


MERGED_DELTA_PREFIX = "merged_delta:"


def merged_delta_key(a_name: str) -> str:
    """The key of a full-size ΔW for the LoRA module whose A factor is `a_name` (see `split_merged_deltas`)."""
    return MERGED_DELTA_PREFIX + a_name


def split_merged_deltas(state: TensorState) -> tuple[TensorState, TensorState]:
    """(ordinary tensors, {A factor name: full-size ΔW}) of an evaluation state."""
    plain = {name: tensor for name, tensor in state.items() if not name.startswith(MERGED_DELTA_PREFIX)}
    merged = {
        name[len(MERGED_DELTA_PREFIX) :]: tensor
        for name, tensor in state.items()
        if name.startswith(MERGED_DELTA_PREFIX)
    }
    return plain, merged
