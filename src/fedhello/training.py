"""Local training of one client on its allocated layers.

Only allocated LoRA tensors (and the head) get `requires_grad=True`; the optimiser sees
only those. Because the base weights, the embeddings and every LoRA tensor below the
lowest allocated layer are frozen, no activation below that layer requires grad, so
autograd records nothing there: the backward pass stops at the lowest allocated layer
and the activations below it are never kept. That is where the savings come from.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.precision import Precision, autocast_for


class SavedActivationMeter:
    """Measures the bytes autograd saves for backward (activations, not parameters).

    Uses `torch.autograd.graph.saved_tensors_hooks`: every tensor saved for backward
    passes through the pack hook; storages are counted once, and storages that belong
    to model parameters are skipped because they are not activation memory.
    """

    def __init__(self, model: nn.Module) -> None:
        self._parameter_storages = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
        self._seen: set[int] = set()
        self.current_bytes = 0
        self.peak_bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self._parameter_storages and pointer not in self._seen:
            self._seen.add(pointer)
            self.current_bytes += storage.nbytes()
        # Detached: a saved output kept as itself would reference its own grad_fn, a cycle that keeps a forward
        # pass's activations alive until a backward frees them (the cost probe runs forward passes only).
        return tensor.detach()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Wrap one forward pass; the peak keeps the largest step seen."""
        self._seen.clear()
        self.current_bytes = 0
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)


def metered_loss(
    federated: FederatedModel, batch: dict[str, torch.Tensor], precision: Precision, meter: SavedActivationMeter
) -> torch.Tensor:
    """The training loss of one batch, with `meter` counting what its forward pass saves for backward.

    Local training and the cost probe (`fedhello.resources.probe`) both run this, so the
    probe prices exactly the graph a training step builds.
    """
    with meter.step(), autocast_for(federated.device, precision):
        return federated.task.loss(federated.model, batch)


@dataclass(frozen=True)
class LocalTrainingSettings:
    lr: float
    weight_decay: float
    batch_size: int
    local_epochs: int
    max_local_steps: int | None
    max_grad_norm: float | None
    precision: Precision = "auto"  # autocast of the forward pass (see autocast_for)


@dataclass(frozen=True)
class LocalTrainingResult:
    steps: int
    mean_loss: float
    samples_seen: int
    wall_time_s: float
    activation_bytes: int


def local_batches(
    num_samples: int, settings: LocalTrainingSettings, generator: torch.Generator
) -> Iterator[np.ndarray]:
    """Shuffled mini-batch positions for the client's local epochs, cut at max_local_steps."""
    steps = 0
    for _ in range(settings.local_epochs):
        order = torch.randperm(num_samples, generator=generator).numpy()
        for start in range(0, num_samples, settings.batch_size):
            if settings.max_local_steps is not None and steps >= settings.max_local_steps:
                return
            yield order[start : start + settings.batch_size]
            steps += 1


def train_locally(
    federated: FederatedModel,
    data: Split,
    sample_indices: np.ndarray,
    trainable_names: list[str],
    settings: LocalTrainingSettings,
    generator: torch.Generator,
    gradient_masks: dict[str, torch.Tensor] | None = None,
) -> LocalTrainingResult:
    """Train the named parameters in place on the client's samples; return what it cost.

    `gradient_masks` zero the gradient outside a client's part of a tensor (a reduced
    LoRA rank); with zero gradient and zero value, AdamW leaves those entries at zero.
    """
    started = time.perf_counter()
    model = federated.model
    device = federated.device
    parameters = federated.set_trainable(trainable_names)
    by_name = federated.parameters_by_name()
    hooks = [
        by_name[name].register_hook(functools.partial(torch.mul, other=mask.to(device)))
        for name, mask in (gradient_masks or {}).items()
    ]
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    meter = SavedActivationMeter(model)
    model.train()
    losses: list[float] = []
    seen = 0
    for positions in local_batches(len(sample_indices), settings, generator):
        batch = {key: value.to(device) for key, value in data.batch(sample_indices[positions]).items()}
        loss = metered_loss(federated, batch, settings.precision, meter)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
        seen += len(positions)
    for hook in hooks:
        hook.remove()
    federated.set_trainable(())
    return LocalTrainingResult(
        steps=len(losses),
        mean_loss=float(np.mean(losses)) if losses else float("nan"),
        samples_seen=seen,
        wall_time_s=time.perf_counter() - started,
        activation_bytes=meter.peak_bytes,
    )
