"""Clipping a client's whole update: every tensor it sends, together, to one L2 norm.

The bound is on the concatenation of all of a client's tensors, whichever layers it
trained, so one client moves the per-tensor sums by at most `clip_norm` in total
however its update is spread over tensors: the sensitivity the noise is calibrated to.
"""

from __future__ import annotations

import torch

from fedhello.tensor_state import TensorState


def update_norm(deltas: TensorState) -> float:
    """L2 norm of all tensors of an update taken together (in float64)."""
    if not deltas:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d.double()) for d in deltas.values()])))


def clip_update(deltas: TensorState, clip_norm: float) -> tuple[TensorState, bool]:
    """The update scaled to L2 norm at most `clip_norm`, and whether it was already within it."""
    norm = update_norm(deltas)
    if norm <= clip_norm:
        return dict(deltas), True
    # A hair under clip_norm, so that rounding in the scaled tensor's dtype never overshoots the bound.
    scale = clip_norm / norm * (1 - 1e-6)
    return {name: (delta.double() * scale).to(delta.dtype) for name, delta in deltas.items()}, False
