"""`fedhello`: the co-designed schedule (SPEC §2.4): RGD first, then Fisher-tier weights."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.patterns import PatternName, profile_weights
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import (
    FisherSchedule,
    KeepsFisherWeights,
    RoundSpec,
    TierWeightsParams,
    check_round_spec,
    fisher_weights,
    sample_allocation,
)


class FedHeLLoParams(TierWeightsParams):
    pattern: PatternName = Field(
        "bottleneck", description="RGD pattern before (and, in refresh_only, between) refreshes"
    )
    fim_start: RoundSpec = Field(
        0.2, description="first round using Fisher weights: a count, or a fraction of the run (reference: 50 of 500)"
    )
    fim_every: RoundSpec = Field(
        0.2, description="Fisher refresh period: a count, or a fraction of the run (reference: 50)"
    )
    mode: Literal["persistent", "refresh_only"] = Field(
        "persistent",
        description="persistent: latest Fisher weights until the next refresh; refresh_only: Fisher weights only in "
        "refresh rounds, RGD otherwise (the reference code)",
    )

    _rounds = field_validator("fim_start", "fim_every")(check_round_spec)


@register_strategy
class FedHeLLoStrategy(KeepsFisherWeights, AllocationStrategy):
    name = "fedhello"
    summary = "RGD with a pattern until fim_start, then Fisher-tier sampling refreshed every fim_every rounds"
    honours_memory_budgets = True
    Params = FedHeLLoParams
    params: FedHeLLoParams
    uses_layer_scores = True

    def __init__(self, params: FedHeLLoParams) -> None:
        super().__init__(params)
        self.schedule = FisherSchedule(start=params.fim_start, every=params.fim_every)
        self._weights: np.ndarray | None = None

    def allocate(self, context: AllocationContext) -> Allocation:
        fisher = None
        if self.schedule.refreshes_in(context.round, context.total_rounds):
            self._weights, fisher = fisher_weights(context, self.params.tier_weights, self.params.tier_order)
            weights, source = self._weights, "fim"
        elif self._weights is not None and self.params.mode == "persistent":
            weights, source = self._weights, "fim"
        else:
            weights, source = profile_weights(self.params.pattern, context.num_layers, context.group_budgets), "rgd"
        return Allocation(sample_allocation(context, weights), {"source": source}, fisher=fisher)
