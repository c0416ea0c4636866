"""Every shipped preset, and every cell of every shipped comparison, is a valid config."""

from __future__ import annotations

import pytest

from fedhello.comparison.grid import cell_config, cells, load_comparison
from fedhello.config import COMPARISON_PRESET_PACKAGE
from fedhello.config import load_config, preset_names


@pytest.mark.parametrize("name", preset_names())
def test_experiment_preset_is_valid(name):
    assert load_config(name).name == name


@pytest.mark.parametrize("name", preset_names(COMPARISON_PRESET_PACKAGE))
def test_every_comparison_cell_is_valid(name):
    comparison = load_comparison(name, None, [])
    grid = cells(comparison)
    assert len(grid) == len(comparison.methods) * len(comparison.partitions) * max(1, len(comparison.ratios)) * len(comparison.seeds)
    configs = [cell_config(comparison, cell) for cell in grid]
    assert len({config.name for config in configs}) == len(grid)
    assert sorted({config.seed for config in configs}) == sorted(comparison.seeds)


def test_paper_comparison_keeps_the_reference_setting():
    comparison = load_comparison("paper-cifar100", None, [])
    config = cell_config(comparison, next(c for c in cells(comparison) if c.partition == "pathological-10" and c.ratio == "6:3:1"))
    assert config.model.name == "google/vit-base-patch16-224-in21k" and config.model.task == "image_classification"
    assert (config.federation.num_clients, config.federation.clients_per_round, config.federation.rounds) == (100, 10, 500)
    assert config.groups.budgets == [6, 9, 12] and config.groups.ratio == [6.0, 3.0, 1.0]
    assert config.partition.classes_per_client == 10 and config.lora.rank == 16


def test_offline_comparison_covers_every_method():
    methods = {cell.method for cell in cells(load_comparison("offline-all", None, []))}
    assert methods >= {"full", "exclusive", "straggler", "fedra", "gd-triangle", "gd-inverted_triangle", "gd-bottleneck",
                       "gd-uniform", "rgd-bottleneck", "fim", "fedhello", "hetlora", "flexlora", "centralized", "local"}
