"""Strategies registered by name; users add their own with `@register_strategy`.

A strategy in another package becomes available either through `allocation.plugins`
(modules imported before the config is checked) or through the `fedhello.strategies`
entry-point group.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from fedhello.allocation.base import AllocationStrategy
from fedhello.allocation.coverage import check_coverage_rule
from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.privacy.validation import check_private_strategy

_STRATEGIES: dict[str, type[AllocationStrategy]] = {}
_ENTRY_POINT_GROUP = "fedhello.strategies"


def register_strategy(cls: type[AllocationStrategy]) -> type[AllocationStrategy]:
    if cls.name in _STRATEGIES and _STRATEGIES[cls.name] is not cls:
        raise ValueError(
            f"allocation strategy {cls.name!r} is already registered by {_STRATEGIES[cls.name].__module__}"
        )
    _STRATEGIES[cls.name] = cls
    return cls


def import_plugins(modules: list[str]) -> None:
    """Import plugin modules (this runs their code), from the installed packages or the current directory.

    Only commands that build a strategy (run, resume, compare, flower-app) call this; `report` never does.
    """
    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # `fedhello run` from the folder holding my_strategies.py finds it
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"config field 'allocation.plugins': cannot import {module!r} ({exc})") from None


def _load_builtin_and_entry_points() -> None:
    importlib.import_module("fedhello.allocation.strategies")
    for entry in entry_points(group=_ENTRY_POINT_GROUP):
        entry.load()


def all_strategies() -> dict[str, type[AllocationStrategy]]:
    _load_builtin_and_entry_points()
    return dict(sorted(_STRATEGIES.items()))


def get_strategy(name: str) -> type[AllocationStrategy]:
    strategies = all_strategies()
    if name not in strategies:
        raise ConfigError(
            f"config field 'allocation.strategy': unknown strategy {name!r}; available: {', '.join(strategies)}"
        )
    return strategies[name]


def build_strategy(name: str, params: dict) -> AllocationStrategy:
    cls = get_strategy(name)
    return cls(cls.parse_params(params))


def strategy_from_config(config: ExperimentConfig) -> AllocationStrategy:
    """The configured strategy, after importing plugins and checking what it needs from the config."""
    import_plugins(config.allocation.plugins)
    strategy = build_strategy(config.allocation.strategy, config.allocation.params)
    if strategy.uses_layer_scores and config.fisher.proxy_size == 0:
        raise ConfigError(
            f"config field 'fisher.proxy_size': strategy {strategy.name!r} scores layers on the server's proxy set; "
            "it must be at least 1"
        )
    memory = [budget for budget in config.groups.budgets if isinstance(budget, str)]
    if memory and not strategy.honours_memory_budgets:
        keeps = ", ".join(name for name, cls in all_strategies().items() if cls.honours_memory_budgets)
        raise ConfigError(
            f"config field 'allocation.strategy': {strategy.name!r} does not keep clients within the memory budgets "
            f"of 'groups.budgets' ({', '.join(memory)}); use layer-count budgets, or a strategy that does: {keeps}"
        )
    check_coverage_rule(config, strategy)
    check_private_strategy(config, strategy)
    return strategy
