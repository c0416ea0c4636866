"""Pieces that several strategies share (as peft's `tuners_utils`): parameter schemas,
round schedules given as counts or fractions of the run, the Fisher-refresh schedule,
Fisher-tier weights, weighted per-client layer sampling, and the budget check.

Memory budgets: a client may train any layer set whose peak training memory
(`CostModel.peak_bytes`) fits its `memory_bytes`. Weighted sampling then draws layers one
at a time, renormalised, among those that still fit, until none does (so a client uses
its budget); deterministic strategies walk their priority order and take every layer
that still fits. Layer-count budgets keep the exact draws they always had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from fedhello.allocation.base import AllocationContext, ClientSlot, StrategyParams, StrategyState
from fedhello.allocation.patterns import PatternName, sample_layers
from fedhello.allocation.tiers import tier_sampling_weights
from fedhello.records import FisherRecord
from fedhello.resources.cost_model import CostModel

RoundSpec = int | float


def check_round_spec(value: RoundSpec) -> RoundSpec:
    if (isinstance(value, int) and value < 1) or (isinstance(value, float) and not 0 < value <= 1):
        raise ValueError("must be a round count >= 1 or a fraction of the run in (0, 1]")
    return value


def rounds_from(value: RoundSpec, total_rounds: int) -> int:
    """A round count given as an integer, or as a fraction of the run (0.1 of 500 rounds = 50)."""
    return value if isinstance(value, int) else max(1, round(value * total_rounds))


class PatternParams(StrategyParams):
    pattern: PatternName = Field(
        "bottleneck", description="geometric pattern: triangle, inverted_triangle, bottleneck, uniform"
    )


class RefreshEveryParams(StrategyParams):
    every: RoundSpec = Field(1, description="refresh the Fisher weights every N rounds (or a fraction of the run)")

    _every = field_validator("every")(check_round_spec)


class TierWeightsParams(StrategyParams):
    tier_weights: list[float] = Field([1.0, 2.0, 3.0], min_length=2, description="weight per tier, low to high")
    tier_order: Literal["centroid", "kmeans_label"] = Field(
        "centroid",
        description="centroid: tiers ordered by k-means centroid (low score -> low weight); kmeans_label: the raw, "
        "arbitrary k-means labels index the weights (the reference code: importance maps to random weights)",
    )

    @field_validator("tier_weights")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(weight <= 0 for weight in value):
            raise ValueError("tier weights must be positive")
        return value


@dataclass(frozen=True)
class FisherSchedule:
    """Fisher refreshes in rounds start, start + every, start + 2*every, ... (rounds count from 1)."""

    start: RoundSpec
    every: RoundSpec

    def refreshes_in(self, round_number: int, total_rounds: int) -> bool:
        start, every = rounds_from(self.start, total_rounds), rounds_from(self.every, total_rounds)
        return round_number >= start and (round_number - start) % every == 0


def fisher_weights(
    context: AllocationContext, tier_weights: list[float], tier_order: str = "centroid"
) -> tuple[np.ndarray, FisherRecord]:
    """Score layers on the current global model and turn the scores into sampling weights."""
    if context.layer_scores is None:
        raise RuntimeError("this strategy needs layer scores, but the driver provided no scoring function")
    scores = np.asarray(context.layer_scores(), dtype=np.float64)
    tiers, weights = tier_sampling_weights(scores, tier_weights, ordered=tier_order == "centroid")
    return weights, FisherRecord(context.round, scores.tolist(), tiers.tolist(), weights.tolist())


def within_budget(slot: ClientSlot, layers: Sequence[int], costs: CostModel | None) -> bool:
    """A layer-count budget caps the number of layers; a memory budget caps the set's peak training memory."""
    if slot.memory_bytes is None:
        return len(layers) <= slot.budget
    if costs is None:
        raise RuntimeError("a memory budget needs the cost model, but the driver provided none")
    return costs.peak_bytes(layers) <= slot.memory_bytes


def fill_in_order(order: Sequence[int], slot: ClientSlot, costs: CostModel | None) -> tuple[int, ...]:
    """Walk `order` and take every layer that still fits the client's budget."""
    chosen: list[int] = []
    for layer in order:
        if within_budget(slot, [*chosen, layer], costs):
            chosen.append(layer)
    return tuple(sorted(chosen))


def sample_within_memory(
    rng: np.random.Generator, weights: np.ndarray, slot: ClientSlot, costs: CostModel | None
) -> tuple[int, ...]:
    """Successive weighted draws among the layers that still fit, until none does.

    If no layer with positive weight fits at all, the client trains the deepest layers its budget buys.
    """
    chosen: list[int] = []
    while True:
        candidates = [
            layer
            for layer in range(len(weights))
            if layer not in chosen and weights[layer] > 0 and within_budget(slot, [*chosen, layer], costs)
        ]
        if not candidates:
            break
        probabilities = weights[candidates] / weights[candidates].sum()
        chosen.append(int(rng.choice(candidates, p=probabilities)))
    if not chosen:
        return fill_in_order(range(len(weights) - 1, -1, -1), slot, costs)
    return tuple(sorted(chosen))


def sample_allocation(context: AllocationContext, weights: np.ndarray) -> dict[int, tuple[int, ...]]:
    """Each client draws its budget of layers from `weights`, without replacement."""
    return {
        client.client_id: sample_layers(context.rng, weights, client.budget)
        if client.memory_bytes is None
        else sample_within_memory(context.rng, weights, client, context.costs)
        for client in context.clients
    }


class KeepsFisherWeights:
    """Mixin for strategies whose state is their latest Fisher sampling weights (None before the first refresh)."""

    _weights: np.ndarray | None = None

    def state_dict(self) -> StrategyState:
        return StrategyState(values={"fisher_weights": None if self._weights is None else self._weights.tolist()})

    def load_state_dict(self, state: StrategyState) -> None:
        weights = state.values.get("fisher_weights")
        self._weights = None if weights is None else np.asarray(weights, dtype=np.float64)
