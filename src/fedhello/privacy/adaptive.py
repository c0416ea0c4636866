"""Adaptive clipping (Andrew et al., NeurIPS 2021): the clip norm follows a quantile of update norms.

Each round the server releases a noised count of the updates that were within the clip
norm and moves the norm geometrically towards the target quantile. The count is a second
Gaussian mechanism; Theorem 1 of the paper splits the noise budget so the pair of
releases has the configured noise multiplier, which the accounting then uses unchanged.
"""

from __future__ import annotations

import math


def default_count_stddev(clients_per_round: int) -> float:
    """The paper's (and Flower's) default noise on the unclipped count: clients per round / 20."""
    return clients_per_round / 20


def adaptive_noise_split(noise_multiplier: float, count_stddev: float) -> float:
    """The update noise multiplier that, with the count noised at `count_stddev`, totals `noise_multiplier`.

    z_update = (z^-2 - (2 sigma_count)^-2)^(-1/2): each unclipped bit, centred, has sensitivity 1/2.
    """
    if 2 * count_stddev <= noise_multiplier:
        raise ValueError(
            f"privacy.clipped_count_stddev {count_stddev:g} must exceed noise_multiplier / 2 = "
            f"{noise_multiplier / 2:g} for adaptive clipping (default: clients_per_round / 20)"
        )
    return (noise_multiplier**-2 - (2 * count_stddev) ** -2) ** -0.5


def next_clip_norm(clip_norm: float, unclipped_fraction: float, target_quantile: float, learning_rate: float) -> float:
    """The geometric update: shrink when more than the target fraction fit, grow when fewer do."""
    return clip_norm * math.exp(-learning_rate * (unclipped_fraction - target_quantile))
