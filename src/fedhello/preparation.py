"""Load what an experiment needs, the same way in every process that takes part in it.

The in-process engine calls `prepare_task` once; under Flower, the ServerApp calls it,
and each node loads only its own samples through `fedhello.node_preparation`, which reuses
`sample_positions` and `client_partition` (every random stream derives from the seed, so
they agree on the partition, the proxy set and the initial model). Everything
that can reject the configuration (checks that need the data or the model, such as
budgets against the number of layers) runs here, before any run directory exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedhello.allocation.base import ModelLayout
from fedhello.allocation.groups import needs_cost_model, resolve_budgets
from fedhello.config import ExperimentConfig
from fedhello.data.datasets import DatasetData, load_dataset
from fedhello.data.partition import partition_indices
from fedhello.data.splits import Split
from fedhello.errors import ConfigError
from fedhello.federation.client import ClientRuntime
from fedhello.federation.model_runtime import GlobalModelRuntime
from fedhello.models.federated_model import FederatedModel
from fedhello.resources.cost_model import CostModel
from fedhello.resources.probe import cost_model_for
from fedhello.seeding import numpy_rng
from fedhello.tasks import EvaluationSettings, task_for


@dataclass
class FederatedTask:
    """Everything a federated run needs that does not change across rounds."""

    federated: FederatedModel
    train: Split
    test: Split
    proxy: Split | None
    client_indices: list[np.ndarray]
    label_names: tuple[str, ...]
    costs: CostModel | None = None  # measured when a budget is a memory size or the strategy prices layer sets

    def layout(self) -> ModelLayout:
        return ModelLayout(self.federated.layer_map, self.federated.head_names, self.federated.state(), self.costs)

    def client_runtime(self, config: ExperimentConfig) -> ClientRuntime:
        return ClientRuntime.from_config(config, self.federated, self.train, self.test, self.client_indices)

    def global_runtime(self, config: ExperimentConfig) -> GlobalModelRuntime:
        return GlobalModelRuntime(
            self.federated,
            self.test,
            self.proxy,
            EvaluationSettings.from_config(config),
            config.fisher.batch_size,
            config.fisher.objective,
        )


def select_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config field 'device': 'cuda' was requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _check_against_data(config: ExperimentConfig, num_train: int, num_classes: int) -> None:
    federation, partition = config.federation, config.partition
    if partition.scheme == "pathological" and partition.classes_per_client > num_classes:
        raise ConfigError(
            f"config field 'partition.classes_per_client': {partition.classes_per_client} exceeds the "
            f"{num_classes} classes of {config.data.dataset}"
        )
    if federation.num_clients > num_train:
        raise ConfigError(
            f"config field 'federation.num_clients': {federation.num_clients} exceeds {num_train} training samples"
        )


def _capped(size: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """All positions, or a seeded sorted subsample of `cap` of them."""
    if cap is None or cap >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, cap, replace=False))


@dataclass(frozen=True)
class SamplePositions:
    """Which dataset samples a run uses: the clients' and the proxy set's (train split), the test samples."""

    clients: np.ndarray  # sorted; client i's samples are clients[client_partition(...)[i]]
    proxy: np.ndarray
    test: np.ndarray


def sample_positions(config: ExperimentConfig, data: DatasetData) -> SamplePositions:
    """The seeded train/test subsamples and the proxy split, checked against the data (no encoding)."""
    check_label_set(config, data.label_names)
    train_positions = _capped(data.num_train, config.data.max_train_samples, numpy_rng(config.seed, "partition", 1))
    test_positions = _capped(data.num_test, config.data.max_test_samples, numpy_rng(config.seed, "eval", 1))
    proxy_size = config.fisher.proxy_size
    if proxy_size >= len(train_positions):
        raise ConfigError(f"config field 'fisher.proxy_size': {proxy_size} leaves no training data for the clients")
    shuffled = numpy_rng(config.seed, "proxy").permutation(train_positions)
    proxy_positions, client_positions = np.sort(shuffled[:proxy_size]), np.sort(shuffled[proxy_size:])
    _check_against_data(config, len(client_positions), data.num_classes)
    return SamplePositions(client_positions, proxy_positions, test_positions)


def client_partition(config: ExperimentConfig, classes: np.ndarray) -> list[np.ndarray]:
    """Each client's positions among the clients' samples (whose classes are `classes`), seeded."""
    partition = config.partition
    client_indices = partition_indices(
        classes,
        config.federation.num_clients,
        partition.scheme,
        numpy_rng(config.seed, "partition"),
        classes_per_client=partition.classes_per_client,
        min_per_client=partition.min_per_client,
        alpha=partition.alpha,
    )
    empty = [client for client, indices in enumerate(client_indices) if len(indices) == 0]
    if empty:
        raise ConfigError(
            f"config field 'partition': the {partition.scheme} partition leaves {len(empty)} of "
            f"{config.federation.num_clients} clients (e.g. client {empty[0]}) with no training samples; "
            "use fewer clients, more data, or a larger partition.min_per_client / partition.alpha"
        )
    return client_indices


def check_label_set(config: ExperimentConfig, label_names: tuple[str, ...]) -> None:
    """`data.labels`, when set, must be the dataset's label names in the dataset's order (one head for all)."""
    if config.data.labels is not None and tuple(config.data.labels) != tuple(label_names):
        shown = ", ".join(label_names[:8]) + (", ..." if len(label_names) > 8 else "")
        raise ConfigError(
            f"config field 'data.labels': must list dataset {config.data.dataset!r}'s {len(label_names)} "
            f"labels in its order ({shown}), or be null"
        )


def prepare_task(
    config: ExperimentConfig,
    *,
    strategy_uses_costs: bool = False,
    cost_cache: Path | None = None,
    costs: CostModel | None = None,
    measure_costs: bool = True,
) -> FederatedTask:
    """Load data and model, split off the proxy set, partition the rest among clients.

    With memory budgets (or a strategy that prices layer sets) it also measures the cost
    model on a real training batch, or reuses `cost_cache` when it was measured for the same
    model and input shape (or takes `costs`, measured by the launcher), and checks every budget
    against it. Only the server prices layer sets and checks budgets.
    """
    data = load_dataset(config.data.dataset)
    positions = sample_positions(config, data)
    client_positions, proxy_size = positions.clients, config.fisher.proxy_size
    task = task_for(config.model.task)
    if not isinstance(data, task.data_type):
        raise ConfigError(
            f"config field 'model.task': {config.model.task} does not fit dataset {config.data.dataset!r} "
            f"({type(data).__name__}); see `fedhello tasks`"
        )
    federated = task.load_model(config, data.num_classes, select_device(config.device))
    num_layers = federated.layer_map.num_layers
    resolve_budgets([budget for budget in config.groups.budgets if not isinstance(budget, str)], num_layers)
    train = task.encode(federated, data, "train", client_positions, config)
    measured = None
    if measure_costs and (needs_cost_model(config.groups.budgets) or strategy_uses_costs):
        measured = cost_model_for(config, federated, train, cost_cache, known=costs)
        resolve_budgets(config.groups.budgets, num_layers, measured)
    test = task.encode(federated, data, "test", positions.test, config)
    proxy = task.encode(federated, data, "train", positions.proxy, config) if proxy_size else None
    client_indices = client_partition(config, train.classes.numpy())
    return FederatedTask(federated, train, test, proxy, client_indices, data.label_names, measured)
