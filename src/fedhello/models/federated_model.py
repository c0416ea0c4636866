"""One frozen base model with LoRA, and the small trainable state that clients exchange.

The simulator keeps exactly one `FederatedModel` in memory. Clients and the server hold
only dictionaries of the trainable tensors (LoRA factors and the head) and load them
into this model in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import peft
import torch
from torch import nn

from fedhello.models.layers import LayerMap, build_layer_map
from fedhello.tensor_state import TensorState

if TYPE_CHECKING:
    from fedhello.tasks.base import Task


class GloballyKeyedBlocks(nn.ModuleList):
    """Some of a model's blocks, in order, registered under their global indices; indexed by position.

    The keys keep parameter names global (`layer.3` stays `layer.3` when it runs second);
    iterating, slicing and `blocks[i]` go by position, as in a list of just these blocks.
    """

    def __init__(self, blocks: nn.ModuleList, indices: Iterable[int]) -> None:
        super().__init__()
        for index in sorted(set(indices)):
            self.add_module(str(index), blocks[index])

    def __getitem__(self, position: Any) -> Any:
        blocks = list(self._modules.values())[position]
        return nn.ModuleList(blocks) if isinstance(position, slice) else blocks


@dataclass
class FederatedModel:
    model: peft.PeftModel
    layer_map: LayerMap
    head_names: tuple[str, ...]
    task: Task  # owns the loss, the metrics and the Fisher objective
    preprocessor: Any = None  # tokenizer or image processor

    @classmethod
    def wrap(
        cls, model: peft.PeftModel, task: Task, head_names: tuple[str, ...] = (), preprocessor: Any = None
    ) -> FederatedModel:
        return cls(model, build_layer_map(model), head_names, task, preprocessor)

    @property
    def exchanged_names(self) -> tuple[str, ...]:
        """Everything the server and clients exchange: all LoRA tensors and the head."""
        return self.layer_map.all_names + self.head_names

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def parameters_by_name(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters())

    def state(self, names: Iterable[str] | None = None) -> TensorState:
        parameters = self.parameters_by_name()
        return {name: parameters[name].detach().clone() for name in (self.exchanged_names if names is None else names)}

    @torch.no_grad()
    def load_state(self, state: TensorState) -> None:
        parameters = self.parameters_by_name()
        for name, tensor in state.items():
            parameters[name].copy_(tensor)

    @contextmanager
    def merged_deltas(self, deltas: TensorState) -> Iterator[None]:
        """Temporarily evaluate full-size updates ΔW in place of some modules' LoRA products.

        `deltas` maps a LoRA A factor's name to a ΔW of the base weight's shape. Inside the
        block that module computes (W0 + scaling·ΔW) x with its LoRA branch off (B = 0);
        afterwards W0 and B are restored bit for bit. This is how a global model that is
        not a rank-r LoRA (FlexLoRA's averaged ΔW, of rank up to the sum of the clients'
        ranks) is evaluated with the LoRA model.
        """
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        try:
            with torch.no_grad():
                for a_name, delta in deltas.items():
                    module_path, rest = a_name.split(".lora_A.", 1)
                    adapter = rest.split(".", 1)[0]
                    module: Any = self.model.get_submodule(module_path)  # a peft LoRA layer: dynamic attributes
                    base = module.get_base_layer().weight
                    lora_b = module.lora_B[adapter].weight
                    if tuple(delta.shape) != tuple(base.shape):
                        raise ValueError(
                            f"{a_name}: ΔW of shape {tuple(delta.shape)} for a base weight {tuple(base.shape)}"
                        )
                    saved += [(base, base.detach().clone()), (lora_b, lora_b.detach().clone())]
                    base.add_(delta.to(base.device, base.dtype), alpha=float(module.scaling[adapter]))
                    lora_b.zero_()
            yield
        finally:
            with torch.no_grad():
                for parameter, original in reversed(saved):
                    parameter.copy_(original)

    @contextmanager
    def only_blocks(self, layers: Iterable[int]) -> Iterator[None]:
        """Temporarily run a shallower model of only the blocks `layers`, in their original order.

        The transformer blocks' ModuleList is swapped for a `GloballyKeyedBlocks` of the same
        block objects (no weights are copied), so parameter names, and the tensors a client
        returns, stay those of the full model. Llama's `layer_idx` only addresses the KV
        cache, which holds a slot for every global index. The full list is back afterwards,
        also after an exception.
        """
        parent_name, _, attribute = self.layer_map.container.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        blocks = getattr(parent, attribute)
        setattr(parent, attribute, GloballyKeyedBlocks(blocks, layers))
        try:
            yield
        finally:
            setattr(parent, attribute, blocks)

    def set_trainable(self, names: Iterable[str]) -> list[nn.Parameter]:
        """Freeze everything but `names`; return the trainable parameters in model order."""
        wanted = set(names)
        trainable = []
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name in wanted)
            if name in wanted:
                trainable.append(parameter)
        return trainable
