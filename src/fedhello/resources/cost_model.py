"""The price of training a layer set: activation, gradient and optimiser bytes, upload, time.

A client that trains a layer set saves activations for the backward pass only from its
lowest trained layer up (the layers below run frozen, see `fedhello.training`), so the
activation bytes are the lowest layer's price plus a little for every further trained
layer above it (the inputs its LoRA factors need for their gradients):

    activation(S) = lowest[min S] + sum(added[j] for j in S, j > min S)

`lowest[l]` is measured by training layer l alone, `added[j]` from the difference of
training layers j-1..L-1 and j..L-1 (see `fedhello.resources.probe`); the formula is exact
for single layers and for every suffix, and to the byte for every other set on the models
the tests check (the probe's batch; batches other than it save no more). On
every model measured, `lowest[l]` is a per-layer constant times L - l plus the head's
part, so the cost depends mainly on the lowest trained layer.

The trained tensors (the layers' LoRA factors and the head) add their gradient and two
AdamW states in fp32; that, plus the activations, is the client's *peak training memory
above the shared frozen model*, which memory budgets bound. Step time is modelled, not
measured: the forward pass runs through every layer, the backward pass (about twice a
forward) only through the part that saves activations, so relative time is
(1 + 2 * activation(S) / activation(all)) / 3.

A depth-reduced client (FedRA as published, `depth_reduced=True`) runs only its k
allocated blocks, all trained: the same graph as training the top k blocks of the full
model (the blocks are alike), so its activation bytes are the top-k suffix's,
whichever k blocks it holds, and forward and backward both shrink with it:
relative time is activation(top k) / activation(all).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ADAMW_STATE_BYTES_PER_PARAMETER = 8  # exp_avg and exp_avg_sq in fp32


def trained_state_bytes(tensors: Iterable[Any]) -> int:
    """Gradient (the tensor's dtype) and AdamW-state bytes of the trained tensors."""
    return sum(tensor.numel() * (tensor.element_size() + ADAMW_STATE_BYTES_PER_PARAMETER) for tensor in tensors)


@dataclass(frozen=True)
class LayerSetCost:
    activation_bytes: int
    state_bytes: int  # gradients + AdamW states of the trained tensors
    upload_bytes: int
    relative_time: float  # step time relative to training every layer

    @property
    def peak_bytes(self) -> int:
        """Peak training memory above the frozen model: what a memory budget bounds."""
        return self.activation_bytes + self.state_bytes


@dataclass(frozen=True)
class CostModel:
    """Per-layer measurements of one model and input shape; `key` says which (cache check)."""

    key: dict[str, Any]
    lowest_activation: list[int]  # bytes saved for backward when layer l is trained alone
    added_activation: list[int]  # bytes training layer j adds when a lower layer is trained too
    layer_state: list[int]  # gradient + AdamW bytes of layer l's LoRA tensors
    layer_upload: list[int]  # bytes of layer l's LoRA tensors (what a client uploads for it)
    head_state: int
    head_upload: int
    depth_reduced: bool = False  # price sets for clients that run only their allocated blocks

    @property
    def num_layers(self) -> int:
        return len(self.lowest_activation)

    def for_depth_reduced(self) -> CostModel:
        """The same measurements, pricing layer sets for clients that run only their allocated blocks."""
        return replace(self, depth_reduced=True)

    def _activation(self, chosen: list[int]) -> int:
        return self.lowest_activation[chosen[0]] + sum(self.added_activation[j] for j in chosen[1:])

    def cost(self, layers: Iterable[int]) -> LayerSetCost:
        chosen = sorted(set(layers))
        if not chosen:
            return LayerSetCost(0, 0, 0, 0.0)
        everything = self._activation(list(range(self.num_layers)))
        if self.depth_reduced:
            activation = self._activation(list(range(self.num_layers - len(chosen), self.num_layers)))
            relative_time = activation / everything
        else:
            activation = self._activation(chosen)
            relative_time = (1 + 2 * activation / everything) / 3
        return LayerSetCost(
            activation_bytes=activation,
            state_bytes=self.head_state + sum(self.layer_state[j] for j in chosen),
            upload_bytes=self.head_upload + sum(self.layer_upload[j] for j in chosen),
            relative_time=relative_time,
        )

    def peak_bytes(self, layers: Iterable[int]) -> int:
        return self.cost(layers).peak_bytes

    def deepest_first(self, budget_bytes: int) -> tuple[int, ...]:
        """The most layers a budget buys: the longest top suffix l..L-1 that fits (empty if none)."""
        for lowest in range(self.num_layers):
            layers = tuple(range(lowest, self.num_layers))
            if self.peak_bytes(layers) <= budget_bytes:
                return layers
        return ()

    def cheapest(self) -> tuple[int, int]:
        """(layer, peak bytes) of the cheapest useful set: the single layer that costs least (the top one)."""
        return min(((layer, self.peak_bytes([layer])) for layer in range(self.num_layers)), key=lambda pair: pair[1])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CostModel:
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> CostModel:
        return cls.from_json(json.loads(path.read_text()))
