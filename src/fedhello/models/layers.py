"""The exact map from transformer layer index to the LoRA parameters of that layer.

Built structurally: find the ModuleList that holds the transformer blocks, then assign
each LoRA parameter to the block that owns it by object identity. Parameter names are
never parsed for digits (the reference code's "1" matches "10" and "11" bug).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peft.tuners.lora import LoraLayer
from torch import nn


@dataclass(frozen=True)
class LayerMap:
    """`layers[i]`: LoRA parameter names of block i; `pairs`: (A name, B name) of every adapted module."""

    container: str
    layers: tuple[tuple[str, ...], ...]
    pairs: tuple[tuple[str, str], ...] = ()

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def all_names(self) -> tuple[str, ...]:
        return tuple(name for names in self.layers for name in names)

    def names_for(self, layer_indices: Iterable[int]) -> list[str]:
        return [name for index in sorted(set(layer_indices)) for name in self.layers[index]]

    def layer_of(self) -> dict[str, int]:
        return {name: index for index, names in enumerate(self.layers) for name in names}


def lora_parameter_ids(model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter_dict in (module.lora_A, module.lora_B):
                ids.update(id(parameter) for parameter in adapter_dict.parameters())
    return ids


def find_layer_container(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The outermost ModuleList whose every element holds LoRA modules: the transformer blocks."""
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and all(any(isinstance(sub, LoraLayer) for sub in block.modules()) for block in module)
    ]
    if not candidates:
        raise ValueError("no list of transformer blocks with LoRA modules found; are the LoRA target modules right?")
    return min(candidates, key=lambda item: item[0].count("."))


def lora_factor_pairs(model: nn.Module) -> tuple[tuple[str, str], ...]:
    """(A, B) parameter names of every LoRA-adapted module, paired through the module tree."""
    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    pairs = []
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                pairs.append((name_of[id(module.lora_A[adapter].weight)], name_of[id(module.lora_B[adapter].weight)]))
    return tuple(pairs)


def build_layer_map(model: nn.Module) -> LayerMap:
    container_name, container = find_layer_container(model)
    lora_ids = lora_parameter_ids(model)
    owner = {id(parameter): index for index, block in enumerate(container) for parameter in block.parameters()}
    layers: list[list[str]] = [[] for _ in container]
    outside = []
    for name, parameter in model.named_parameters():
        if id(parameter) not in lora_ids:
            continue
        if id(parameter) in owner:
            layers[owner[id(parameter)]].append(name)
        else:
            outside.append(name)
    if outside:
        raise ValueError(f"LoRA parameters outside the transformer blocks are not supported: {outside[:3]}")
    return LayerMap(container_name, tuple(tuple(names) for names in layers), lora_factor_pairs(model))
