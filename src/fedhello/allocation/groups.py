"""Capability groups (the RoC): which clients belong to which group, and each group's layer budget."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedhello.errors import ConfigError


def resolve_budgets(budgets: Sequence[int | float], num_layers: int) -> list[int]:
    """Integers are layer counts; floats are fractions of L, rounded up (3L/4 of 6 layers -> 5)."""
    resolved = []
    for budget in budgets:
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
