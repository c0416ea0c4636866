"""Shared pieces of the rank-heterogeneous baselines (HetLoRA, FlexLoRA).

LoRA factors live at the model's full rank r; a client of rank r_c uses the leading
r_c components: A[:r_c, :] and B[:, :r_c]. A group's rank is derived from its layer
budget so that comparisons are like for like: training k of L layers at rank r has
the same number of LoRA parameters as training all L layers at rank r * k / L.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field, field_validator

from fedhello.aggregation import ClientUpdate, aggregate
from fedhello.allocation.base import (
    Allocation,
    AllocationContext,
    AllocationStrategy,
    ClientSlot,
    ModelLayout,
    StrategyParams,
)
from fedhello.config import Weighting
from fedhello.tensor_state import TensorState


class RankParams(StrategyParams):
    ranks: list[int] | None = Field(
        None, description="LoRA rank per capability group (default: lora.rank * budget / L, at least 1)"
    )

    @field_validator("ranks")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(rank < 1 for rank in value):
            raise ValueError("ranks must be at least 1")
        return value


def budget_ranks(full_rank: int, group_budgets: Sequence[int], num_layers: int) -> list[int]:
    """Rank per group with the same LoRA parameter count as its layer budget."""
    return [max(1, min(full_rank, round(full_rank * budget / num_layers))) for budget in group_budgets]


def truncate(state: TensorState, pairs: Sequence[tuple[str, str]], rank: int) -> TensorState:
    """The leading `rank` components of every LoRA factor; other tensors unchanged."""
    truncated = dict(state)
    for a_name, b_name in pairs:
        truncated[a_name] = state[a_name][:rank, :]
        truncated[b_name] = state[b_name][:, :rank]
    return truncated


def local_factors(down: TensorState, update: ClientUpdate) -> TensorState:
    """A client's factors after local training: what it received plus its delta."""
    return {name: down[name] + delta for name, delta in update.deltas.items()}


class RankHeterogeneousStrategy(AllocationStrategy):
    """Every client trains every layer at its group's rank; subclasses define aggregation."""

    Params: ClassVar[type[StrategyParams]] = RankParams
    params: RankParams
    layer_sets_adjustable = False

    def __init__(self, params: RankParams) -> None:
        super().__init__(params)
        self._downlinked: dict[int, TensorState] = {}

    @property
    def full_rank(self) -> int:
        a_name = self.layout.layer_map.pairs[0][0]
        return int(self.layout.initial_state[a_name].shape[0])

    def client_rank(self, client: ClientSlot, context: AllocationContext) -> int:
        ranks = self.params.ranks or budget_ranks(self.full_rank, context.group_budgets, context.num_layers)
        if client.group >= len(ranks):
            raise ValueError(f"allocation.params.ranks has {len(ranks)} entries but there are more groups")
        return min(ranks[client.group], self.full_rank)

    def allocate(self, context: AllocationContext) -> Allocation:
        every_layer = tuple(range(context.num_layers))
        return Allocation(
            {client.client_id: every_layer for client in context.clients},
            ranks={client.client_id: self.client_rank(client, context) for client in context.clients},
        )

    def downlink(self, global_state: TensorState, client: ClientSlot, rank: int | None) -> TensorState:
        down = truncate(self.client_start(global_state), self.layout.layer_map.pairs, rank or self.full_rank)
        self._downlinked[client.client_id] = down
        return down

    def client_start(self, global_state: TensorState) -> TensorState:
        """Full-rank factors a client's truncation is taken from."""
        return global_state

    def aggregate_head(
        self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: Weighting
    ) -> TensorState:
        lora = set(self.layout.layer_map.all_names)
        head_updates = [
            ClientUpdate(u.client_id, {n: d for n, d in u.deltas.items() if n not in lora}, u.num_samples)
            for u in updates
        ]
        return aggregate(global_state, head_updates, weighting)[0]

    def bind(self, layout: ModelLayout) -> None:
        super().bind(layout)
        if not layout.layer_map.pairs:
            raise ValueError(f"{self.name} needs LoRA factor pairs in the layer map")
