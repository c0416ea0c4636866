"""Capability groups (the RoC): which clients belong to which group, and each group's budget.

A budget is a layer count, a fraction of L, or a memory size ('350MiB'). A memory budget
bounds the client's peak training memory (see `fedhello.resources.cost_model`); its layer
count is the most layers it can buy, the deepest ones, which patterns and RGD weights use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.resources.cost_model import CostModel
from fedhello.resources.memory_units import format_mib, parse_memory
from fedhello.seeding import numpy_rng


def memory_budgets(budgets: Sequence[int | float | str]) -> list[int | None]:
    """Each group's memory bound in bytes, or None for a layer-count budget."""
    return [parse_memory(budget) if isinstance(budget, str) else None for budget in budgets]


def _layers_bought(budget: str, costs: CostModel | None) -> int:
    if costs is None:
        raise ValueError(f"memory budget {budget!r} needs the model's cost model")
    layers = costs.deepest_first(parse_memory(budget))
    if not layers:
        layer, cheapest = costs.cheapest()
        raise ConfigError(
            f"config field 'groups.budgets': budget {budget!r} is below the cheapest trainable set, layer {layer} "
            f"alone with the head, which needs {format_mib(cheapest)} ({cheapest:,} bytes)"
        )
    return len(layers)


def needs_cost_model(budgets: Sequence[int | float | str]) -> bool:
    return any(isinstance(budget, str) for budget in budgets)


def resolve_budgets(budgets: Sequence[int | float | str], num_layers: int, costs: CostModel | None = None) -> list[int]:
    """The most layers each group may train.

    Integers are layer counts; floats are fractions of L, rounded up (3L/4 of 6 layers -> 5);
    memory sizes buy the longest top suffix that fits (`CostModel.deepest_first`).
    """
    resolved = []
    for budget in budgets:
        if isinstance(budget, str):
            layers = _layers_bought(budget, costs)
        else:
            layers = budget if isinstance(budget, int) else math.ceil(budget * num_layers - 1e-9)
        if not 1 <= layers <= num_layers:
            raise ConfigError(
                f"config field 'groups.budgets': budget {budget} means {layers} layers, the model has {num_layers}"
            )
        resolved.append(int(layers))
    return resolved


def group_sizes(num_clients: int, ratio: Sequence[float]) -> list[int]:
    """Split clients by ratio with the largest-remainder method (sizes sum to num_clients)."""
    shares = np.asarray(ratio, dtype=np.float64) / float(np.sum(ratio)) * num_clients
    sizes = np.floor(shares).astype(int)
    for index in np.argsort(-(shares - sizes), kind="stable")[: num_clients - sizes.sum()]:
        sizes[index] += 1
    return sizes.tolist()


def assign_groups(num_clients: int, ratio: Sequence[float], assignment: str, rng: np.random.Generator) -> np.ndarray:
    """Group index per client. 'index' fills groups in client order, like the reference code."""
    membership = np.repeat(np.arange(len(ratio)), group_sizes(num_clients, ratio))
    if assignment == "random":
        membership = rng.permutation(membership)
    elif assignment != "index":
        raise ConfigError(f"config field 'groups.assignment': {assignment!r} is not one of random, index")
    return membership


@dataclass(frozen=True)
class CapabilityGroups:
    """The resolved RoC of one run: each client's group, each group's layer budget and memory bound.

    Resolved once per run (`resolve`) and handed to the `Server`; a deployment's nodes may
    declare their own group (`with_declared`), which overrides the seeded assignment.
    """

    client_groups: np.ndarray
    budgets: list[int]
    memory: list[int | None]

    @classmethod
    def resolve(cls, config: ExperimentConfig, num_layers: int, costs: CostModel | None) -> CapabilityGroups:
        groups = config.groups
        return cls(
            assign_groups(
                config.federation.num_clients,
                cast(list[float], groups.ratio),  # GroupsConfig parses '6:3:1' strings into shares
                groups.assignment,
                numpy_rng(config.seed, "groups"),
            ),
            resolve_budgets(groups.budgets, num_layers, costs),
            memory_budgets(groups.budgets),
        )

    def with_declared(self, declared: Mapping[int, int]) -> CapabilityGroups:
        """These groups with the clients in `declared` moved to the group their node declares."""
        client_groups = self.client_groups.copy()
        for client, group in declared.items():
            if not 0 <= group < len(self.budgets):
                raise ConfigError(
                    f"node config 'capability-group': client {client}'s node declares group {group}; "
                    f"groups are 0..{len(self.budgets) - 1}"
                )
            client_groups[client] = group
        return CapabilityGroups(client_groups, self.budgets, self.memory)
