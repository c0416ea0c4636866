"""`fedra-depth`: FedRA as published, clients run a shallower sub-model of only their allocated blocks.

Checked against hand-built references: a deep copy of the model with the other blocks
deleted by hand (renumbered 0..k-1, as the published code does) must give the same logits
and, trained the same way, the same updates, which the server must put back at the
blocks' global indices.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from conftest import NUM_LABELS, build_tiny_federated, randomize_lora
from fedhello.allocation.base import AllocationContext, ClientSlot
from fedhello.allocation.groups import resolve_budgets
from fedhello.allocation.registry import build_strategy
from fedhello.config import load_config
from fedhello.experiment import PreparedExperiment, prepare_experiment
from fedhello.federation.client import Client, ClientRuntime
from fedhello.federation.inprocess import InProcessFederation
from fedhello.federation.messages import TrainInstruction
from fedhello.federation.server import ServerState
from fedhello.flower.codec import decode_instruction, encode_instruction
from fedhello.models.federated_model import FederatedModel
from fedhello.records import ClientRecord
from fedhello.resources.cost_model import CostModel
from fedhello.resources.memory_units import parse_memory
from fedhello.resources.probe import probe_costs
from fedhello.seeding import torch_generator, torch_seed
from fedhello.tasks import EvaluationSettings
from fedhello.training import LocalTrainingSettings, train_locally
from test_causal_lm import lm_config, tiny_instructions, tiny_llama_folder  # noqa: F401 (fixtures)
from test_resource_budgets import VIT, synthetic_costs

SETTINGS = LocalTrainingSettings(
    lr=0.05, weight_decay=0.0, batch_size=8, local_epochs=1, max_local_steps=3, max_grad_norm=None
)


def batch_for(arch: str, num_samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_LABELS, (num_samples,), generator=generator)
    if arch == "vit":
        return {"pixel_values": torch.randn(num_samples, 3, 16, 16, generator=generator), "labels": labels}
    input_ids = torch.randint(1, 100, (num_samples, 16), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


class BatchSplit:
    """The slice of `Split` that local training reads: positions -> a batch."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.tensors = batch

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    def batch(self, positions: np.ndarray) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(positions)
        return {name: value[index] for name, value in self.tensors.items()}


def truncated_by_hand(federated: FederatedModel, layers: list[int]) -> FederatedModel:
    """A deep copy holding only `layers`, renumbered 0..k-1 (Llama's `layer_idx` and layer count too)."""
    model = copy.deepcopy(federated.model)
    parent_name, _, attribute = federated.layer_map.container.rpartition(".")
    parent = model.get_submodule(parent_name)
    kept = nn.ModuleList([getattr(parent, attribute)[index] for index in layers])
    setattr(parent, attribute, kept)
    for position, block in enumerate(kept):
        if hasattr(block, "self_attn"):
            block.self_attn.layer_idx = position
    model.config.num_hidden_layers = len(layers)
    head = tuple(name for name, _ in model.named_parameters() if name in federated.head_names)
    return FederatedModel.wrap(model, federated.task, head)


@pytest.mark.parametrize("arch", ["bert", "vit", "llama"])
def test_sub_model_forward_equals_the_model_with_the_other_blocks_removed(arch, one_torch_thread):
    federated = build_tiny_federated(arch, 4)
    randomize_lora(federated)
    names_before = [name for name, _ in federated.model.named_parameters()]
    inputs = {name: value for name, value in batch_for(arch, 5).items() if name != "labels"}
    reference = truncated_by_hand(federated, [1, 3])
    federated.model.eval()
    reference.model.eval()
    with torch.no_grad():
        full = federated.model(**inputs).logits
        with federated.only_blocks([3, 1]):
            sub = federated.model(**inputs).logits
            lora_names = {name for name, _ in federated.model.named_parameters() if "lora_" in name}
        expected = reference.model(**inputs).logits
    torch.testing.assert_close(sub, expected)
    assert not torch.allclose(sub, full)  # the other blocks really are skipped
    assert lora_names == set(federated.layer_map.names_for([1, 3]))  # global names inside the sub-model
    assert [name for name, _ in federated.model.named_parameters()] == names_before


def test_sub_model_blocks_go_by_position_and_the_full_model_is_back_after_an_exception(tiny_bert4):
    container = tiny_bert4.model.get_submodule(tiny_bert4.layer_map.container)
    with pytest.raises(RuntimeError, match="boom"), tiny_bert4.only_blocks([3, 0, 2]):
        blocks = tiny_bert4.model.get_submodule(tiny_bert4.layer_map.container)
        assert len(blocks) == 3 and blocks[1] is container[2] and blocks[-1] is container[3]
        assert list(blocks[1:]) == [container[2], container[3]] and list(blocks) == list(blocks[:])
        raise RuntimeError("boom")
    assert tiny_bert4.model.get_submodule(tiny_bert4.layer_map.container) is container


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_sub_model_activation_bytes_match_the_depth_reduced_cost_model(arch, one_torch_thread):
    num_layers = 6
    federated = build_tiny_federated(arch, num_layers)
    split = BatchSplit(batch_for(arch, 8))
    costs = probe_costs(federated, split.batch(np.arange(8)), "fp32", key={})
    depth_costs = costs.for_depth_reduced()
    for layers in ([0], [0, 3], [1, 2, 5], [0, 2, 4], list(range(num_layers))):
        names = federated.layer_map.names_for(layers) + list(federated.head_names)
        with federated.only_blocks(layers):
            measured = train_locally(federated, split, np.arange(8), names, SETTINGS, torch.Generator())
        assert measured.activation_bytes == depth_costs.cost(layers).activation_bytes, layers
        if len(layers) < num_layers:  # cheaper than running the full model from the lowest layer up
            assert measured.activation_bytes < costs.cost(layers).activation_bytes, layers


def test_depth_reduced_price_is_the_top_suffix_of_the_same_size():
    costs = synthetic_costs()
    depth = costs.for_depth_reduced()
    mib = 2**20
    assert depth.cost([0, 3]).activation_bytes == costs.cost([4, 5]).activation_bytes == 21 * mib + mib // 2
    assert depth.cost([0, 3]).state_bytes == costs.cost([0, 3]).state_bytes
    assert depth.cost(range(6)) == costs.cost(range(6))
    everything = costs.cost(range(6)).activation_bytes
    assert depth.cost([0]).relative_time == pytest.approx(costs.cost([5]).activation_bytes / everything)


def test_a_memory_budget_buys_any_blocks_at_their_depth_reduced_price():
    """13 MiB buys layer 5 alone at full depth, but any single layer as a sub-model (as the server prices it)."""
    costs = synthetic_costs()
    budgets = ["13MiB"]
    slots = [ClientSlot(client, 0, resolve_budgets(budgets, 6, costs)[0], parse_memory("13MiB")) for client in range(8)]
    drawn = {}
    for name in ("fedra", "fedra-depth"):
        strategy = build_strategy(name, {})
        pricing = costs.for_depth_reduced() if strategy.depth_reduced else costs
        allocation = strategy.allocate(AllocationContext(1, 1, 6, slots, [1], np.random.default_rng(0), costs=pricing))
        drawn[name] = {allocation.layers[slot.client_id] for slot in slots}
    assert drawn["fedra"] == {(5,)}
    assert len(drawn["fedra-depth"]) > 2 and all(len(layers) == 1 for layers in drawn["fedra-depth"])


def client_runtime(federated: FederatedModel, split: BatchSplit) -> ClientRuntime:
    return ClientRuntime(federated, split, None, [np.arange(len(split))], SETTINGS, 7, EvaluationSettings(8))


def instruction_for(federated: FederatedModel, layers: tuple[int, ...]) -> TrainInstruction:
    return TrainInstruction(
        round=1,
        client_id=0,
        group=0,
        layers=layers,
        rank=None,
        tensors=federated.state(),
        train_head=True,
        depth_reduced=True,
    )


def test_server_puts_each_trained_block_back_at_its_global_index(tiny_bert4):
    """A client trained blocks {1, 3} of 4: layers 1 and 3 (and the head) move, by the truncated copy's updates."""
    split = BatchSplit(batch_for("bert", 16))
    reference = truncated_by_hand(tiny_bert4, [1, 3])
    start = tiny_bert4.state()
    reply = Client(0).fit(instruction_for(tiny_bert4, (1, 3)), client_runtime(tiny_bert4, split))
    assert set(reply.update.deltas) == set(tiny_bert4.layer_map.names_for([1, 3]) + list(tiny_bert4.head_names))

    torch.manual_seed(torch_seed(7, "dropout", 1, 0))  # what Client.fit seeds, on the hand-truncated copy
    reference_names = reference.layer_map.names_for([0, 1]) + list(reference.head_names)
    reference_start = reference.state(reference_names)
    train_locally(reference, split, np.arange(16), reference_names, SETTINGS, torch_generator(7, "data_order", 1, 0))
    reference_after = reference.state(reference_names)
    for local, global_index in ((0, 1), (1, 3)):
        for reference_name, name in zip(
            reference.layer_map.layers[local], tiny_bert4.layer_map.layers[global_index], strict=True
        ):
            expected = reference_after[reference_name] - reference_start[reference_name]
            torch.testing.assert_close(reply.update.deltas[name], expected, rtol=1e-5, atol=1e-7)

    strategy = build_strategy("fedra-depth", {})
    new = strategy.aggregate(start, [reply.update], "samples")
    for index in range(4):
        for name in tiny_bert4.layer_map.layers[index]:
            assert torch.equal(new[name], start[name]) == (index in (0, 2)), (index, name)


def test_the_instruction_survives_the_flower_codec(tiny_bert4):
    split = BatchSplit(batch_for("bert", 16))
    instruction = instruction_for(tiny_bert4, (0, 2))
    decoded = decode_instruction(encode_instruction(instruction))
    assert decoded.depth_reduced is True and decoded.layers == (0, 2)
    assert (
        decode_instruction(encode_instruction(dataclasses.replace(instruction, depth_reduced=False))).depth_reduced
        is False
    )
    runtime = client_runtime(tiny_bert4, split)
    direct = Client(0).fit(instruction, runtime)
    through_flower = Client(0).fit(decoded, runtime)
    assert direct.record.activation_bytes == through_flower.record.activation_bytes
    for name, delta in direct.update.deltas.items():
        assert torch.equal(through_flower.update.deltas[name], delta), name


def vit_experiment(folder, budgets: list[str], *extra: str) -> PreparedExperiment:
    overrides = [f"model.name={folder}", *VIT, "federation.rounds=2", f"groups.budgets={json.dumps(budgets)}"]
    return prepare_experiment(load_config(overrides=[*overrides, "allocation.strategy=fedra-depth", *extra]))


def lm_experiment(folder, budgets: list[str]) -> PreparedExperiment:
    overrides = ["federation.rounds=1", "evaluation.generate_samples=0", f"groups.budgets={json.dumps(budgets)}"]
    return prepare_experiment(lm_config(folder, *overrides, "allocation.strategy=fedra-depth"))


def depth_budgets(build: Callable[[list[str]], PreparedExperiment]) -> tuple[list[str], CostModel]:
    """Memory budgets the weakest groups meet with one and two blocks as sub-models, and the depth-reduced price."""
    measured = build(["1GiB", "1GiB", "1GiB"]).costs
    assert measured is not None
    costs = measured.for_depth_reduced()
    top = measured.num_layers - 1
    weak = [costs.peak_bytes(layers) + 100 for layers in ([top], [top - 1, top])]
    return [f"{weak[0]}B", f"{weak[1]}B", "1GiB"], costs


def play_round_checked(
    federation: InProcessFederation, budgets: list[str], costs: CostModel, exact: bool
) -> list[ClientRecord]:
    """One round: exactly the allocated layers move, every client within its budget at the depth-reduced price."""
    before = dict(federation.server.global_state)
    outcome = federation.run_round()
    layer_map = federation.server.layout.layer_map
    allocated = {layer for client in outcome.clients for layer in client.layers}
    for index in range(layer_map.num_layers):
        moved = any(not torch.equal(federation.server.global_state[n], before[n]) for n in layer_map.layers[index])
        assert moved == (index in allocated), (index, allocated)
    for client in outcome.clients:
        assert client.status == "trained"
        price = costs.cost(client.layers).activation_bytes
        if exact:
            assert client.activation_bytes == price, (client, price)
        else:  # the price is the costliest batch's (the widest, padded); others save less or the same
            assert 0 < client.activation_bytes <= price, (client, price)
        assert client.activation_bytes + client.state_bytes <= parse_memory(budgets[client.group])
    return outcome.clients


def test_two_rounds_learn_within_memory_budgets_and_resume_exactly(tiny_vit_folder, one_torch_thread):
    budgets, costs = depth_budgets(lambda budgets: vit_experiment(tiny_vit_folder, budgets))
    federation = InProcessFederation(vit_experiment(tiny_vit_folder, budgets))
    states, clients = [], []
    for _ in range(2):
        clients += play_round_checked(federation, budgets, costs, exact=True)
        states.append(dict(federation.server.global_state))
    full_depth = dataclasses.replace(costs, depth_reduced=False)
    # The server priced the sets as sub-models: some weak client trains blocks it could not afford at full depth.
    assert any(full_depth.peak_bytes(c.layers) > parse_memory(budgets[c.group]) for c in clients)

    resumed = InProcessFederation(vit_experiment(tiny_vit_folder, budgets))
    resumed.server.load_state_dict(ServerState(1, states[0]))
    resumed.run_round()
    for name, tensor in states[1].items():
        assert torch.equal(resumed.server.global_state[name], tensor), name


def test_a_causal_lm_round_runs_sub_models_within_their_budgets(
    tiny_llama_folder,  # noqa: F811
    tiny_instructions,  # noqa: F811
    one_torch_thread,
):
    """Llama causal LM, LoRA on every projection: the price bounds each client, as at full depth.

    Instruction batches are cut to their longest sample, so most save less than the priced batch (the
    widest, padded); none saves more, so budgets at the exact price hold.
    """
    budgets, costs = depth_budgets(lambda budgets: lm_experiment(tiny_llama_folder, budgets))
    federation = InProcessFederation(lm_experiment(tiny_llama_folder, budgets))
    play_round_checked(federation, budgets, costs, exact=False)


def test_the_coverage_rule_refills_at_the_depth_reduced_price(tiny_vit_folder, one_torch_thread):
    """Refills (`allocation.min_trainers_per_layer`) buy blocks at the sub-model price, as the draw does."""
    budgets, costs = depth_budgets(lambda budgets: vit_experiment(tiny_vit_folder, budgets))
    federation = InProcessFederation(vit_experiment(tiny_vit_folder, budgets, "allocation.min_trainers_per_layer=2"))
    full_depth = dataclasses.replace(costs, depth_reduced=False)
    refills = 0
    for _ in range(2):
        outcome = federation.run_round()
        assert outcome.allocation.coverage is not None
        refills += outcome.allocation.coverage.refilled
        for client in outcome.clients:
            assert client.activation_bytes + client.state_bytes <= parse_memory(budgets[client.group])
        if outcome.allocation.coverage.refilled:  # a set unaffordable at full depth was topped up
            assert any(full_depth.peak_bytes(c.layers) > parse_memory(budgets[c.group]) for c in outcome.clients)
    assert refills > 0
