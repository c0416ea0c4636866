"""Measure a model's cost model once per model and input shape, with a real client batch.

The probe runs forward passes only (saved activations are recorded during the forward
pass) with the `SavedActivationMeter` that local training uses, in train mode and under
the run's autocast, so a client's measured activation bytes equal the cost model's for the
same layer set and batch shape. Per layer l it trains l alone and l..L-1: 2L forward
passes, about a training step's worth of compute for L = 6. Results are cached as
`costs.json` in the run directory and reused when the key (model, task, LoRA, input
shape, precision, device) matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedhello.config import ExperimentConfig
from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.precision import Precision, autocast_for
from fedhello.resources.cost_model import CostModel, trained_state_bytes
from fedhello.tensor_state import state_bytes
from fedhello.training import SavedActivationMeter

COST_FILE = "costs.json"


def largest_batch(train: Split, batch_size: int) -> dict[str, torch.Tensor]:
    """A real training batch of `batch_size` samples; with variable lengths, the longest samples.

    Instruction batches are cut to their longest sequence, so the longest samples give
    the largest batch a client can draw; fixed-shape data (padded text, images) takes the first samples.
    """
    lengths = getattr(train, "attention_mask", None)
    size = min(batch_size, len(train))
    if lengths is None:
        return train.batch(np.arange(size))
    longest = np.argsort(-lengths.sum(dim=1).numpy(), kind="stable")[:size]
    return train.batch(np.sort(longest))


def _saved_bytes(
    federated: FederatedModel,
    batch: dict[str, torch.Tensor],
    layers: list[int],
    precision: Precision,
    head: tuple[str, ...],
) -> int:
    federated.set_trainable(federated.layer_map.names_for(layers) + list(head))
    meter = SavedActivationMeter(federated.model)
    with meter.step(), autocast_for(federated.device, precision):
        federated.task.loss(federated.model, batch)
    return meter.peak_bytes


def probe_costs(
    federated: FederatedModel,
    batch: dict[str, torch.Tensor],
    precision: Precision,
    key: dict[str, Any],
    train_head: bool = True,
) -> CostModel:
    """Measure `lowest_activation` (layer l alone) and `added_activation` (suffix differences) per layer."""
    head = federated.head_names if train_head else ()
    num_layers = federated.layer_map.num_layers
    batch = {name: value.to(federated.device) for name, value in batch.items()}
    federated.model.train()
    with torch.random.fork_rng(devices=[federated.device] if federated.device.type == "cuda" else []):
        alone = [_saved_bytes(federated, batch, [layer], precision, head) for layer in range(num_layers)]
        suffix = [
            _saved_bytes(federated, batch, list(range(layer, num_layers)), precision, head)
            for layer in range(num_layers)
        ]
    federated.set_trainable(())
    above = [
        total - single for total, single in zip(suffix, alone, strict=True)
    ]  # what the layers above l add to l alone
    added = [0] + [above[layer - 1] - above[layer] for layer in range(1, num_layers)]
    parameters = federated.parameters_by_name()

    def tensors(names) -> dict[str, torch.Tensor]:
        return {name: parameters[name] for name in names}

    layers = [tensors(federated.layer_map.names_for([layer])) for layer in range(num_layers)]
    head_tensors = tensors(head)
    return CostModel(
        key=key,
        lowest_activation=alone,
        added_activation=added,
        layer_state=[trained_state_bytes(layer.values()) for layer in layers],
        layer_upload=[state_bytes(layer) for layer in layers],
        head_state=trained_state_bytes(head_tensors.values()),
        head_upload=state_bytes(head_tensors),
    )


def cost_key(config: ExperimentConfig, federated: FederatedModel, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Everything the measurements depend on."""
    return {
        "model": config.model.name,
        "task": config.model.task,
        "lora": {
            "rank": config.lora.rank,
            "target_modules": config.lora.target_modules,
            "dropout": config.lora.dropout,
        },
        "train_pooler": config.model.train_pooler,
        "head": config.training.head,
        "batch": {name: list(value.shape) for name, value in sorted(batch.items())},
        "precision": config.precision,
        "device": federated.device.type,
    }


def cost_model_for(
    config: ExperimentConfig,
    federated: FederatedModel,
    train: Split,
    cache: Path | None = None,
    known: CostModel | None = None,
) -> CostModel:
    """`known` or the cached cost model when either was measured with the same key, otherwise a fresh probe."""
    batch = largest_batch(train, config.training.batch_size)
    key = cost_key(config, federated, batch)
    if known is not None and known.key == key:
        return known
    if cache is not None and cache.is_file():
        cached = CostModel.load(cache)
        if cached.key == key:
            return cached
    return probe_costs(federated, batch, config.precision, key, train_head=config.training.head != "frozen")
