"""Fisher scores -> importance tiers -> per-layer sampling weights (SPEC §2.3 steps 4-5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans


def score_tiers(scores: np.ndarray, num_tiers: int, ordered: bool = True) -> np.ndarray:
    """1-D k-means of the layer scores; tier 0 is the cluster with the lowest centroid.

    The clusters are re-labelled by centroid order: k-means labels are arbitrary, and
    using them directly (as the reference code does; `ordered=False`) maps importance to
    random weights.
    """
    scores = np.asarray(scores, dtype=np.float64)
    clusters = min(num_tiers, len(np.unique(scores)))
    if clusters <= 1:
        return np.zeros(len(scores), dtype=np.int64)
    kmeans = KMeans(n_clusters=clusters, n_init=10, random_state=0).fit(scores.reshape(-1, 1))
    if not ordered:
        return kmeans.labels_.astype(np.int64)
    rank_of_cluster = np.argsort(np.argsort(kmeans.cluster_centers_.ravel()))
    return rank_of_cluster[kmeans.labels_].astype(np.int64)


def tier_sampling_weights(
    scores: np.ndarray, tier_weights: Sequence[float], ordered: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Return (tiers, normalised per-layer weights) for the given tier weights, low to high."""
    tiers = score_tiers(scores, len(tier_weights), ordered)
    weights = np.asarray(tier_weights, dtype=np.float64)[tiers]
    return tiers, weights / weights.sum()
