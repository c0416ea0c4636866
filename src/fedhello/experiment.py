"""One prepared experiment per process: strategy, task, capability groups, layout and cost model.

`prepare_experiment` builds everything a server needs exactly once — the strategy from
the config, the task (data, model, partition, proxy set), the cost model (measured, or
taken from the launcher or a run directory instead of probing again) and the resolved
capability groups — and every driver (the in-process engine, the Flower ServerApp, the
launcher) receives this one object instead of building its own copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from fedhello.allocation.base import AllocationStrategy, ModelLayout
from fedhello.allocation.groups import CapabilityGroups
from fedhello.allocation.registry import strategy_from_config
from fedhello.config import ExperimentConfig
from fedhello.preparation import FederatedTask, prepare_task
from fedhello.privacy.mechanism import PrivateAggregator
from fedhello.resources.cost_model import CostModel


@dataclass
class PreparedExperiment:
    config: ExperimentConfig
    strategy: AllocationStrategy
    task: FederatedTask
    groups: CapabilityGroups

    @property
    def costs(self) -> CostModel | None:
        return self.task.costs

    def layout(self) -> ModelLayout:
        return self.task.layout()

    @classmethod
    def from_task(
        cls, config: ExperimentConfig, strategy: AllocationStrategy, task: FederatedTask
    ) -> PreparedExperiment:
        """The experiment over an already loaded task, with the config's capability groups."""
        return cls(
            config, strategy, task, CapabilityGroups.resolve(config, task.federated.layer_map.num_layers, task.costs)
        )

    def with_groups(self, groups: CapabilityGroups) -> PreparedExperiment:
        return replace(self, groups=groups)


def client_state_kind(config: ExperimentConfig, strategy: AllocationStrategy) -> str | None:
    """What clients keep between rounds: personal models, local heads, or nothing (None)."""
    if strategy.personal_models:
        return "personal models"
    return "local heads" if config.training.head == "local" else None


def prepare_experiment(
    config: ExperimentConfig, *, costs: CostModel | None = None, cost_cache: Path | None = None
) -> PreparedExperiment:
    """Everything the server side of one run needs; every config check that needs data or model runs here.

    `costs` is a cost model already measured for this config (the launcher hands it to a
    ServerApp); `cost_cache` a file that may hold one (a run directory's `costs.json`).
    """
    strategy = strategy_from_config(config)
    if config.privacy.enabled:  # solves (and caches) the noise, so an impossible setting stops before any file
        PrivateAggregator.from_config(config)
    task = prepare_task(config, strategy_uses_costs=strategy.uses_costs, cost_cache=cost_cache, costs=costs)
    return PreparedExperiment.from_task(config, strategy, task)
