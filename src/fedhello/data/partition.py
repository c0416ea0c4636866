"""Partition a labelled dataset's sample indices among federated clients.

Pure numpy: every partitioner maps integer labels (0..C-1) to one sorted int64
index array per client, covering every sample exactly once, deterministically
for a given ``np.random.Generator`` state.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from fedhello.errors import ConfigError

Partitioner = Callable[..., list[np.ndarray]]

PARTITIONERS: dict[str, Partitioner] = {}


def _register(name: str) -> Callable[[Partitioner], Partitioner]:
    """Add the decorated partitioner to ``PARTITIONERS`` under ``name``."""

    def decorator(fn: Partitioner) -> Partitioner:
        PARTITIONERS[name] = fn
        return fn

    return decorator


def _finalize(parts: list[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _num_classes(labels: np.ndarray) -> int:
    return int(labels.max()) + 1


def _split_by_sizes(indices: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.cumsum(sizes)[:-1])


@_register("iid")
def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle all samples and split them into near-equal shares."""
    order = rng.permutation(len(labels))
    return _finalize(np.array_split(order, num_clients))


def _deal_classes(
    num_clients: int, num_classes: int, classes_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each client ``classes_per_client`` distinct classes with balanced holder counts.

    Quotas (holders per class) differ by at most one. Each client then greedily takes
    the classes with the largest remaining quota (random tie-break). This never
    fails: with m clients left the quotas sum to m*k and none exceeds m, and any class
    at quota m (at most k of them) is among the k largest, so is taken.
    """
    total, extra = divmod(num_clients * classes_per_client, num_classes)
    quota = np.full(num_classes, total, dtype=np.int64)
    quota[rng.choice(num_classes, size=extra, replace=False)] += 1

    assignment = []
    for _ in range(num_clients):
        order = rng.permutation(num_classes)
        chosen = order[np.argsort(-quota[order], kind="stable")[:classes_per_client]]
        quota[chosen] -= 1
        assignment.append(np.sort(chosen))
    return assignment


@_register("pathological")
def pathological(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    classes_per_client: int = 2,
    min_per_client: int = 10,
) -> list[np.ndarray]:
    """Fed-HeLLo non-IID split: each client holds exactly ``classes_per_client`` classes.

    Every class goes to an equal number of clients (differing by at most one when
    not divisible). Within a class, each holder first gets ``min_per_client`` samples
    (lowered to ``n_class // holders`` if the class is too small), and the remainder is
    split with Dirichlet(1) proportions.
    """
    num_classes = _num_classes(labels)
    if not 1 <= classes_per_client <= num_classes:
        raise ConfigError(
            f"config field 'partition.classes_per_client': must be in 1..{num_classes} (the dataset's classes), "
            f"got {classes_per_client}"
        )
    if min_per_client < 0:
        raise ConfigError(f"config field 'partition.min_per_client': must be >= 0, got {min_per_client}")
    if num_clients * classes_per_client < num_classes:
        needed = -(-num_classes // num_clients)
        raise ConfigError(
            f"config field 'partition.classes_per_client': {num_clients} clients x {classes_per_client} classes "
            f"each cannot hold all {num_classes} classes, so some class's samples would belong to no client; "
            f"use partition.classes_per_client >= {needed}, more clients, or another partition.scheme"
        )

    assignment = _deal_classes(num_clients, num_classes, classes_per_client, rng)
    holders_of: list[list[int]] = [[] for _ in range(num_classes)]
    for client, classes in enumerate(assignment):
        for c in classes:
            holders_of[c].append(client)

    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c, holders in enumerate(holders_of):
        idx = rng.permutation(np.flatnonzero(labels == c))
        floor = min(min_per_client, len(idx) // len(holders))
        rest = len(idx) - floor * len(holders)
        # multinomial counts sum to `rest` exactly, so no sample is lost or duplicated
        sizes = floor + rng.multinomial(rest, rng.dirichlet(np.ones(len(holders))))
        for client, share in zip(holders, _split_by_sizes(idx, sizes), strict=True):
            parts[client].append(share)
    return _finalize([np.concatenate(p) for p in parts])


@_register("dirichlet")
def dirichlet(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, *, alpha: float = 0.5
) -> list[np.ndarray]:
    """Label skew: each class is split among clients with Dirichlet(alpha) proportions.

    Smaller ``alpha`` gives more skew. Empty clients are topped up with one sample
    taken from the currently largest client.
    """
    if not alpha > 0:
        raise ConfigError(f"config field 'partition.alpha': must be > 0, got {alpha}")

    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in range(_num_classes(labels)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(np.int64)
        for client, share in enumerate(np.split(idx, cuts)):
            parts[client].append(share)

    merged = _finalize([np.concatenate(p) for p in parts])
    for empty in [i for i, p in enumerate(merged) if len(p) == 0]:
        # the largest client has >= 2 samples because num_clients <= N and one is empty
        donor = int(np.argmax([len(p) for p in merged]))
        merged[empty] = merged[donor][-1:]
        merged[donor] = merged[donor][:-1]
    return merged


def partition_indices(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    rng: np.random.Generator,
    *,
    classes_per_client: int = 2,
    min_per_client: int = 10,
    alpha: float = 0.5,
) -> list[np.ndarray]:
    """Validate inputs and dispatch to the partitioner registered as ``scheme``.

    Returns one sorted int64 index array per client; together they cover every
    sample index ``0..len(labels)-1`` exactly once.
    """
    if scheme not in PARTITIONERS:
        raise ValueError(f"unknown scheme {scheme!r}; allowed: {sorted(PARTITIONERS)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError("labels must be a non-empty 1-D integer array")
    if labels.min() < 0:
        raise ValueError("labels must be non-negative class ids")
    if not 1 <= num_clients <= len(labels):
        raise ConfigError(
            f"config field 'federation.num_clients': must be in 1..{len(labels)} (the training samples left for "
            f"clients), got {num_clients}; use fewer clients or more data"
        )

    fn = PARTITIONERS[scheme]
    options = {
        "classes_per_client": classes_per_client,
        "min_per_client": min_per_client,
        "alpha": alpha,
    }
    # each partitioner receives only the options it declares
    accepted = inspect.signature(fn).parameters
    return fn(labels, num_clients, rng, **{k: v for k, v in options.items() if k in accepted})


def partition_summary(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> list[dict]:
    """Per-client sample count, number of classes present and per-class counts."""
    labels = np.asarray(labels)
    summary = []
    for i, part in enumerate(parts):
        counts = np.bincount(labels[part], minlength=num_classes)
        summary.append(
            {
                "client": i,
                "num_samples": len(part),
                "num_classes": int(np.count_nonzero(counts)),
                "class_counts": [int(x) for x in counts],
            }
        )
    return summary
