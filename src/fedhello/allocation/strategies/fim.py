"""`fim`: FIM-HLA, layers sampled with weights from Fisher-information tiers (SPEC §2.3)."""

from __future__ import annotations

import numpy as np

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import (
    FisherSchedule,
    KeepsFisherWeights,
    RefreshEveryParams,
    TierWeightsParams,
    fisher_weights,
    sample_allocation,
)


class FIMParams(TierWeightsParams, RefreshEveryParams):
    pass


@register_strategy
class FIMStrategy(KeepsFisherWeights, AllocationStrategy):
    name = "fim"
    summary = "each client samples `budget` layers weighted by Fisher-score tiers, refreshed every `every` rounds"
    honours_memory_budgets = True
    Params = FIMParams
    params: FIMParams
    uses_layer_scores = True

    def __init__(self, params: FIMParams) -> None:
        super().__init__(params)
        self.schedule = FisherSchedule(start=1, every=params.every)
        self._weights: np.ndarray | None = None

    def allocate(self, context: AllocationContext) -> Allocation:
        fisher = None
        if self._weights is None or self.schedule.refreshes_in(context.round, context.total_rounds):
            self._weights, fisher = fisher_weights(context, self.params.tier_weights, self.params.tier_order)
        return Allocation(sample_allocation(context, self._weights), fisher=fisher)
