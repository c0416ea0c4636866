"""The coverage rule (`allocation.min_trainers_per_layer`): properties, hand-worked cases, config errors, a run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhello import cli
from fedhello.allocation.base import Allocation, AllocationContext, ClientSlot
from fedhello.allocation.coverage import enforce_min_trainers
from fedhello.allocation.registry import build_strategy, strategy_from_config
from fedhello.allocation.strategy_utils import within_budget
from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.preparation import prepare_task
from fedhello.records import CoverageRecord
from fedhello.resources.cost_model import CostModel
from fedhello.runner import run_experiment
from test_reliability import assert_same_run, interrupt_in_round, strict_records, tiny_config_data, write_config
from test_resource_budgets import synthetic_costs

MIB = 2**20


def counts_of(layers: dict[int, tuple[int, ...]]) -> Counter[int]:
    return Counter(layer for chosen in layers.values() for layer in chosen)


# --------------------------------------------------------------------------- properties


@st.composite
def cost_models(draw, num_layers: int) -> CostModel:
    """The cost model's form with random sizes; activations saved for a lower lowest layer are never fewer."""
    steps = draw(st.lists(st.integers(0, 20 * MIB), min_size=num_layers, max_size=num_layers))
    head_activation = draw(st.integers(1, 2 * MIB))
    return CostModel(
        key={},
        lowest_activation=[head_activation + sum(steps[layer:]) for layer in range(num_layers)],
        added_activation=[0, *draw(st.lists(st.integers(0, MIB), min_size=num_layers - 1, max_size=num_layers - 1))],
        layer_state=draw(st.lists(st.integers(1, 4 * MIB), min_size=num_layers, max_size=num_layers)),
        layer_upload=[1] * num_layers,
        head_state=draw(st.integers(0, MIB)),
        head_upload=1,
    )


@st.composite
def rounds(draw):
    """A round: a strategy's allocation for random clients, budgets (layer counts or memory) and cost model."""
    num_layers = draw(st.integers(2, 10))
    costs = draw(cost_models(num_layers))
    num_groups = draw(st.integers(1, 3))
    top_layer, everything = costs.peak_bytes([num_layers - 1]), costs.peak_bytes(range(num_layers))
    memory = [
        draw(st.none() | st.integers(top_layer, everything + MIB)) for _ in range(num_groups)
    ]  # None: a layer-count budget
    budgets = [
        draw(st.integers(1, num_layers)) if bound is None else len(costs.deepest_first(bound)) for bound in memory
    ]
    groups = draw(st.lists(st.integers(0, num_groups - 1), min_size=1, max_size=8))
    slots = [ClientSlot(client, group, budgets[group], memory[group]) for client, group in enumerate(groups)]
    name, params = draw(
        st.sampled_from(
            [
                ("fedra", {}),
                ("rgd", {"pattern": "bottleneck"}),
                ("fedhello", {"fim_start": 2, "fim_every": 1}),
                ("fisher-per-byte", {}),
                ("gd", {"pattern": "triangle"}),
            ]
        )
    )
    scores = np.asarray(draw(st.lists(st.floats(0.01, 10), min_size=num_layers, max_size=num_layers)))
    context = AllocationContext(
        round=draw(st.integers(1, 3)),
        total_rounds=3,
        num_layers=num_layers,
        clients=slots,
        group_budgets=budgets,
        rng=np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        layer_scores=lambda: scores,
        costs=costs,
    )
    allocation = build_strategy(name, params).allocate(context)
    return allocation, slots, costs, draw(st.integers(2, len(slots) + 1))


@settings(max_examples=200, deadline=None)
@given(case=rounds())
def test_the_rule_leaves_no_thin_layer_keeps_budgets_and_adds_only_covered_layers(case) -> None:
    allocation, slots, costs, min_trainers = case
    before = allocation.layers
    after = enforce_min_trainers(allocation, slots, min_trainers, costs)
    counts_before, counts_after = counts_of(before), counts_of(after.layers)
    assert all(count == 0 or count >= min_trainers for count in counts_after.values())
    thin = {layer for layer, count in counts_before.items() if count < min_trainers}
    lost = [slot for slot in slots if set(before[slot.client_id]) & thin]
    for slot in slots:
        old, new = set(before[slot.client_id]), after.layers[slot.client_id]
        assert list(new) == sorted(set(new))
        assert within_budget(slot, new, costs)
        assert all(counts_before[layer] >= min_trainers for layer in set(new) - old)
        if slot not in lost:
            assert set(new) == old  # only clients that lost layers change
    covered = {layer for layer, count in counts_after.items() if count}
    for slot in lost:  # the refill stops only when no covered layer fits any more
        new = after.layers[slot.client_id]
        assert not any(within_budget(slot, [*new, layer], costs) for layer in covered - set(new))
    assert after.coverage == CoverageRecord(
        min_trainers=min_trainers,
        pruned=sorted(thin),
        removed=sum(counts_before[layer] for layer in thin),
        refilled=sum(len(set(after.layers[s.client_id]) - set(before[s.client_id])) for s in slots),
        idle=[slot.client_id for slot in lost if not after.layers[slot.client_id]],
    )
    assert enforce_min_trainers(allocation, slots, min_trainers, costs) == after  # deterministic


# --------------------------------------------------------------------------- hand-worked cases


def test_layer_count_budgets_hand_worked() -> None:
    slots = [ClientSlot(0, 0, 2), ClientSlot(1, 0, 2), ClientSlot(2, 0, 2), ClientSlot(3, 1, 3)]
    allocation = Allocation({0: (3, 4), 1: (2, 4), 2: (0, 1), 3: (1, 3, 4)})
    # Counts 0:1 1:2 2:1 3:2 4:3, so layers 0 and 2 go. Client 1 ({4}) takes the thinnest covered layer, 1;
    # client 2 ({1}) then takes 3 (count 2) before 4 (count 3); both are then at their budget of 2.
    after = enforce_min_trainers(allocation, slots, 2, None)
    assert after.layers == {0: (3, 4), 1: (1, 4), 2: (1, 3), 3: (1, 3, 4)}
    assert after.coverage == CoverageRecord(2, pruned=[0, 2], removed=2, refilled=2, idle=[])


def test_memory_budgets_hand_worked() -> None:
    # Synthetic costs, 6 layers: a set whose lowest layer is l costs 1 + 10 (6 - l) MiB of activations, 0.5 MiB
    # per further layer, 0.25 MiB state per layer and 1 MiB for the head: {2, 5} 43, {4, 5} 23, {2} 42.25 MiB.
    costs = synthetic_costs()
    slots = [
        ClientSlot(0, 2, 3, 45 * MIB),
        ClientSlot(1, 2, 3, 45 * MIB),
        ClientSlot(2, 1, 3, 35 * MIB),
        ClientSlot(3, 0, 2, 24 * MIB),
        ClientSlot(4, 3, 5, 60 * MIB),
    ]
    allocation = Allocation({0: (2, 5), 1: (2, 4), 2: (3, 5), 3: (4, 5), 4: (1,)})
    # Layers 1 and 3 have one trainer each and go: client 2 keeps {5}, client 4 nothing. In turn: client 2 cannot
    # afford layer 2 (43 > 35 MiB) and takes 4; client 4 takes 2, then 4, then 5 (43.75 of 60 MiB).
    after = enforce_min_trainers(allocation, slots, 2, costs)
    assert after.layers == {0: (2, 5), 1: (2, 4), 2: (4, 5), 3: (4, 5), 4: (2, 4, 5)}
    assert after.coverage == CoverageRecord(2, pruned=[1, 3], removed=2, refilled=4, idle=[])


def test_a_client_left_with_nothing_covered_sits_out() -> None:
    # `exclusive`-like: one client trains everything, the others sit out by the strategy's choice.
    slots = [ClientSlot(0, 0, 1), ClientSlot(1, 1, 4), ClientSlot(2, 0, 1)]
    after = enforce_min_trainers(Allocation({0: (), 1: (0, 1, 2, 3), 2: ()}), slots, 2, None)
    assert after.layers == {0: (), 1: (), 2: ()}
    assert after.coverage == CoverageRecord(2, pruned=[0, 1, 2, 3], removed=4, refilled=0, idle=[1])


# --------------------------------------------------------------------------- where it cannot apply


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["allocation.strategy=hetlora"], "'hetlora' varies LoRA ranks"),
        (["allocation.strategy=flexlora"], "'flexlora' varies LoRA ranks"),
        (["allocation.strategy=local"], "'local' keeps a personal model per client"),
        (["federation.clients_per_round=1"], "clients_per_round = 1, .*; use 1 \\(off\\)$"),
        (
            ["federation.num_clients=1", "federation.clients_per_round=1", "allocation.strategy=full"],
            "centralized method",
        ),
        (
            ["allocation.min_trainers_per_layer=6"],
            "6 is more than federation.clients_per_round = 5, .*; use 1 \\(off\\) to 5$",
        ),
    ],
)
def test_the_rule_is_refused_where_it_cannot_apply(overrides, why) -> None:
    config = load_config(overrides=["allocation.min_trainers_per_layer=2", *overrides])
    with pytest.raises(ConfigError, match=f"^config field 'allocation.min_trainers_per_layer': .*{why}") as error:
        strategy_from_config(config)
    assert "\n" not in str(error.value)


def test_the_rule_applies_to_layer_strategies_and_defaults_to_off() -> None:
    assert load_config().allocation.min_trainers_per_layer == 1
    for name in ("fedra", "fedhello", "fisher-per-byte", "gd", "exclusive", "straggler", "full"):
        strategy_from_config(
            load_config(overrides=[f"allocation.strategy={name}", "allocation.min_trainers_per_layer=5"])
        )


# --------------------------------------------------------------------------- end to end


def test_a_run_with_memory_budgets_never_has_a_thin_layer_and_resumes_exactly(
    tiny_vit_folder, tmp_path, monkeypatch, one_torch_thread
) -> None:
    """Tiny ViT (4 layers), 3 of 6 clients per round, k = 2; interrupted in round 3 and resumed from round 2."""
    data = tiny_config_data(tiny_vit_folder, groups={"budgets": [1, 2, "1GiB"]})
    costs = prepare_task(load_config(path=write_config(tmp_path / "probe.yaml", data))).costs
    assert costs is not None
    # Weak: two of the top layers; mid: layer 1 and one more above it; strong: everything.
    budgets = [f"{costs.peak_bytes([2, 3]) + 100}B", f"{costs.peak_bytes([1, 3]) + 100}B", "1GiB"]
    data = tiny_config_data(
        tiny_vit_folder,
        allocation={"min_trainers_per_layer": 2},  # fedhello: RGD in round 1, Fisher weights from round 2
        groups={"budgets": budgets},
        federation={"rounds": 6},
    )
    config_path = write_config(tmp_path / "config.yaml", data)
    reference = tmp_path / "reference"
    run_experiment(load_config(path=config_path), reference)
    allocations = strict_records(reference / "allocations.jsonl")
    assert len(allocations) == 6
    for line, metrics in zip(allocations, strict_records(reference / "metrics.jsonl"), strict=True):
        counts = counts_of({client["client"]: tuple(client["layers"]) for client in line["clients"]})
        assert all(count == 0 or count >= 2 for count in counts.values()), line
        assert metrics["layer_counts"] == [counts[layer] for layer in range(4)]
        assert line["coverage"]["min_trainers"] == 2
    assert sum(line["coverage"]["removed"] for line in allocations) > 0  # the rule had work to do

    undo = interrupt_in_round(monkeypatch, 3)
    run = tmp_path / "run"
    assert cli.main(["run", "--config", str(config_path), "--out", str(run)]) == 130
    undo()
    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference)
