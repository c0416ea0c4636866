"""`fisher-per-byte`: the layers with the most Fisher importance per byte of training memory.

What it computes, per client and round: starting from no layers, it repeatedly adds the
layer l that maximises

    score[l] / (peak_bytes(chosen + {l}) - peak_bytes(chosen))

among the layers whose addition keeps the set within the client's budget (its memory
bound, or its layer count for a layer-count budget), and stops when no layer fits; ties
go to the lower layer. `score` is the server's Fisher layer score (the sum of the LoRA
tensors' Fisher-diagonal Frobenius norms, as `fim` uses) on the current global model,
refreshed every `every` rounds; `peak_bytes` is the cost model's peak training memory
(activations + gradients + AdamW states). A layer above the current lowest one costs only
its own gradient and optimiser state, a layer below it also the activations of every
layer between, so the greedy pays for going deeper only when the importance down there is
worth it. Deterministic: clients of one group get the same set until the next refresh.
"""

from __future__ import annotations

import numpy as np

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy, ClientSlot
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import FisherSchedule, KeepsFisherWeights, RefreshEveryParams, within_budget
from fedhello.records import FisherRecord
from fedhello.resources.cost_model import CostModel


def most_importance_per_byte(scores: np.ndarray, slot: ClientSlot, costs: CostModel) -> tuple[int, ...]:
    """Greedy: add the fitting layer with the highest score per added byte until none fits."""
    chosen: list[int] = []
    while True:
        spent = costs.peak_bytes(chosen)
        best, best_ratio = None, -np.inf
        for layer in range(len(scores)):
            if layer in chosen or not within_budget(slot, [*chosen, layer], costs):
                continue
            ratio = scores[layer] / max(costs.peak_bytes([*chosen, layer]) - spent, 1)
            if ratio > best_ratio:
                best, best_ratio = layer, ratio
        if best is None:
            return tuple(sorted(chosen))
        chosen.append(best)


@register_strategy
class FisherPerByteStrategy(KeepsFisherWeights, AllocationStrategy):
    name = "fisher-per-byte"
    summary = (
        "each client greedily takes the layers with the most Fisher score per byte of training memory its budget allows"
    )
    honours_memory_budgets = True
    Params = RefreshEveryParams
    uses_layer_scores = True
    uses_costs = True

    def __init__(self, params: RefreshEveryParams) -> None:
        super().__init__(params)
        self.schedule = FisherSchedule(start=1, every=params.every)
        self._weights: np.ndarray | None = None  # the latest scores, normalised to sum 1

    def allocate(self, context: AllocationContext) -> Allocation:
        if context.costs is None:
            raise RuntimeError("fisher-per-byte needs the cost model, but the driver provided none")
        fisher = None
        if self._weights is None or self.schedule.refreshes_in(context.round, context.total_rounds):
            if context.layer_scores is None:
                raise RuntimeError("fisher-per-byte needs layer scores, but the driver provided no scoring function")
            scores = np.asarray(context.layer_scores(), dtype=np.float64)
            self._weights = scores / scores.sum() if scores.sum() > 0 else np.full(len(scores), 1 / len(scores))
            fisher = FisherRecord(context.round, scores.tolist(), [], self._weights.tolist())
        return Allocation(
            {
                client.client_id: most_importance_per_byte(self._weights, client, context.costs)
                for client in context.clients
            },
            fisher=fisher,
        )
