"""Heterogeneous aggregation (SPEC §3): each tensor is averaged over the clients that trained it.

new = old + sum_i w_i * delta_i over the clients i whose update contains the tensor,
with w uniform or proportional to the clients' training-sample counts among those
clients only. A tensor nobody trained keeps its value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedhello.config import Weighting
from fedhello.tensor_state import TensorState


@dataclass(frozen=True)
class ClientUpdate:
    client_id: int
    deltas: TensorState
    num_samples: int


def aggregate(
    global_state: TensorState,
    updates: Sequence[ClientUpdate],
    weighting: Weighting = "samples",
) -> tuple[TensorState, dict[str, int]]:
    """Return the new global state and, per tensor, how many clients trained it."""
    new_state = dict(global_state)
    trainer_counts = dict.fromkeys(global_state, 0)
    for name, old in global_state.items():
        contributors = [update for update in updates if name in update.deltas]
        if not contributors:
            continue
        raw = [float(update.num_samples) if weighting == "samples" else 1.0 for update in contributors]
        total = sum(raw)
        mean_delta = sum(
            (weight / total) * update.deltas[name].to(old.dtype)
            for weight, update in zip(raw, contributors, strict=True)
        )
        new_state[name] = old + mean_delta
        trainer_counts[name] = len(contributors)
    unknown = {name for update in updates for name in update.deltas} - set(global_state)
    if unknown:
        raise KeyError(f"updates contain tensors the server does not hold: {sorted(unknown)[:3]}")
    return new_state, trainer_counts
