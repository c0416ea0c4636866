"""`hetlora`: heterogeneous LoRA ranks (Cho et al., 2024).

What it computes, per LoRA pair (A: r x in, B: out x r at the full rank r):

1. Every client trains all layers at its group's rank r_c on the leading r_c components
   (A[:r_c, :], B[:, :r_c]) it received.
2. Default (`normalize: all`, the published rule): each client's trained factors are
   zero-padded to rank r and the new global factors are the weighted average over ALL
   participants, A = Σ_k w_k pad(A_k), B = Σ_k w_k pad(B_k), with w_k = ||B_k A_k||_F /
   Σ_j ||B_j A_j||_F (HetLoRA's sparsity-weighted aggregation; `weighting: samples` uses
   w_k ∝ training samples). A component that no participant covers therefore shrinks
   towards zero (becomes exactly zero when nobody covers it).
3. `normalize: contributors` (a fedhello variant, not the paper): every rank component j
   is averaged only over the clients with r_k > j (weights renormalised among them), and a
   component nobody covers keeps its old value.
4. Each client gets the truncation of the global factors to its rank.

`tail_truncation` (off by default) is a server-side heuristic, NOT HetLoRA's rank
self-pruning: there is no regulariser in local training; the server lowers a client's
rank by one, for later rounds, when the last rank component's norm ||B[:, -1]||·||A[-1, :]||
(mean over modules) is below `tail_truncation` times the mean component norm. The
published self-pruning (a regulariser on the tail components during local training,
pruning when the tail shrinks) is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from fedhello.aggregation import ClientUpdate
from fedhello.allocation.base import AllocationContext, ClientSlot, StrategyState
from fedhello.allocation.ranks import RankHeterogeneousStrategy, RankParams, local_factors
from fedhello.allocation.registry import register_strategy
from fedhello.config import Weighting
from fedhello.tensor_state import TensorState, pad_factor


class HetLoRAParams(RankParams):
    weighting: Literal["norm", "samples"] = Field(
        "norm", description="norm: weight by ||B·A||_F (HetLoRA); samples: by data size"
    )
    tail_truncation: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="server-side rank truncation (not HetLoRA's regularised self-pruning): drop a client's last rank "
        "component when its norm is below this fraction of the mean component norm (null: off)",
    )
    normalize: Literal["all", "contributors"] = Field(
        "all",
        description="all: the published zero-padded average over every participant (components above the round's "
        "largest rank become zero); contributors: each rank component averaged over the clients whose rank covers "
        "it, uncovered components kept (a fedhello variant)",
    )


def component_norms(factors: TensorState, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """Mean over modules of ||B[:, j]|| * ||A[j, :]|| for every rank component j."""
    norms = [torch.linalg.norm(factors[b], dim=0) * torch.linalg.norm(factors[a], dim=1) for a, b in pairs]
    return torch.stack(norms).mean(0)


@register_strategy
class HetLoRAStrategy(RankHeterogeneousStrategy):
    name = "hetlora"
    summary = "all layers at per-group LoRA ranks; zero-padded norm-weighted average over all participants, truncate"
    Params = HetLoRAParams
    params: HetLoRAParams

    def __init__(self, params: HetLoRAParams) -> None:
        super().__init__(params)
        self._pruned_ranks: dict[int, int] = {}

    def client_rank(self, client: ClientSlot, context: AllocationContext) -> int:
        return min(super().client_rank(client, context), self._pruned_ranks.get(client.client_id, self.full_rank))

    def state_dict(self) -> StrategyState:
        return StrategyState(
            values={"pruned_ranks": {str(client): rank for client, rank in self._pruned_ranks.items()}}
        )

    def load_state_dict(self, state: StrategyState) -> None:
        self._pruned_ranks = {int(client): int(rank) for client, rank in state.values.get("pruned_ranks", {}).items()}

    def aggregate(
        self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: Weighting
    ) -> TensorState:
        new_state = self.aggregate_head(global_state, updates, weighting)
        if not updates:
            return new_state
        pairs = self.layout.layer_map.pairs
        factors = {u.client_id: local_factors(self._downlinked[u.client_id], u) for u in updates}
        ranks = [int(factors[u.client_id][pairs[0][0]].shape[0]) for u in updates]
        for a_name, b_name in pairs:
            if self.params.weighting == "norm":
                raw = [
                    float(torch.linalg.norm(factors[u.client_id][b_name] @ factors[u.client_id][a_name]))
                    for u in updates
                ]
            else:
                raw = [float(u.num_samples) for u in updates]
            for name, component_axis in ((a_name, 0), (b_name, 1)):
                old = global_state[name]
                padded = torch.stack([pad_factor(factors[u.client_id][name], old.shape) for u in updates])
                new_state[name] = self._average_components(old, padded, raw, ranks, component_axis)
        if self.params.tail_truncation is not None:
            for u in updates:
                norms = component_norms(factors[u.client_id], pairs)
                if len(norms) > 1 and norms[-1] < self.params.tail_truncation * norms.mean():
                    self._pruned_ranks[u.client_id] = len(norms) - 1
        return new_state

    def _average_components(
        self, old: torch.Tensor, padded: torch.Tensor, raw: list[float], ranks: list[int], component_axis: int
    ) -> torch.Tensor:
        """Weighted average of zero-padded factors, component by component (rows of A, columns of B)."""
        full_rank = old.shape[component_axis]
        covers = torch.tensor([[j < rank for j in range(full_rank)] for rank in ranks], dtype=old.dtype)
        if self.params.normalize == "all":
            covers = torch.ones_like(covers)
        weights = torch.tensor(raw, dtype=old.dtype)[:, None] * covers  # [clients, components]
        totals = weights.sum(0)
        # All-zero weights (e.g. zero norms) fall back to a plain mean over the covering clients.
        weights = torch.where(totals > 0, weights / totals.clamp(min=1e-30), covers / covers.sum(0).clamp(min=1))
        shape = [len(ranks), 1, 1]
        shape[1 + component_axis] = full_rank
        averaged = (weights.reshape(shape).to(old.device) * padded).sum(0)
        untouched = (covers.sum(0) == 0).reshape(shape[1:]).to(old.device)
        return torch.where(untouched, old, averaged)
