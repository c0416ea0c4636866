"""Did every client stay within its capability group's budget? The realised cost per group.

A client-round's realised peak is what it measured (activation bytes saved for backward,
`clients.jsonl`) plus the gradient and AdamW-state bytes of the tensors it trained: the
same quantity a memory budget bounds. A violation is a trained client-round whose peak
exceeds its group's memory budget. Layer-count budgets are left unchecked (blank): what
they mean is the strategy's to say (`full` ignores them, rank-heterogeneous methods
read them as ranks).
"""

from __future__ import annotations

import numpy as np

from fedhello.outputs.summary import format_table
from fedhello.records import ClientRecord


def realised_peak_bytes(client: ClientRecord) -> int:
    return client.activation_bytes + client.state_bytes


def violations(clients: list[ClientRecord], memory_bytes: int | None) -> int | None:
    """Client-rounds over a memory budget (None for a layer-count budget)."""
    if memory_bytes is None:
        return None
    return sum(realised_peak_bytes(client) > memory_bytes for client in clients)


def budget_rows(
    clients: list[ClientRecord], budgets: list, layer_budgets: list[int], memory_bytes: list[int | None]
) -> tuple[list[str], list[list]]:
    """One row per group with trained client-rounds: budget, realised peak, layers trained, violations."""
    rows = []
    for group, (budget, layers, memory) in enumerate(zip(budgets, layer_budgets, memory_bytes, strict=True)):
        trained = [c for c in clients if c.group == group and c.status == "trained" and c.layers]
        if not trained:
            continue
        peaks = [realised_peak_bytes(c) / 2**20 for c in trained]
        rows.append(
            [
                group,
                budget if isinstance(budget, str) else f"{layers} layers",
                len(trained),
                round(float(np.mean(peaks)), 1),
                round(float(np.max(peaks)), 1),
                round(float(np.mean([len(c.layers) for c in trained])), 2),
                round(float(np.mean([min(c.layers) for c in trained])), 2),
                int(min(min(c.layers) for c in trained)),
                violations(trained, memory),
            ]
        )
    headers = [
        "group",
        "budget",
        "client-rounds",
        "mean peak MiB",
        "max peak MiB",
        "mean layers",
        "mean lowest layer",
        "lowest layer",
        "violations",
    ]
    return headers, rows


def budget_table(
    clients: list[ClientRecord], budgets: list, layer_budgets: list[int], memory_bytes: list[int | None]
) -> str:
    headers, rows = budget_rows(clients, budgets, layer_budgets, memory_bytes)
    note = (
        "peak = measured activation bytes + gradient and AdamW-state bytes of the trained tensors "
        "(what a memory budget bounds)"
    )
    return format_table(headers, rows) + "\n\n" + note if rows else "_No trained clients._"
