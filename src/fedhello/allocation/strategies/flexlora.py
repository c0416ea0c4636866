"""`flexlora`: heterogeneous ranks through full-size products (Bai et al., 2024).

What it computes, per adapted module:

1. The server keeps the full-size ΔW. Each round it replaces it by the average of the
   participants' products, ΔW = Σ_k w_k B_k A_k (w_k ∝ training samples, or uniform with
   `training.weighting: uniform`); ΔW can have rank up to Σ_k r_k, above the LoRA rank r.
2. Every client receives the truncated SVD of ΔW at its rank r_k: B = U√S, A = √S Vᵀ.
   Components with a zero singular value (at the start ΔW = 0) take the initial A rows
   and zero B columns, so they can still learn.
3. The evaluated global model is the full averaged ΔW (as published), not a truncation:
   `evaluation_state` adds every module's ΔW under `merged_delta_key`, and evaluation
   computes (W0 + scaling·ΔW) x with the LoRA branch off (`FederatedModel.merged_deltas`).
   The global LoRA factors kept in the server state (checkpoints, the saved adapter,
   Fisher scoring) are the rank-r SVD of ΔW, exact whenever ΔW has rank at most r.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from fedhello.aggregation import ClientUpdate
from fedhello.allocation.base import ModelLayout, StrategyState
from fedhello.allocation.ranks import RankHeterogeneousStrategy, local_factors
from fedhello.allocation.registry import register_strategy
from fedhello.config import Weighting
from fedhello.tensor_state import TensorState, merged_delta_key


def svd_factors(product: torch.Tensor, rank: int, initial_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of rank `rank` with B·A the best rank-`rank` approximation of `product`."""
    u, s, vh = torch.linalg.svd(product.float(), full_matrices=False)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]
    b = u[:, :rank] * root[None, :]
    empty = s[:rank] <= s.max() * 1e-7 if s.max() > 0 else torch.ones(rank, dtype=torch.bool)
    a[empty] = initial_a[:rank][empty].float()
    b[:, empty] = 0
    return a.to(product.dtype), b.to(product.dtype)


@register_strategy
class FlexLoRAStrategy(RankHeterogeneousStrategy):
    name = "flexlora"
    summary = "all layers at per-group LoRA ranks; average full B·A products, truncated SVD per client"

    def bind(self, layout: ModelLayout) -> None:
        super().bind(layout)
        state = layout.initial_state
        self._products = {a: state[b] @ state[a] for a, b in layout.layer_map.pairs}

    def state_dict(self) -> StrategyState:
        return StrategyState(tensors={f"product.{name}": product for name, product in self._products.items()})

    def load_state_dict(self, state: StrategyState) -> None:
        self._products = {name: state.tensors[f"product.{name}"] for name in self._products}

    def client_start(self, global_state: TensorState) -> TensorState:
        start = dict(global_state)
        initial = self.layout.initial_state
        for a_name, b_name in self.layout.layer_map.pairs:
            start[a_name], start[b_name] = svd_factors(self._products[a_name], self.full_rank, initial[a_name])
        return start

    def evaluation_state(self, global_state: TensorState) -> TensorState:
        """The global LoRA state plus every module's full averaged ΔW (evaluated in place of B·A)."""
        return {**global_state, **{merged_delta_key(a): product for a, product in self._products.items()}}

    def aggregate(
        self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: Weighting
    ) -> TensorState:
        new_state = self.aggregate_head(global_state, updates, weighting)
        if not updates:
            return new_state
        total = float(sum(u.num_samples for u in updates)) if weighting == "samples" else float(len(updates))
        factors = {u.client_id: local_factors(self._downlinked[u.client_id], u) for u in updates}
        for a_name, b_name in self.layout.layer_map.pairs:
            self._products[a_name] = cast(  # updates is not empty, so the sum is a tensor
                torch.Tensor,
                sum(
                    ((u.num_samples if weighting == "samples" else 1.0) / total)
                    * (factors[u.client_id][b_name] @ factors[u.client_id][a_name])
                    for u in updates
                ),
            )
        return self.client_start(new_state)
