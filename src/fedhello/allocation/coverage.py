"""The coverage rule: no layer is trained by fewer than k of a round's clients (`allocation.min_trainers_per_layer`).

Under memory budgets only the few clients that can afford a shallow layer ever train it,
so under label skew it becomes a one-client model; under differential privacy the noise
on a layer is divided by its number of trainers. The server applies this rule to every
round's allocation, whatever the strategy and engine:

1. Prune: every layer that fewer than k of the round's clients would train is taken from
   all of them. One pass suffices: taking a layer away changes no other layer's count.
2. Refill: every client that lost layers gets layers that at least k clients already
   train (so no layer below k appears), the thinnest-covered first (ties: the lower
   layer), as long as its budget allows (`strategy_utils.within_budget`: a layer count,
   or peak training memory). The clients take one layer each in turn, in client order,
   until none can take more, so the freed budget spreads over the thin layers.

A client left with no layer sits out the round. The result depends only on the
allocation, the clients and the cost model (no randomness), so a resumed run repeats it.
Pruning relies on a subset of a layer set never costing more than the set, which holds for
the cost model's form (`fedhello.resources.cost_model`) whenever the activations saved for a
lower lowest layer are at least those of a higher one, as on every model measured.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

from fedhello.allocation.base import Allocation, AllocationStrategy, ClientSlot
from fedhello.allocation.strategy_utils import within_budget
from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.records import CoverageRecord
from fedhello.resources.cost_model import CostModel

FIELD = "allocation.min_trainers_per_layer"


def check_coverage_rule(config: ExperimentConfig, strategy: AllocationStrategy) -> None:
    """Refuse a coverage rule that cannot apply: to strategies whose layer sets are not the method, or past m."""
    min_trainers = config.allocation.min_trainers_per_layer
    if min_trainers == 1:
        return
    if not strategy.layer_sets_adjustable:
        method = "keeps a personal model per client" if strategy.personal_models else "varies LoRA ranks"
        raise ConfigError(
            f"config field '{FIELD}': strategy {strategy.name!r} {method} and gives every client every layer, so "
            "there is no layer set to adjust; use 1 (off) or a layer-allocation strategy"
        )
    clients_per_round = config.federation.clients_per_round
    if min_trainers > clients_per_round:
        centralized = " (one client: the centralized method)" if config.federation.num_clients == 1 else ""
        allowed = "1 (off)" if clients_per_round == 1 else f"1 (off) to {clients_per_round}"
        raise ConfigError(
            f"config field '{FIELD}': {min_trainers} is more than federation.clients_per_round = "
            f"{clients_per_round}{centralized}, so no layer could be trained; use {allowed}"
        )


def thinnest_fitting_layer(
    slot: ClientSlot, layers: set[int], counts: Counter[int], costs: CostModel | None
) -> int | None:
    """The least-trained covered layer the client does not train yet and can still afford (ties: the lower)."""
    return next(
        (
            layer
            for layer in sorted(counts, key=lambda layer: (counts[layer], layer))
            if layer not in layers and within_budget(slot, sorted([*layers, layer]), costs)
        ),
        None,
    )


def refill(
    shrunk: Sequence[ClientSlot], layers: dict[int, set[int]], counts: Counter[int], costs: CostModel | None
) -> int:
    """Give the clients covered layers, one each in turn, until none can afford more; returns how many were given."""
    given = 0
    taking = list(shrunk)
    while taking:
        still_taking = []
        for slot in taking:
            extra = thinnest_fitting_layer(slot, layers[slot.client_id], counts, costs)
            if extra is not None:
                layers[slot.client_id].add(extra)
                counts[extra] += 1
                given += 1
                still_taking.append(slot)
        taking = still_taking
    return given


def enforce_min_trainers(
    allocation: Allocation, clients: Sequence[ClientSlot], min_trainers: int, costs: CostModel | None
) -> Allocation:
    """The allocation with every layer trained by 0 or at least `min_trainers` clients (see the module docstring)."""
    planned = {slot.client_id: set(allocation.layers[slot.client_id]) for slot in clients}
    planned_counts = Counter(layer for chosen in planned.values() for layer in chosen)
    pruned = {layer for layer, count in planned_counts.items() if count < min_trainers}
    shrunk = [slot for slot in clients if planned[slot.client_id] & pruned]
    layers = {client: chosen - pruned for client, chosen in planned.items()}
    counts = Counter({layer: count for layer, count in planned_counts.items() if layer not in pruned})
    refilled = refill(shrunk, layers, counts, costs)
    coverage = CoverageRecord(
        min_trainers=min_trainers,
        pruned=sorted(pruned),
        removed=sum(len(planned[slot.client_id] & pruned) for slot in shrunk),
        refilled=refilled,
        idle=[slot.client_id for slot in shrunk if not layers[slot.client_id]],
    )
    return dataclasses.replace(
        allocation, layers={client: tuple(sorted(chosen)) for client, chosen in layers.items()}, coverage=coverage
    )
