"""`hetlora`: heterogeneous LoRA ranks (Cho et al., 2024).

Clients train all layers at their group's rank. The server zero-pads every client's
factors to the full rank and averages them with weights proportional to the norm of
each client's product B·A (HetLoRA's sparsity-weighted aggregation), then gives each
client the truncation to its rank. With `prune_ratio`, a client drops its last rank
component when that component's norm falls below `prune_ratio` times the mean
component norm (rank self-pruning); its rank stays reduced in later rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from fedhello.aggregation import ClientUpdate, TensorState
from fedhello.allocation.base import AllocationContext, ClientSlot
from fedhello.allocation.ranks import RankHeterogeneousStrategy, RankParams, local_factors, pad_factor
from fedhello.allocation.registry import register_strategy


class HetLoRAParams(RankParams):
    weighting: Literal["norm", "samples"] = Field("norm", description="norm: weight by ||B·A||_F (HetLoRA); samples: by data size")
    prune_ratio: float | None = Field(None, gt=0, lt=1, description="rank self-pruning threshold (null: off)")


def component_norms(factors: TensorState, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Mean over modules of ||B[:, j]|| * ||A[j, :]|| for every rank component j."""
    norms = [torch.linalg.norm(factors[b], dim=0) * torch.linalg.norm(factors[a], dim=1) for a, b in pairs]
    return torch.stack(norms).mean(0)


@register_strategy
class HetLoRAStrategy(RankHeterogeneousStrategy):
    name = "hetlora"
    summary = "all layers at per-group LoRA ranks; zero-pad, norm-weighted average, truncate"
    Params = HetLoRAParams

    def __init__(self, params: HetLoRAParams) -> None:
        super().__init__(params)
        self._pruned_ranks: dict[int, int] = {}

    def client_rank(self, client: ClientSlot, context: AllocationContext) -> int:
        return min(super().client_rank(client, context), self._pruned_ranks.get(client.client_id, self.full_rank))

    def aggregate(self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: str) -> TensorState:
        new_state = self.aggregate_head(global_state, updates, weighting)
        if not updates:
            return new_state
        pairs = self.layout.layer_map.pairs
        factors = {u.client_id: local_factors(self._downlinked[u.client_id], u) for u in updates}
        for a_name, b_name in pairs:
            if self.params.weighting == "norm":
                raw = [float(torch.linalg.norm(factors[u.client_id][b_name] @ factors[u.client_id][a_name])) for u in updates]
            else:
                raw = [float(u.num_samples) for u in updates]
            total = sum(raw)
            weights = [w / total for w in raw] if total > 0 else [1.0 / len(raw)] * len(raw)
            for name in (a_name, b_name):
                full_shape = global_state[name].shape
                new_state[name] = sum(
                    weight * pad_factor(factors[u.client_id][name], full_shape) for weight, u in zip(weights, updates)
                )
        if self.params.prune_ratio is not None:
            for u in updates:
                norms = component_norms(factors[u.client_id], pairs)
                if len(norms) > 1 and norms[-1] < self.params.prune_ratio * norms.mean():
                    self._pruned_ranks[u.client_id] = len(norms) - 1
        return new_state
