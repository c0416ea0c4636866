"""Memory budgets: the cost model against measurement, budget strings, feasible allocations, accounting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_split
from fedhello.allocation.base import AllocationContext, ClientSlot
from fedhello.allocation.groups import resolve_budgets
from fedhello.allocation.patterns import PATTERNS
from fedhello.allocation.registry import build_strategy
from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.outputs.run_writer import read_jsonl
from fedhello.preparation import prepare_task
from fedhello.resources.cost_model import CostModel
from fedhello.resources.memory_units import parse_memory
from fedhello.resources.probe import COST_FILE, cost_model_for, largest_batch, probe_costs
from fedhello.runner import run_experiment
from fedhello.training import LocalTrainingSettings, train_locally

L = 6


# ---------------------------------------------------------------------------------------
# The cost model against the bytes local training measures


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_cost_model_prices_a_training_step_exactly(arch, tiny_federated, encoded_split):
    """Each set's activation price is what a real step saves on the probe's (padded) batch; no batch saves more."""
    federated = tiny_federated(arch, L)
    padded = random_split(16, 32, pad_from={3: 20, 9: 5})
    batch = largest_batch(padded, 16)
    assert not batch["attention_mask"].all()  # the costliest batch carries padding
    costs = probe_costs(federated, batch, "fp32", key={})
    settings = LocalTrainingSettings(
        lr=1e-3, weight_decay=0.0, batch_size=16, local_epochs=1, max_local_steps=1, max_grad_norm=None
    )
    unpadded = encoded_split(16, seq_len=32)
    for layers in ([5], [4, 5], [2, 5], [0, 3], [0, 2, 4], [1, 2, 3, 4, 5], list(range(L))):
        names = federated.layer_map.names_for(layers) + list(federated.head_names)
        predicted = costs.cost(layers).activation_bytes
        for split, exact in ((padded, True), (unpadded, False)):
            measured = train_locally(federated, split, np.arange(16), names, settings, torch.Generator().manual_seed(0))
            assert measured.activation_bytes == predicted if exact else measured.activation_bytes <= predicted, (
                layers,
                predicted,
                measured,
            )


def test_the_probe_batch_is_the_longest_and_padded_when_padding_exists():
    split = random_split(6, 8, pad_from={4: 3})  # samples 0-3 and 5 fill the width; sample 4 is padded
    assert torch.equal(largest_batch(split, 3)["input_ids"], split.batch(np.array([0, 1, 4]))["input_ids"])
    assert largest_batch(random_split(6, 8), 3)["attention_mask"].all()  # nothing padded: the first samples
    assert torch.equal(largest_batch(split, 1)["input_ids"], split.batch(np.array([4]))["input_ids"])  # fixed width


def test_activation_bytes_fall_linearly_with_the_lowest_layer(tiny_federated, encoded_split):
    federated = tiny_federated("bert", L)
    costs = probe_costs(federated, encoded_split(8, seq_len=16).batch(np.arange(8)), "fp32", key={})
    steps = np.diff(costs.lowest_activation)
    assert np.all(steps < 0) and np.ptp(steps) <= 0.02 * abs(steps.mean())  # a per-layer constant
    assert costs.cost(range(3, L)).relative_time == pytest.approx(
        1 / 3 + 2 / 3 * costs.cost(range(3, L)).activation_bytes / costs.cost(range(L)).activation_bytes
    )


def test_cost_model_is_cached_by_key(tiny_vit_folder, tmp_path):
    config = vit_config(tiny_vit_folder)
    task = prepare_task(config)
    fresh = cost_model_for(config, task.federated, task.train)
    cached = CostModel(**{**fresh.to_json(), "head_state": 1})
    cached.save(tmp_path / COST_FILE)
    assert cost_model_for(config, task.federated, task.train, tmp_path / COST_FILE) == cached
    other = load_config(overrides=[*VIT, f"model.name={tiny_vit_folder}", "training.batch_size=8"])
    assert cost_model_for(other, task.federated, task.train, tmp_path / COST_FILE).key != cached.key


# ---------------------------------------------------------------------------------------
# Budget strings


@pytest.mark.parametrize(
    "text, size",
    [
        ("350MiB", 350 * 2**20),
        ("1.5GiB", 3 * 2**29),
        ("800MB", 800 * 10**6),
        ("64 KiB", 65536),
        ("2kB", 2000),
        ("123B", 123),
    ],
)
def test_memory_sizes_parse(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["350", "350mb", "350 XB", "MiB", "-3MiB", "0MiB"])
def test_bad_memory_budgets_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError) as error:
        load_config(overrides=[f"groups.budgets=[3, '{bad}', 1.0]"])
    message = str(error.value)
    assert "groups.budgets" in message and "\n" not in message
    assert "MiB" in message and ("GB" in message or "positive" in message)


def test_mixed_budgets_are_allowed():
    assert load_config(overrides=["groups.budgets=[2, 0.5, 350MiB]"]).groups.budgets == [2, 0.5, "350MiB"]


def synthetic_costs(num_layers: int = L) -> CostModel:
    """Activation falls linearly with the lowest layer (10 MiB per layer + 1 MiB head), 0.5 MiB per added layer."""
    mib = 2**20
    return CostModel(
        key={},
        lowest_activation=[mib + 10 * mib * (num_layers - layer) for layer in range(num_layers)],
        added_activation=[0] + [mib // 2] * (num_layers - 1),
        layer_state=[mib // 4] * num_layers,
        layer_upload=[mib // 16] * num_layers,
        head_state=mib,
        head_upload=mib // 4,
    )


def test_a_budget_below_the_cheapest_set_names_it():
    costs = synthetic_costs()
    with pytest.raises(ConfigError, match=r"groups.budgets.*'5MiB'.*layer 5 alone.*12.2 MiB"):
        resolve_budgets(["5MiB"], L, costs)
    assert resolve_budgets([3, 0.5, "13MiB", "40MiB", "1GiB"], L, costs) == [3, 3, 1, 3, 6]


def test_a_too_small_budget_is_refused_before_the_run(tiny_vit_folder, tmp_path):
    with pytest.raises(ConfigError, match=r"groups.budgets.*below the cheapest trainable set, layer 3 alone"):
        run_experiment(vit_config(tiny_vit_folder, "groups.budgets=[1, '1KiB', 4]"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Every layer strategy stays within every client's memory budget

STRATEGIES = (
    [("gd", {"pattern": pattern}) for pattern in PATTERNS]
    + [("rgd", {"pattern": pattern}) for pattern in PATTERNS]
    + [("fim", {}), ("fedhello", {"fim_start": 3, "fim_every": 2}), ("fedra", {}), ("fedra-depth", {})]
    + [("fisher-per-byte", {"every": 2})]
)


@pytest.mark.parametrize("name, params", STRATEGIES, ids=[f"{n}-{p.get('pattern', '')}" for n, p in STRATEGIES])
def test_no_allocation_exceeds_its_clients_memory_budget(name, params):
    costs = synthetic_costs()
    budgets = ["13MiB", "30MiB", "45MiB", 3]
    layer_budgets = resolve_budgets(budgets, L, costs)
    memory = [parse_memory(b) if isinstance(b, str) else None for b in budgets]
    for seed in range(5):
        strategy = build_strategy(name, params)
        pricing = costs.for_depth_reduced() if strategy.depth_reduced else costs
        scores = np.random.default_rng(seed).random(L)
        for round_number in range(1, 6):
            slots = [
                ClientSlot(client, client % 4, layer_budgets[client % 4], memory[client % 4]) for client in range(8)
            ]
            context = AllocationContext(
                round_number,
                5,
                L,
                slots,
                layer_budgets,
                np.random.default_rng([seed, round_number]),
                layer_scores=lambda scores=scores: scores,
                costs=pricing,
            )
            allocation = strategy.allocate(context)
            for slot in slots:
                layers = allocation.layers[slot.client_id]
                assert layers and list(layers) == sorted(set(layers))
                if slot.memory_bytes is None:
                    assert len(layers) <= slot.budget
                else:
                    assert pricing.peak_bytes(layers) <= slot.memory_bytes, (name, seed, slot, layers)


def test_fisher_per_byte_buys_the_most_score_per_byte():
    mib = 2**20
    # Gradient and AdamW state dominate here (10 MiB per layer), so 27 MiB buys two layers.
    costs = CostModel(
        {},
        [mib + mib * (L - layer) for layer in range(L)],
        [0] + [mib // 2] * (L - 1),
        [10 * mib] * L,
        [mib] * L,
        mib,
        mib,
    )
    strategy = build_strategy("fisher-per-byte", {})
    slot = ClientSlot(0, 0, 2, 27 * mib)
    scores = np.array([0.1, 0.1, 5.0, 0.1, 3.0, 0.1])
    context = AllocationContext(
        1, 5, L, [slot], [2], np.random.default_rng(0), layer_scores=lambda: scores, costs=costs
    )
    assert strategy.allocate(context).layers[0] == (2, 4)  # deepest-first would give (4, 5)
    context.clients, context.round = [ClientSlot(0, 0, 1)], 2  # a layer-count budget caps the count
    assert strategy.allocate(context).layers[0] == (2,)


# ---------------------------------------------------------------------------------------
# End to end: a tiny ViT run with memory budgets reports zero violations

VIT = [
    "model.task=image_classification",
    "data.dataset=digits",
    "federation.num_clients=6",
    "federation.clients_per_round=3",
    "federation.rounds=3",
    "partition.scheme=iid",
    "fisher.proxy_size=32",
    "training.lr=0.02",
    "training.max_local_steps=2",
    "evaluation.every=3",
    "evaluation.subset_size=null",
    "evaluation.final_size=100",
    "output.progress=false",
    "output.tensorboard=false",
    "output.plots=false",
]


def vit_config(folder, *extra):
    return load_config(overrides=[f"model.name={folder}", *VIT, *extra])


def test_memory_budget_run_reports_zero_violations(tiny_vit_folder, tmp_path):
    costs = prepare_task(vit_config(tiny_vit_folder, "groups.budgets=[1, 2, '1GiB']")).costs
    budgets = [f"{costs.peak_bytes(range(lowest, 4)) + 100}B" for lowest in (3, 2, 0)]
    config = vit_config(tiny_vit_folder, f"groups.budgets={json.dumps(budgets)}", "allocation.strategy=fisher-per-byte")
    outcome = run_experiment(config, tmp_path / "run")
    run = tmp_path / "run"
    assert CostModel.load(run / COST_FILE) == costs
    memory = [parse_memory(budget) for budget in budgets]
    for client in read_jsonl(run / "clients.jsonl"):
        assert client["activation_bytes"] + client["state_bytes"] <= memory[client["group"]]
    summary = (run / "summary.md").read_text()
    section = summary.split("## Budgets per capability group")[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3 and all(row.rstrip(" |").endswith("| 0") for row in rows)
    assert "violations" in outcome.summary_table


def test_budget_accounting_counts_client_rounds_over_their_memory_budget():
    from fedhello.outputs.budget_accounting import budget_rows
    from fedhello.records import ClientRecord

    def client(group, layers, activation, state=0, status="trained"):
        return ClientRecord(1, 0, group, layers, status, activation_bytes=activation, state_bytes=state)

    clients = [
        client(0, [5], 900, 100),
        client(0, [4, 5], 1000, 1),
        client(0, [], 0, status="idle"),
        client(1, [0, 1, 2, 3, 4, 5], 10**9),
    ]
    _, rows = budget_rows(clients, ["1000B", 3], [1, 3], [1000, None])
    assert rows[0][1:3] == ["1000B", 2] and rows[0][-4:] == [1.5, 4.5, 4, 1]
    assert rows[1][1] == "3 layers" and rows[1][-1] is None  # layer-count budgets are the strategy's to interpret
