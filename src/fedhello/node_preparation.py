"""What one Flower node loads: its own samples only, encoded once and cached on its own disk.

A node trains either on its own data file (node config `data-path`, formats in
`fedhello.data.node_files`) or, without one, on its shard of the simulated partition
(`partition-id`). Either way the encoded samples are cached as safetensors under the node's
cache folder, keyed by the file's content hash (or the partition's config fields) and by
the model, task and encoding settings; a later message loads the cache and never reads the
dataset. The test set is encoded only for a node that evaluates a personal model on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedhello.config import ExperimentConfig, config_to_yaml
from fedhello.data.datasets import DatasetData, load_dataset
from fedhello.data.images import ImageSplit
from fedhello.data.instruction_encoding import InstructionSplit
from fedhello.data.instructions import InstructionData
from fedhello.data.node_files import read_node_file, write_node_file
from fedhello.data.splits import Split
from fedhello.data.tokenize import EncodedSplit
from fedhello.errors import NodeDataError
from fedhello.federation.client import ClientRuntime
from fedhello.models.federated_model import FederatedModel
from fedhello.models.gguf import cache_root
from fedhello.preparation import client_partition, sample_positions, select_device
from fedhello.tasks import task_for
from fedhello.tensor_state import TensorState

CACHE_FORMAT = 1
SPLIT_TYPES = {split.__name__: split for split in (EncodedSplit, ImageSplit, InstructionSplit)}


def default_cache_dir() -> Path:
    return cache_root() / "node-data"


def train_classes(data: DatasetData) -> np.ndarray:
    """The class of every training sample (label, or an instruction pair's category), before encoding."""
    return data.train_categories if isinstance(data, InstructionData) else data.train_labels


def client_positions(config: ExperimentConfig, data: DatasetData) -> list[np.ndarray]:
    """Each simulated client's dataset positions (train split), in the order its samples are numbered."""
    positions = sample_positions(config, data)
    return [positions.clients[indices] for indices in client_partition(config, train_classes(data)[positions.clients])]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(config: ExperimentConfig, source: dict) -> str:
    """Which encoded samples: their source (file hash or partition) and everything the encoding depends on."""
    model = config.model
    encoding = {
        "format": CACHE_FORMAT,
        "source": source,
        "model": [model.name, model.task, model.max_length, model.system_prompt],
        "labels": [config.data.dataset, config.data.labels],
    }
    return hashlib.sha256(json.dumps(encoding, sort_keys=True).encode()).hexdigest()[:24]


def save_split(path: Path, split: Split, label_names: tuple[str, ...]) -> None:
    """A split's tensors as safetensors, its other fields and the label set as JSON metadata; atomic."""
    if not is_dataclass(split):
        raise TypeError(f"{type(split).__name__} is not a dataclass split")
    values = {field.name: getattr(split, field.name) for field in fields(split)}
    tensors = {name: value.contiguous().clone() for name, value in values.items() if isinstance(value, torch.Tensor)}
    others = {name: value for name, value in values.items() if name not in tensors}
    metadata = {"split": type(split).__name__, "fields": json.dumps(others), "labels": json.dumps(label_names)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    save_file(tensors, partial, metadata=metadata)
    os.replace(partial, path)


def load_split(path: Path) -> tuple[Split, tuple[str, ...]]:
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
        names = handle.keys()
        values = {name: handle.get_tensor(name) for name in names}
    split_type = SPLIT_TYPES[metadata["split"]]
    tuple_fields = {field.name for field in fields(split_type) if str(field.type).startswith("tuple")}
    for name, value in json.loads(metadata["fields"]).items():
        values[name] = tuple(value) if name in tuple_fields else value
    return split_type(**values), tuple(json.loads(metadata["labels"]))


def label_names_for(config: ExperimentConfig) -> tuple[str, ...]:
    """The run's label set: `data.labels`, else the dataset's own label names (which reads the dataset)."""
    if config.data.labels is not None:
        return tuple(config.data.labels)
    return load_dataset(config.data.dataset).label_names


def _node_file_source(config: ExperimentConfig, data_path: Path) -> dict:
    if not data_path.is_file():
        raise NodeDataError(f"{data_path}: no such file (node config data-path)")
    return {"file_sha256": _file_sha256(data_path), "suffix": data_path.suffix}


def _partition_source(config: ExperimentConfig, client_id: int, split: str) -> dict:
    fields_used = {section: getattr(config, section).model_dump() for section in ("data", "partition")}
    return {
        "client": client_id,
        "split": split,
        "seed": config.seed,
        "num_clients": config.federation.num_clients,
        "proxy_size": config.fisher.proxy_size,
        **fields_used,
    }


class NodeSamples:
    """Encodes (or loads from the cache) what one node trains and evaluates on."""

    def __init__(
        self, config: ExperimentConfig, client_id: int, data_path: Path | None, cache_dir: Path | None
    ) -> None:
        self.config, self.client_id, self.data_path, self.cache_dir = config, client_id, data_path, cache_dir
        self._dataset: DatasetData | None = None

    def dataset(self) -> DatasetData:
        if self._dataset is None:
            self._dataset = load_dataset(self.config.data.dataset)
        return self._dataset

    def _raw(
        self, split: str, label_names: tuple[str, ...]
    ) -> tuple[DatasetData, np.ndarray, Literal["train", "test"]]:
        """The data to encode, the positions to encode and which of its splits they index."""
        if self.data_path is not None:
            data = read_node_file(self.data_path, self.config.model.task, label_names)
            return data, np.arange(data.num_train), "train"
        data = self.dataset()
        if split == "test":
            return data, sample_positions(self.config, data).test, "test"
        return data, client_positions(self.config, data)[self.client_id], "train"

    def _source(self, split: str) -> dict:
        if self.data_path is not None:
            return _node_file_source(self.config, self.data_path)
        return _partition_source(self.config, self.client_id, split)

    def cached(self, split: str) -> tuple[Path | None, Split | None, tuple[str, ...] | None]:
        """(cache file, its split and label set if it exists); no file without a cache folder."""
        if self.cache_dir is None:
            return None, None, None
        path = self.cache_dir / f"{cache_key(self.config, self._source(split))}.safetensors"
        if path.is_file():
            return path, *load_split(path)
        return path, None, None

    def encode(self, federated: FederatedModel, split: str, label_names: tuple[str, ...], path: Path | None) -> Split:
        data, positions, data_split = self._raw(split, label_names)
        encoded = federated.task.encode(federated, data, data_split, positions, self.config)
        if path is not None:
            save_split(path, encoded, label_names)
        return encoded

    def label_names(self) -> tuple[str, ...]:
        if self.data_path is None and self.config.data.labels is None:
            return self.dataset().label_names
        return label_names_for(self.config)


def export_partitions(config: ExperimentConfig, out_dir: Path) -> Path:
    """One node data file per simulated client (its samples in the client's order) and `manifest.json`."""
    data = load_dataset(config.data.dataset)
    per_client = client_positions(config, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for client, positions in enumerate(per_client):
        path = write_node_file(out_dir / f"client-{client:03d}", data, positions)
        files.append(
            {"partition_id": client, "file": path.name, "samples": len(positions), "sha256": _file_sha256(path)}
        )
    manifest = {
        "dataset": config.data.dataset,
        "task": config.model.task,
        "labels": list(data.label_names),
        "seed": config.seed,
        "partition": config.partition.model_dump(),
        "num_clients": config.federation.num_clients,
        "files": files,
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest_path


_MODELS: dict[str, tuple[FederatedModel, TensorState]] = {}


def shared_model(config: ExperimentConfig, num_classes: int) -> tuple[FederatedModel, TensorState]:
    """The frozen base with LoRA and its state as loaded, once per process for all the clients it serves."""
    key = hashlib.sha256(f"{config_to_yaml(config)}|{num_classes}".encode()).hexdigest()
    if key not in _MODELS:
        federated = task_for(config.model.task).load_model(config, num_classes, select_device(config.device))
        _MODELS[key] = federated, federated.state()
    return _MODELS[key]


def prepare_client(
    config: ExperimentConfig,
    client_id: int,
    *,
    data_path: Path | None = None,
    cache_dir: Path | None = None,
    with_test: bool = False,
) -> ClientRuntime:
    """One node's runtime: the frozen base with LoRA and only this client's encoded samples.

    Its samples are numbered 0..n-1 in file (or partition) order, so training draws the
    same batches as the simulated client with the same samples. `with_test` adds the
    test set (personal-model evaluation); a node with its own data file has none.
    Without `cache_dir` nothing is cached on disk (Flower's simulation keeps its processes).
    """
    samples = NodeSamples(config, client_id, data_path, cache_dir)
    train_path, train, label_names = samples.cached("train")
    if label_names is None:
        label_names = samples.label_names()
    federated, initial_state = shared_model(config, len(label_names))
    if train is None:
        train = samples.encode(federated, "train", label_names, train_path)
    test = None
    if with_test and data_path is None:
        test_path, test, _ = samples.cached("test")
        if test is None:
            test = samples.encode(federated, "test", label_names, test_path)
    runtime = ClientRuntime.from_config(config, federated, train, test, {client_id: np.arange(len(train))})
    runtime.initial_state = initial_state  # the model may be shared with clients that already trained on it
    return runtime
