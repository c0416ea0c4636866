"""Measure a model's cost model once per model and input shape, with a real client batch.

The probe runs forward passes only (saved activations are recorded during the forward
pass) through `fedhello.training.metered_loss`, the function local training runs, in train
mode and under the run's autocast, so a client's measured activation bytes equal the cost
model's for the same layer set and batch shape. Per layer l it trains l alone and l..L-1:
2L forward passes, about a training step's worth of compute for L = 6. Results are cached
as `costs.json` in the run directory and reused when the key (model, task, LoRA, input
shape, padding, precision, device) matches.

The batch is the costliest one a client can draw: the longest samples, and padded when the
split holds padded samples. What a step saves depends on the batch's shape and on whether it
carries padding, not on its values: a padded batch hands attention an explicit mask, which
the backward pass keeps (one float mask per layer), and Hugging Face's SDPA attention then
repeats grouped key/value heads to the full head count before the kernel instead of passing
`enable_gqa`, so keys and values are saved at the query's head count (SmolLM2-135M, 9 query
and 3 key/value heads: 8.7% more activation bytes than an unpadded batch of the same width).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedhello.config import ExperimentConfig
from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.precision import Precision
from fedhello.resources.cost_model import CostModel, trained_state_bytes
from fedhello.tensor_state import state_bytes
from fedhello.training import SavedActivationMeter, metered_loss

COST_FILE = "costs.json"


def largest_batch(train: Split, batch_size: int) -> dict[str, torch.Tensor]:
    """The costliest real training batch of `batch_size` samples (see the module docstring).

    Instruction batches are cut to their longest sequence, so the longest samples give the
    widest batch; if those carry no padding but shorter samples exist, the shortest takes the
    last place, which keeps the width and adds padding. Fixed-shape data (images) takes the
    first samples.
    """
    mask = getattr(train, "attention_mask", None)
    size = min(batch_size, len(train))
    if mask is None:
        return train.batch(np.arange(size))
    order = np.argsort(-mask.sum(dim=1).numpy(), kind="stable")
    longest = train.batch(np.sort(order[:size]))
    if size == 0 or not longest["attention_mask"].all():
        return longest
    padded = train.batch(np.sort(np.append(order[: size - 1], order[-1])))
    same_width = padded["input_ids"].shape == longest["input_ids"].shape
    return padded if same_width and not padded["attention_mask"].all() else longest


def is_padded(batch: dict[str, torch.Tensor]) -> bool:
    return "attention_mask" in batch and not bool(batch["attention_mask"].all())


def _saved_bytes(
    federated: FederatedModel,
    batch: dict[str, torch.Tensor],
    layers: list[int],
    precision: Precision,
    head: tuple[str, ...],
) -> int:
    federated.set_trainable(federated.layer_map.names_for(layers) + list(head))
    meter = SavedActivationMeter(federated.model)
    metered_loss(federated, batch, precision, meter)
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
        "padded": is_padded(batch),
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
