"""Geometric layer patterns (GD-HLA, SPEC §2.1) and the sampling they drive (RGD-HLA).

Layer 0 is the input side. A pattern turns a budget k into a layer set; the count
profile c_l says how many capability groups train layer l, and normalised it becomes
the per-layer sampling weight of the randomised variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

PatternName = Literal["triangle", "inverted_triangle", "bottleneck", "uniform"]
PATTERNS: tuple[str, ...] = ("triangle", "inverted_triangle", "bottleneck", "uniform")


def _alternating_ends(num_layers: int) -> list[int]:
    order: list[int] = []
    low, high = 0, num_layers - 1
    while low <= high:
        order.append(low)
        if high != low:
            order.append(high)
        low, high = low + 1, high - 1
    return order


def pattern_layers(pattern: str, num_layers: int, budget: int) -> tuple[int, ...]:
    """The layers a client with `budget` trains under `pattern` (sorted)."""
    if not 1 <= budget <= num_layers:
        raise ValueError(f"budget must be in 1..{num_layers}, got {budget}")
    chosen: Sequence[int]
    if pattern == "triangle":
        chosen = range(budget)
    elif pattern == "inverted_triangle":
        chosen = range(num_layers - budget, num_layers)
    elif pattern == "bottleneck":
        chosen = _alternating_ends(num_layers)[:budget]
    elif pattern == "uniform":
        chosen = [index * num_layers // budget for index in range(budget)]
    else:
        raise ValueError(f"unknown pattern {pattern!r}; allowed: {', '.join(PATTERNS)}")
    return tuple(sorted(chosen))


def pattern_order(pattern: str, num_layers: int) -> list[int]:
    """The pattern's layers in the order they join it as the budget grows (ties: lower layer first)."""
    order: list[int] = []
    for budget in range(1, num_layers + 1):
        order += [layer for layer in pattern_layers(pattern, num_layers, budget) if layer not in order]
    return order


def count_profile(pattern: str, num_layers: int, budgets: Sequence[int]) -> np.ndarray:
    """c_l: how many of the given budgets (one per group) include layer l."""
    counts = np.zeros(num_layers, dtype=np.int64)
    for budget in budgets:
        counts[list(pattern_layers(pattern, num_layers, budget))] += 1
    return counts


def profile_weights(pattern: str, num_layers: int, budgets: Sequence[int]) -> np.ndarray:
    counts = count_profile(pattern, num_layers, budgets).astype(np.float64)
    return counts / counts.sum()


def sample_layers(rng: np.random.Generator, weights: np.ndarray, budget: int) -> tuple[int, ...]:
    """Weighted sampling without replacement (successive draws, renormalised after each pick)."""
    num_layers = len(weights)
    if budget >= num_layers:
        return tuple(range(num_layers))
    if np.count_nonzero(weights) < budget:
        raise ValueError(f"only {np.count_nonzero(weights)} layers have positive weight, budget is {budget}")
    return tuple(sorted(int(layer) for layer in rng.choice(num_layers, size=budget, replace=False, p=weights)))
