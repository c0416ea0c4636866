"""The settings differential privacy refuses, each with a one-line reason, and the noise it runs with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedhello.errors import ConfigError
from fedhello.privacy.accounting import check_reachable, solve_noise_multiplier
from fedhello.privacy.adaptive import adaptive_noise_split, default_count_stddev

if TYPE_CHECKING:
    from fedhello.allocation.base import AllocationStrategy
    from fedhello.config import ExperimentConfig


def _target_search(config: ExperimentConfig) -> tuple[float, int, int, int, float, float]:
    """The arguments of the search for the noise that reaches `target_epsilon`."""
    from fedhello.config import MAX_NOISE_MULTIPLIER

    privacy, federation = config.privacy, config.federation
    assert privacy.target_epsilon is not None
    return (
        privacy.target_epsilon,
        federation.num_clients,
        federation.clients_per_round,
        federation.rounds,
        privacy.delta,
        MAX_NOISE_MULTIPLIER,
    )


def configured_noise_multiplier(config: ExperimentConfig) -> float:
    """The noise multiplier as given, or solved from `target_epsilon` (a few seconds of accounting)."""
    if config.privacy.noise_multiplier is not None:
        return config.privacy.noise_multiplier
    return solve_noise_multiplier(*_target_search(config))


def check_privacy_config(config: ExperimentConfig) -> None:
    """Cross-section checks of an enabled `privacy` section (raises ValueError; pydantic reports it)."""
    privacy, federation = config.privacy, config.federation
    if config.training.weighting != "uniform":
        raise ValueError(
            f"privacy needs training.weighting: uniform (got {config.training.weighting}): data-size weights let one "
            "client's private sample count scale its influence past the clip bound"
        )
    if federation.num_clients == 1:
        raise ValueError(
            "privacy is user-level and needs many clients; federation.num_clients is 1 (the centralized method)"
        )
    if config.allocation.strategy == "local":
        raise ValueError("privacy does not apply to strategy 'local': its personal models are never aggregated")
    if privacy.delta >= 1 / federation.num_clients:
        raise ValueError(
            f"privacy.delta {privacy.delta:g} must be below 1 / federation.num_clients = {1 / federation.num_clients:g}"
            " (a larger δ allows releasing one client's data outright)"
        )
    if privacy.adaptive and privacy.noise_multiplier is not None:
        adaptive_noise_split(
            privacy.noise_multiplier, privacy.clipped_count_stddev or default_count_stddev(federation.clients_per_round)
        )
    if privacy.target_epsilon is not None:
        check_reachable(*_target_search(config))


def check_private_strategy(config: ExperimentConfig, strategy: AllocationStrategy) -> None:
    """Refuse strategies whose aggregation is not the per-tensor mean the noise is calibrated for."""
    from fedhello.allocation.base import AllocationStrategy

    if not config.privacy.enabled:
        return
    if strategy.personal_models or type(strategy).aggregate is not AllocationStrategy.aggregate:
        raise ConfigError(
            f"config field 'privacy.mode': strategy {strategy.name!r} aggregates its own way (personal models, "
            "zero-padded norm-weighted factors or SVD of products); privacy supports strategies with the "
            "per-tensor mean, e.g. fedhello, fedra, straggler, full"
        )
