"""`fim`: FIM-HLA, layers sampled with weights from Fisher-information tiers (SPEC §2.3)."""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy, StrategyParams, rounds_from
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategies.rgd import sample_allocation
from fedhello.allocation.tiers import tier_sampling_weights

RoundSpec = int | float


def check_round_spec(value: RoundSpec) -> RoundSpec:
    if isinstance(value, int) and value < 1:
        raise ValueError("must be a round count >= 1 or a fraction of the run in (0, 1]")
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError("must be a round count >= 1 or a fraction of the run in (0, 1]")
    return value


class TierWeightsParams(StrategyParams):
    tier_weights: list[float] = Field([1.0, 2.0, 3.0], min_length=2, description="weight per tier, low to high")

    @field_validator("tier_weights")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(weight <= 0 for weight in value):
            raise ValueError("tier weights must be positive")
        return value


def fisher_weights(context: AllocationContext, tier_weights: list[float]) -> tuple[np.ndarray, dict]:
    """Score layers on the current global model and turn the scores into sampling weights."""
    if context.layer_scores is None:
        raise RuntimeError("this strategy needs layer scores, but the driver provided no scoring function")
    scores = np.asarray(context.layer_scores(), dtype=np.float64)
    tiers, weights = tier_sampling_weights(scores, tier_weights)
    record = {"round": context.round, "scores": scores.tolist(), "tiers": tiers.tolist(), "weights": weights.tolist()}
    return weights, record


class FIMParams(TierWeightsParams):
    every: RoundSpec = Field(1, description="refresh the Fisher weights every N rounds (or a fraction of the run)")

    _every = field_validator("every")(check_round_spec)


@register_strategy
class FIMStrategy(AllocationStrategy):
    name = "fim"
    summary = "each client samples `budget` layers weighted by Fisher-score tiers, refreshed every `every` rounds"
    Params = FIMParams
    uses_layer_scores = True

    def __init__(self, params: FIMParams) -> None:
        super().__init__(params)
        self._weights: np.ndarray | None = None
        self._refreshed_at = 0

    def allocate(self, context: AllocationContext) -> Allocation:
        info: dict = {}
        if self._weights is None or context.round - self._refreshed_at >= rounds_from(self.params.every, context.total_rounds):
            self._weights, info["fisher"] = fisher_weights(context, self.params.tier_weights)
            self._refreshed_at = context.round
        return Allocation(sample_allocation(context, self._weights), info)
