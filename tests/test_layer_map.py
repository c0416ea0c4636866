"""The layer map assigns every LoRA tensor to the transformer block that owns it."""

from __future__ import annotations

import pytest
import torch

from fedhello.models.layers import LayerMap, build_layer_map, lora_parameter_ids
from fedhello.models.lora import detect_target_modules

EXPECTED_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"], "vit": ["q_proj", "v_proj"]}

CASES = [
    ("bert", 2),
    ("bert", 5),
    ("bert", 12),
    ("llama", 2),
    ("llama", 5),
    ("llama", 12),
    ("vit", 2),
    ("vit", 5),
    ("vit", 12),
]


@pytest.mark.parametrize("arch", ["bert", "llama", "vit"])
def test_target_modules_detected(tiny_base, arch):
    assert detect_target_modules(tiny_base(arch, 2)) == EXPECTED_TARGETS[arch]


@pytest.mark.parametrize(("arch", "num_layers"), CASES)
def test_every_lora_tensor_in_exactly_one_block(tiny_federated, arch, num_layers):
    federated = tiny_federated(arch, num_layers)
    model = federated.model
    layer_map = federated.layer_map
    parameters = dict(model.named_parameters())
    lora_ids = lora_parameter_ids(model)

    # The layer map is the same thing build_layer_map computes, with L layers in order 0..L-1.
    assert layer_map == build_layer_map(model)
    assert layer_map.num_layers == num_layers
    container = model.get_submodule(layer_map.container)
    assert isinstance(container, torch.nn.ModuleList) and len(container) == num_layers
    assert layer_map.layer_of() == {name: i for i in range(num_layers) for name in layer_map.layers[i]}

    # Every LoRA parameter appears exactly once; nothing else appears.
    lora_names = [name for name, parameter in model.named_parameters() if id(parameter) in lora_ids]
    assert len(lora_names) == 4 * num_layers
    assert sorted(layer_map.all_names) == sorted(lora_names)
    assert len(set(layer_map.all_names)) == len(layer_map.all_names)

    targets = EXPECTED_TARGETS[arch]
    for index, names in enumerate(layer_map.layers):
        # Two target modules x (lora_A, lora_B).
        assert len(names) == 4
        suffixes = sorted(name.split(".")[-4] + "." + name.split(".")[-3] for name in names)
        assert suffixes == sorted(f"{t}.{f}" for t in targets for f in ("lora_A", "lora_B"))
        # Ownership by identity, via the module tree (not by parsing digits).
        block = model.get_submodule(f"{layer_map.container}.{index}")
        block_ids = {id(parameter) for parameter in block.parameters()}
        for name in names:
            assert id(parameters[name]) in block_ids
            assert id(parameters[name]) in lora_ids
        # ...and by no other block.
        for other in range(num_layers):
            if other == index:
                continue
            other_ids = {id(p) for p in model.get_submodule(f"{layer_map.container}.{other}").parameters()}
            assert not any(id(parameters[name]) in other_ids for name in names)


@pytest.mark.parametrize("arch", ["bert", "llama", "vit"])
def test_no_substring_layer_confusion_with_12_layers(tiny_federated, arch):
    """Reference bug: matching "1" in names also matches layers 10 and 11."""
    federated = tiny_federated(arch, 12)
    layer_map = federated.layer_map
    container = layer_map.container
    parameters = dict(federated.model.named_parameters())
    for index in (1, 10, 11):
        expected = {
            id(p) for n, p in federated.model.get_submodule(f"{container}.{index}").named_parameters() if "lora_" in n
        }
        assert {id(parameters[name]) for name in layer_map.layers[index]} == expected
        assert len(expected) == 4
    late = {id(parameters[name]) for name in layer_map.layers[10] + layer_map.layers[11]}
    assert not late & {id(parameters[name]) for name in layer_map.layers[1]}
    assert layer_map.names_for([1]) == list(layer_map.layers[1])
    # names_for sorts and deduplicates the indices.
    assert layer_map.names_for([11, 1, 1]) == list(layer_map.layers[1]) + list(layer_map.layers[11])


def test_layer_map_helpers_on_hand_made_map():
    layer_map = LayerMap("blocks", (("a", "b"), ("c",), ("d", "e")))
    assert layer_map.num_layers == 3
    assert layer_map.all_names == ("a", "b", "c", "d", "e")
    assert layer_map.names_for([2, 0]) == ["a", "b", "d", "e"]
    assert layer_map.names_for([]) == []
    assert layer_map.layer_of() == {"a": 0, "b": 0, "c": 1, "d": 2, "e": 2}


def _module_parameter_names(model, suffix):
    module = next(m for n, m in model.named_modules() if n.endswith(suffix))
    ids = {id(p) for p in module.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_bert_head_includes_pooler_only_when_asked(tiny_federated):
    with_pooler = tiny_federated("bert", 2, train_pooler=True)
    without_pooler = tiny_federated("bert", 2, train_pooler=False)
    model = with_pooler.model
    classifier = _module_parameter_names(model, "classifier")
    pooler = _module_parameter_names(model, "bert.pooler")
    assert len(classifier) == 2 and len(pooler) == 2
    assert set(with_pooler.head_names) == classifier | pooler
    assert set(without_pooler.head_names) == _module_parameter_names(without_pooler.model, "classifier")
    assert not any("pooler" in name for name in without_pooler.head_names)
    # Head and LoRA are disjoint, and exchanged = LoRA + head.
    assert not set(with_pooler.head_names) & set(with_pooler.layer_map.all_names)
    assert with_pooler.exchanged_names == with_pooler.layer_map.all_names + with_pooler.head_names


def test_llama_head_is_score(tiny_federated):
    federated = tiny_federated("llama", 2)
    assert set(federated.head_names) == _module_parameter_names(federated.model, "score")
    assert len(federated.head_names) >= 1
    assert all(".score." in name for name in federated.head_names)


def test_vit_head_is_classifier(tiny_federated):
    federated = tiny_federated("vit", 2)
    assert set(federated.head_names) == _module_parameter_names(federated.model, "classifier")
    assert len(federated.head_names) == 2
