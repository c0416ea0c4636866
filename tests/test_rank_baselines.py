"""Rank-heterogeneous baselines (HetLoRA, FlexLoRA), the `local` lower bound, rank masks
in local training, and a simulator round with clients at different LoRA ranks.

Strategy tests use hand-made layouts and tensors, so every expected value is computed
here by hand from the method's definition (SPEC §2.5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhello.aggregation import ClientUpdate
from fedhello.allocation.base import AllocationContext, ClientSlot, ModelLayout
from fedhello.allocation.ranks import budget_ranks
from fedhello.allocation.registry import build_strategy
from fedhello.allocation.strategies.flexlora import svd_factors
from fedhello.config import build_config
from fedhello.experiment import PreparedExperiment
from fedhello.federation.inprocess import InProcessFederation, MemoryLog
from fedhello.models.layers import LayerMap
from fedhello.preparation import FederatedTask
from fedhello.tensor_state import merged_delta_key, state_bytes
from fedhello.training import LocalTrainingSettings, train_locally

IN, OUT, RANK = 4, 5, 3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_layout(seed: int = 0, zero_b: bool = False, num_layers: int = 1, rank: int = RANK) -> ModelLayout:
    generator = torch.Generator().manual_seed(seed)
    layers = tuple((f"a{i}", f"b{i}") for i in range(num_layers))
    state = {}
    for a_name, b_name in layers:
        state[a_name] = torch.randn(rank, IN, generator=generator)
        state[b_name] = torch.zeros(OUT, rank) if zero_b else torch.randn(OUT, rank, generator=generator)
    state["h"] = torch.randn(2, generator=generator)
    return ModelLayout(LayerMap(container="x", layers=layers, pairs=layers), ("h",), state)


def bound(name: str, params: dict, layout: ModelLayout):
    strategy = build_strategy(name, params)
    strategy.bind(layout)
    return strategy


def context(
    slots: list[ClientSlot], budgets: list[int], num_layers: int = 1, round_number: int = 1
) -> AllocationContext:
    return AllocationContext(
        round=round_number,
        total_rounds=5,
        num_layers=num_layers,
        clients=slots,
        group_budgets=budgets,
        rng=np.random.default_rng(0),
    )


def fro(tensor: torch.Tensor) -> float:
    return float(torch.linalg.norm(tensor))


# ----------------------------------------------------------------------------- ranks


def test_budget_ranks_match_parameter_counts():
    assert budget_ranks(8, [3, 5, 6], 6) == [4, 7, 8]
    assert budget_ranks(8, [1], 16) == [1]  # never below 1
    assert budget_ranks(4, [8], 4) == [4]  # never above the full rank


def test_allocate_gives_every_layer_and_the_group_rank():
    layout = make_layout(num_layers=4, rank=8)
    slots = [ClientSlot(7, 0, 1), ClientSlot(3, 1, 2), ClientSlot(5, 2, 4)]
    for name in ("hetlora", "flexlora"):
        allocation = bound(name, {}, layout).allocate(context(slots, [1, 2, 4], num_layers=4))
        assert allocation.layers == {7: (0, 1, 2, 3), 3: (0, 1, 2, 3), 5: (0, 1, 2, 3)}
        assert allocation.ranks == {7: 2, 3: 4, 5: 8}  # budget_ranks(8, [1, 2, 4], 4)

        explicit = bound(name, {"ranks": [1, 6, 20]}, layout).allocate(context(slots, [1, 2, 4], num_layers=4))
        assert explicit.ranks == {7: 1, 3: 6, 5: 8}  # an explicit rank above the full rank is capped

        with pytest.raises(ValueError, match="ranks"):
            bound(name, {"ranks": [1]}, layout).allocate(context(slots, [1, 2, 4], num_layers=4))


# ----------------------------------------------------------------------------- HetLoRA


def test_hetlora_downlink_truncates_factors_only():
    layout = make_layout()
    strategy = bound("hetlora", {"ranks": [1, 3]}, layout)
    state = layout.initial_state
    down = strategy.downlink(state, ClientSlot(0, 0, 1), 2)
    assert torch.equal(down["a0"], state["a0"][:2, :]) and down["a0"].shape == (2, IN)
    assert torch.equal(down["b0"], state["b0"][:, :2]) and down["b0"].shape == (OUT, 2)
    assert torch.equal(down["h"], state["h"])


def _hetlora_round(params: dict):
    layout = make_layout(seed=1)
    strategy = bound("hetlora", params, layout)
    state = layout.initial_state
    generator = torch.Generator().manual_seed(5)
    down0 = strategy.downlink(state, ClientSlot(0, 0, 1), 1)
    down1 = strategy.downlink(state, ClientSlot(1, 1, 1), 3)
    d0 = {
        "a0": torch.randn(1, IN, generator=generator),
        "b0": torch.randn(OUT, 1, generator=generator),
        "h": torch.randn(2, generator=generator),
    }
    d1 = {
        "a0": torch.randn(3, IN, generator=generator),
        "b0": torch.randn(OUT, 3, generator=generator),
        "h": torch.randn(2, generator=generator),
    }
    updates = [ClientUpdate(0, d0, 10), ClientUpdate(1, d1, 30)]
    new = strategy.aggregate(state, updates, "samples")
    local0 = {name: down0[name] + d0[name] for name in d0}
    local1 = {name: down1[name] + d1[name] for name in d1}
    return state, new, local0, local1, d0, d1


@pytest.mark.parametrize("weighting", ["norm", "samples"])
@pytest.mark.parametrize("explicit", [False, True])
def test_hetlora_aggregate_zero_pads_and_weights(weighting, explicit):
    """The published rule, and the default: zero-padded factors averaged over every participant."""
    params = {"ranks": [1, 3], "weighting": weighting} | ({"normalize": "all"} if explicit else {})
    state, new, local0, local1, d0, d1 = _hetlora_round(params)
    if weighting == "norm":
        n0 = fro(local0["b0"] @ local0["a0"])
        n1 = fro(local1["b0"] @ local1["a0"])
        w0, w1 = n0 / (n0 + n1), n1 / (n0 + n1)
        assert 0.05 < w0 < 0.95  # the weights really differ from sample shares here
    else:
        w0, w1 = 0.25, 0.75
    a0_padded = torch.zeros(RANK, IN)
    a0_padded[:1] = local0["a0"]
    b0_padded = torch.zeros(OUT, RANK)
    b0_padded[:, :1] = local0["b0"]
    torch.testing.assert_close(new["a0"], w0 * a0_padded + w1 * local1["a0"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new["b0"], w0 * b0_padded + w1 * local1["b0"], rtol=1e-6, atol=1e-6)
    # The head is plain FedAvg by samples in both modes.
    torch.testing.assert_close(new["h"], state["h"] + (10 * d0["h"] + 30 * d1["h"]) / 40, rtol=1e-6, atol=1e-6)
    # Rows only client 1 trained are scaled by its weight alone (zero padding, not renormalised).
    torch.testing.assert_close(new["a0"][1:], w1 * local1["a0"][1:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weighting", ["norm", "samples"])
def test_hetlora_contributors_averages_each_component_over_the_clients_that_trained_it(weighting):
    _, new, local0, local1, _, _ = _hetlora_round(
        {"ranks": [1, 3], "weighting": weighting, "normalize": "contributors"}
    )
    if weighting == "norm":
        n0 = fro(local0["b0"] @ local0["a0"])
        n1 = fro(local1["b0"] @ local1["a0"])
        w0, w1 = n0 / (n0 + n1), n1 / (n0 + n1)
    else:
        w0, w1 = 0.25, 0.75
    # Component 0: both clients; components 1-2: only the rank-3 client, at full weight.
    torch.testing.assert_close(new["a0"][0], w0 * local0["a0"][0] + w1 * local1["a0"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new["a0"][1:], local1["a0"][1:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new["b0"][:, 0], w0 * local0["b0"][:, 0] + w1 * local1["b0"][:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new["b0"][:, 1:], local1["b0"][:, 1:], rtol=1e-6, atol=1e-6)


def _prune_round(ratio: float | None) -> tuple[int, int, int]:
    layout = make_layout(seed=2)
    params = {"ranks": [2, 3]} | ({"tail_truncation": ratio} if ratio is not None else {})
    strategy = bound("hetlora", params, layout)
    state = layout.initial_state
    slots = [ClientSlot(0, 0, 1), ClientSlot(1, 1, 1), ClientSlot(2, 1, 1)]
    ranks = strategy.allocate(context(slots, [1, 1])).ranks
    assert ranks == {0: 2, 1: 3, 2: 3}
    downs = {slot.client_id: strategy.downlink(state, slot, ranks[slot.client_id]) for slot in slots}
    targets = {
        0: {"a0": torch.ones(2, IN), "b0": torch.ones(OUT, 2)},
        # last component tiny: ||B[:,2]|| * ||A[2,:]|| = sqrt(5) * 2e-3 vs sqrt(5) * 2 for the others
        1: {"a0": torch.cat([torch.ones(2, IN), torch.full((1, IN), 1e-3)]), "b0": torch.ones(OUT, 3)},
        2: {"a0": torch.ones(3, IN), "b0": torch.ones(OUT, 3)},
    }
    updates = [
        ClientUpdate(cid, {name: targets[cid][name] - downs[cid][name] for name in ("a0", "b0")}, 10) for cid in targets
    ]
    new = strategy.aggregate(state, updates, "samples")
    later = strategy.allocate(context(slots, [1, 1], round_number=2)).ranks
    downs = {slot.client_id: strategy.downlink(new, slot, later[slot.client_id]) for slot in slots}
    assert all(downs[cid]["a0"].shape[0] == later[cid] for cid in later)
    return later[0], later[1], later[2]


def test_hetlora_tail_truncation():
    assert _prune_round(0.5) == (2, 2, 3)  # only the client with a tiny last component drops a rank
    assert _prune_round(None) == (2, 3, 3)  # pruning off: ranks unchanged


# ----------------------------------------------------------------------------- FlexLoRA


def test_svd_factors_is_the_best_low_rank_approximation():
    generator = torch.Generator().manual_seed(3)
    product = torch.randn(OUT, IN, generator=generator)
    initial_a = torch.randn(IN, IN, generator=generator)
    singular = torch.linalg.svdvals(product.double())
    for rank in range(1, IN + 1):
        a, b = svd_factors(product, rank, initial_a)
        assert a.shape == (rank, IN) and b.shape == (OUT, rank)
        discarded = float(singular[rank:].pow(2).sum().sqrt())
        assert abs(fro(product - b @ a) - discarded) < 1e-5
    low = torch.randn(OUT, 2, generator=generator) @ torch.randn(2, IN, generator=generator)
    for rank in (2, 3, 4):
        a, b = svd_factors(low, rank, initial_a)
        assert fro(low - b @ a) < 1e-5


def test_svd_factors_of_zero_product_restart_from_initial_a():
    initial_a = torch.randn(RANK, IN, generator=torch.Generator().manual_seed(4))
    a, b = svd_factors(torch.zeros(OUT, IN), RANK, initial_a)
    assert torch.equal(a, initial_a)
    assert torch.equal(b, torch.zeros(OUT, RANK))


@pytest.mark.parametrize("weighting", ["samples", "uniform"])
def test_flexlora_aggregates_products(weighting):
    layout = make_layout(seed=6, zero_b=True)  # peft-like start: B = 0, so the product is 0
    strategy = bound("flexlora", {"ranks": [1, 2]}, layout)
    state = layout.initial_state
    down0 = strategy.downlink(state, ClientSlot(0, 0, 1), 1)
    down1 = strategy.downlink(state, ClientSlot(1, 1, 1), 2)
    assert torch.equal(down0["a0"], state["a0"][:1]) and torch.equal(down0["b0"], torch.zeros(OUT, 1))
    assert torch.equal(down1["a0"], state["a0"][:2]) and torch.equal(down1["b0"], torch.zeros(OUT, 2))

    generator = torch.Generator().manual_seed(7)
    d0 = {
        "a0": torch.randn(1, IN, generator=generator),
        "b0": torch.randn(OUT, 1, generator=generator),
        "h": torch.randn(2, generator=generator),
    }
    d1 = {
        "a0": torch.randn(2, IN, generator=generator),
        "b0": torch.randn(OUT, 2, generator=generator),
        "h": torch.randn(2, generator=generator),
    }
    new = strategy.aggregate(state, [ClientUpdate(0, d0, 10), ClientUpdate(1, d1, 30)], weighting)
    w0, w1 = (0.25, 0.75) if weighting == "samples" else (0.5, 0.5)
    p0 = (down0["b0"] + d0["b0"]) @ (down0["a0"] + d0["a0"])
    p1 = (down1["b0"] + d1["b0"]) @ (down1["a0"] + d1["a0"])
    expected = w0 * p0 + w1 * p1  # rank <= 1 + 2 = full rank 3
    assert new["a0"].shape == (RANK, IN) and new["b0"].shape == (OUT, RANK)
    assert fro(new["b0"] @ new["a0"] - expected) < 1e-5
    torch.testing.assert_close(new["h"], state["h"] + w0 * d0["h"] + w1 * d1["h"], rtol=1e-6, atol=1e-6)
    # A rank-1 client now receives the best rank-1 approximation of the averaged product.
    next_down = strategy.downlink(new, ClientSlot(0, 0, 1), 1)
    singular = torch.linalg.svdvals(expected.double())
    assert abs(fro(expected - next_down["b0"] @ next_down["a0"]) - float(singular[1:].pow(2).sum().sqrt())) < 1e-5


def test_flexlora_server_product_beyond_full_rank():
    """Averaged product of rank > full rank: global factors are its best rank-r approximation, evaluation uses ΔW."""
    layout = make_layout(seed=8)
    strategy = bound("flexlora", {"ranks": [3, 3]}, layout)
    state = strategy.client_start(layout.initial_state)
    generator = torch.Generator().manual_seed(9)
    downs = [strategy.downlink(state, ClientSlot(c, c, 1), 3) for c in (0, 1)]
    deltas = [
        {"a0": torch.randn(3, IN, generator=generator), "b0": torch.randn(OUT, 3, generator=generator)} for _ in (0, 1)
    ]
    new = strategy.aggregate(state, [ClientUpdate(c, deltas[c], 20) for c in (0, 1)], "samples")
    expected = sum(0.5 * (downs[c]["b0"] + deltas[c]["b0"]) @ (downs[c]["a0"] + deltas[c]["a0"]) for c in (0, 1))
    singular = torch.linalg.svdvals(expected.double())
    assert float(singular[3]) > 1e-3  # really rank 4
    assert abs(fro(expected - new["b0"] @ new["a0"]) - float(singular[3])) < 1e-5
    # The evaluated global model is the published one: the full averaged ΔW, not its rank-3 truncation.
    evaluated = strategy.evaluation_state(new)
    torch.testing.assert_close(evaluated[merged_delta_key("a0")], expected, rtol=1e-6, atol=1e-6)
    assert all(torch.equal(evaluated[name], new[name]) for name in new)


def test_merged_deltas_evaluate_w0_plus_delta_and_restore(tiny_federated, lora_randomizer):
    federated = tiny_federated("bert", 2)
    lora_randomizer(federated)
    model = federated.model.eval()
    parameters = federated.parameters_by_name()
    before = {name: tensor.detach().clone() for name, tensor in parameters.items()}
    generator = torch.Generator().manual_seed(0)
    deltas = {}
    for a_name, b_name in federated.layer_map.pairs:
        deltas[a_name] = torch.randn(parameters[b_name].shape[0], parameters[a_name].shape[1], generator=generator)
    inputs = {"input_ids": torch.randint(1, 50, (3, 7), generator=generator)}
    with federated.merged_deltas(deltas):
        merged_logits = model(**inputs).logits
    for name, tensor in federated.parameters_by_name().items():
        assert torch.equal(tensor, before[name])  # restored bit for bit
    # The same model built by hand: W0 + scaling * ΔW in the base weight, LoRA branch off.
    with torch.no_grad():
        for a_name, b_name in federated.layer_map.pairs:
            module = model.get_submodule(a_name.split(".lora_A.")[0])
            module.get_base_layer().weight += module.scaling["default"] * deltas[a_name]
            parameters[b_name].zero_()
        expected = model(**inputs).logits
    torch.testing.assert_close(merged_logits, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- local


def _tiny_task(federated, encoded_split):
    train, test = encoded_split(32, seed=0), encoded_split(12, seed=1)
    return FederatedTask(
        federated, train, test, None, [np.arange(i * 8, (i + 1) * 8) for i in range(4)], ("x", "y", "z")
    )


def _tiny_config(strategy, params=None, rounds=1, clients_per_round=4, **sections):
    return build_config(
        {
            "device": "cpu",
            "federation": {"num_clients": 4, "clients_per_round": clients_per_round, "rounds": rounds},
            "groups": {"budgets": [1, 2], "ratio": "1:1"},
            "allocation": {"strategy": strategy, "params": params or {}},
            "fisher": {"proxy_size": 0},
            "training": {"batch_size": 4, "max_local_steps": 2},
            "evaluation": {"subset_size": None},
            "output": {"tensorboard": False, "plots": False, "progress": False},
            **sections,
        }
    )


def test_local_models_live_with_their_clients(tiny_federated, encoded_split):
    """`local`: the server sends and receives nothing; each client trains and keeps its own model."""
    federated = tiny_federated("bert", 2)
    initial = federated.state()
    config = _tiny_config("local", rounds=2, clients_per_round=2)
    engine = InProcessFederation(
        PreparedExperiment.from_task(config, build_strategy("local", {}), _tiny_task(federated, encoded_split))
    )
    first = engine.run_round()
    assert all(not instruction_bytes for instruction_bytes in (first.record.bytes_down, first.record.bytes_up))
    for name, tensor in engine.server.global_state.items():
        assert torch.equal(tensor, initial[name])  # the global state never moves
    trained_first = set(first.record.clients)
    assert set(engine.clients) == trained_first
    kept = {client: dict(engine.clients[client].state) for client in trained_first}
    for state in kept.values():
        assert set(state) == set(initial)
        assert any(not torch.equal(state[name], initial[name]) for name in state)
    second = engine.run_round()
    for client in set(second.record.clients) & trained_first:
        # It started from its own model: some tensor moved on from what it kept, none went back to the initial one.
        state = engine.clients[client].state
        assert any(not torch.equal(state[name], kept[client][name]) for name in state)
    assert second.record.eval.split == "test-personal"
    assert second.record.eval.num_clients == len(engine.clients)


def test_local_head_stays_with_the_client(tiny_federated, encoded_split):
    """`training.head=local`: heads are neither sent nor returned; each client's head persists."""
    federated = tiny_federated("bert", 2)
    initial = federated.state()
    config = _tiny_config("full", rounds=1, training={"batch_size": 4, "max_local_steps": 2, "head": "local"})
    engine = InProcessFederation(
        PreparedExperiment.from_task(config, build_strategy("full", {}), _tiny_task(federated, encoded_split))
    )
    plan = engine.server.plan_round()
    for instruction in plan.instructions:
        assert not set(federated.head_names) & set(instruction.tensors)
        assert instruction.keep_local == federated.head_names
    engine.run_round()
    for name in federated.head_names:
        assert torch.equal(engine.server.global_state[name], initial[name])
    heads = [engine.clients[c].state[federated.head_names[-1]] for c in sorted(engine.clients)]
    assert len(heads) == 4 and not torch.equal(heads[0], heads[1])


def test_reset_head_reproduces_the_reference(tiny_federated, encoded_split):
    """`training.head=reset`: each client trains the initial head every round and throws it away."""
    federated = tiny_federated("bert", 2)
    initial = federated.state()
    config = _tiny_config("full", rounds=2, training={"batch_size": 4, "max_local_steps": 2, "head": "reset"})
    engine = InProcessFederation(
        PreparedExperiment.from_task(config, build_strategy("full", {}), _tiny_task(federated, encoded_split))
    )
    first = engine.run_round()
    head_params = sum(initial[name].numel() for name in federated.head_names)
    lora_params = sum(initial[name].numel() for name in federated.layer_map.all_names)
    for record in engine.log.clients:
        assert record.trainable_params > head_params  # the head was trained locally...
        assert record.bytes_up == lora_params * 4 * len(record.layers) // 2  # ...but only LoRA comes back
    for name in federated.head_names:
        assert torch.equal(engine.server.global_state[name], initial[name])  # the global head never moves
    assert any(not torch.equal(engine.server.global_state[n], initial[n]) for n in federated.layer_map.all_names)
    assert all(not set(federated.head_names) & set(client.state) for client in engine.clients.values())
    plan = engine.server.plan_round()  # round 2: every client starts from the initial head again
    for instruction in plan.instructions:
        assert instruction.train_head and instruction.discard == federated.head_names
        for name in federated.head_names:
            assert torch.equal(instruction.tensors[name], initial[name])
    assert first.record.round == 1


# ----------------------------------------------------------------------------- rank masks in training


def _mask_run(federated, masks, names, split):
    settings = LocalTrainingSettings(
        lr=1e-2, weight_decay=0.0, batch_size=4, local_epochs=1, max_local_steps=3, max_grad_norm=1.0
    )
    train_locally(
        federated, split, np.arange(12), names, settings, torch.Generator().manual_seed(0), gradient_masks=masks
    )
    return federated.state(names)


def test_gradient_masks_keep_rank_components_fixed(tiny_federated, lora_randomizer, encoded_split):
    federated = tiny_federated("bert", 2)
    lora_randomizer(federated)
    parameters = federated.parameters_by_name()
    keep = 2
    masks = {}
    with torch.no_grad():
        for a_name, b_name in federated.layer_map.pairs:
            parameters[a_name][keep:, :] = 0  # A rows beyond the client's rank start at zero
            a_mask = torch.zeros_like(parameters[a_name])
            a_mask[:keep] = 1
            b_mask = torch.zeros_like(parameters[b_name])
            b_mask[:, :keep] = 1
            masks[a_name], masks[b_name] = a_mask, b_mask
    names = list(federated.layer_map.all_names) + list(federated.head_names)
    before = federated.state(names)
    split = encoded_split(12)

    after = _mask_run(federated, masks, names, split)
    for a_name, b_name in federated.layer_map.pairs:
        assert torch.equal(after[a_name][keep:], torch.zeros_like(after[a_name][keep:]))
        assert torch.equal(after[b_name][:, keep:], before[b_name][:, keep:])  # zero gradient, no weight decay
        assert not torch.equal(after[a_name][:keep], before[a_name][:keep])
        assert not torch.equal(after[b_name][:, :keep], before[b_name][:, :keep])

    # Control: the same training without masks moves those A rows (B's columns there are non-zero).
    federated.load_state(before)
    unmasked = _mask_run(federated, None, names, split)
    assert any(not torch.equal(unmasked[a][keep:], before[a][keep:]) for a, _ in federated.layer_map.pairs)


# ----------------------------------------------------------------------------- simulator


@pytest.mark.parametrize("ranks", [None, [1, 2]])
def test_engine_trains_clients_at_their_ranks(tiny_federated, encoded_split, ranks):
    federated = tiny_federated("bert", 2)  # LoRA rank 4, 2 layers
    full_rank = int(federated.state()[federated.layer_map.pairs[0][0]].shape[0])
    assert full_rank == 4 and federated.layer_map.num_layers == 2
    params = {} if ranks is None else {"ranks": ranks}
    config = _tiny_config("hetlora", params)
    initial = federated.state()
    engine = InProcessFederation(
        PreparedExperiment.from_task(config, build_strategy("hetlora", params), _tiny_task(federated, encoded_split))
    )
    assert isinstance(engine.log, MemoryLog)
    while not engine.server.finished:
        final = engine.run_round().record
    group_ranks = ranks or budget_ranks(full_rank, [1, 2], 2)
    assert group_ranks == ([2, 4] if ranks is None else [1, 2])

    records = engine.log.clients
    assert sorted(r.client for r in records) == [0, 1, 2, 3]
    assert sorted(r.group for r in records) == [0, 0, 1, 1]
    assert final.dropped == []
    shapes = {name: tensor.shape for name, tensor in initial.items()}
    head_bytes = state_bytes({name: initial[name] for name in federated.head_names})
    for record in records:
        rank = group_ranks[record.group]
        assert record.group == engine.server.client_groups[record.client]
        assert record.rank == rank
        assert record.layers == [0, 1]
        assert record.local_steps == 2
        lora_bytes = sum((rank * shapes[a][1] + shapes[b][0] * rank) * 4 for a, b in federated.layer_map.pairs)
        assert record.bytes_up == lora_bytes + head_bytes
        assert record.bytes_down == lora_bytes + head_bytes

    top = max(group_ranks)
    global_state = engine.server.global_state
    for a_name, b_name in federated.layer_map.pairs:
        a, b = global_state[a_name], global_state[b_name]
        assert a.shape == shapes[a_name] and b.shape == shapes[b_name]
        # Published zero-padded average: components no participant's rank covered become zero.
        assert torch.equal(a[top:], torch.zeros_like(a[top:]))
        assert torch.equal(b[:, top:], torch.zeros_like(b[:, top:]))
        assert not torch.equal(a[:top], initial[a_name][:top]) and float(b[:, :top].abs().sum()) > 0
    assert final.eval.split == "test" and final.eval.num_samples == 12
