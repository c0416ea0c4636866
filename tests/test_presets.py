"""Every shipped preset, and every cell of every shipped comparison, is a valid config."""

from __future__ import annotations

import pytest

from fedhello.comparison.grid import cell_config, cells, load_comparison
from fedhello.config import COMPARISON_PRESET_PACKAGE, load_config, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_experiment_preset_is_valid(name):
    assert load_config(name).name == name


@pytest.mark.parametrize("name", preset_names(COMPARISON_PRESET_PACKAGE))
def test_every_comparison_cell_is_valid(name):
    comparison = load_comparison(name, None, [])
    grid = cells(comparison)
    assert len(grid) == len(comparison.methods) * len(comparison.partitions) * max(1, len(comparison.ratios)) * len(
        comparison.seeds
    )
    configs = [cell_config(comparison, cell) for cell in grid]
    assert len({config.name for config in configs}) == len(grid)
    assert sorted({config.seed for config in configs}) == sorted(comparison.seeds)


def test_paper_comparison_keeps_the_reference_setting():
    comparison = load_comparison("paper-cifar100", None, [])
    config = cell_config(
        comparison, next(c for c in cells(comparison) if c.partition == "pathological-10" and c.ratio == "6:3:1")
    )
    assert config.model.name == "google/vit-base-patch16-224-in21k" and config.model.task == "image_classification"
    assert (config.federation.num_clients, config.federation.clients_per_round, config.federation.rounds) == (
        100,
        10,
        500,
    )
    assert config.groups.budgets == [6, 9, 12] and config.groups.ratio == [6.0, 3.0, 1.0]
    assert config.partition.classes_per_client == 10 and config.lora.rank == 16


def test_offline_comparison_covers_every_method():
    methods = {cell.method for cell in cells(load_comparison("offline-all", None, []))}
    assert methods >= {
        "full",
        "exclusive",
        "straggler",
        "fedra",
        "fedra-depth",
        "gd-triangle",
        "gd-inverted_triangle",
        "gd-bottleneck",
        "gd-uniform",
        "rgd-bottleneck",
        "fim",
        "fedhello",
        "hetlora",
        "flexlora",
        "centralized",
        "local",
    }


def test_paper_preset_carries_the_reference_settings_and_switches_reproduce_it():
    from fedhello.allocation.registry import strategy_from_config
    from fedhello.allocation.strategy_utils import FisherSchedule
    from fedhello.config import preset_text
    from fedhello.presets import REFERENCE_SWITCHES

    config = load_config("paper-cifar100-vit")
    assert config.training.weighting == "uniform" and config.lora.dropout == 0.1
    assert config.training.head == "aggregate" and config.fisher.objective == "log_likelihood"  # corrections on
    strategy = strategy_from_config(config)
    assert strategy.params.mode == "persistent" and strategy.params.tier_order == "centroid"
    # Reference: 0-based t with t > 49 and t % 50 == 0 -> executed (1-based) rounds 51, 101, ..., 451.
    schedule = FisherSchedule(strategy.params.fim_start, strategy.params.fim_every)
    reference = [t + 1 for t in range(500) if t > 49 and t % 50 == 0]
    assert [r for r in range(1, 501) if schedule.refreshes_in(r, 500)] == reference and len(reference) == 9

    switched = load_config("paper-cifar100-vit", overrides=list(REFERENCE_SWITCHES))
    params = strategy_from_config(switched).params
    assert switched.training.head == "reset" and switched.fisher.objective == "logit"
    assert params.mode == "refresh_only" and params.tier_order == "kmeans_label"
    assert switched.fisher.proxy_size == 4 and switched.groups.assignment == "index"
    # The preset's comment documents exactly these switches.
    text = preset_text("paper-cifar100-vit")
    assert all(f"--set {switch}" in text for switch in REFERENCE_SWITCHES)
