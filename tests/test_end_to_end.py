"""End-to-end federated runs on the real offline assets (MiniLM-L6 + 20 Newsgroups).

Scaled down (2,000 training samples, a 400-sample test subset) so each run takes well
under a minute on two CPU cores, but everything is real: tokenizer, pretrained
weights, non-IID partition, allocation, local training, aggregation, evaluation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedhello.config import load_config
from fedhello.outputs.run_writer import read_jsonl
from fedhello.preparation import prepare_task
from fedhello.runner import run_experiment
from fedhello.tasks import EvaluationSettings

pytestmark = pytest.mark.slow

SMALL = [
    "data.max_train_samples=2000",
    "data.max_test_samples=400",
    "federation.num_clients=10",
    "federation.clients_per_round=4",
    "partition.scheme=pathological",
    "partition.classes_per_client=4",
    "fisher.proxy_size=32",
    "evaluation.every=4",
    "evaluation.subset_size=null",
    "output.tensorboard=true",
    "output.progress=false",
]


def small_config(*extra: str):
    return load_config(overrides=[*SMALL, *extra])


def untrained_accuracy(config) -> float:
    task = prepare_task(config)
    return task.federated.task.evaluate(task.federated, task.test, np.arange(len(task.test)), EvaluationSettings(64))[
        "accuracy"
    ]


def test_fedhello_strategy_learns_and_writes_every_output(tmp_path):
    config = small_config(
        "federation.rounds=8",
        "allocation.strategy=fedhello",
        "allocation.params.fim_start=3",
        "allocation.params.fim_every=2",
        "groups.ratio=1:1:1",
    )
    baseline = untrained_accuracy(config)
    outcome = run_experiment(config, tmp_path / "run")
    out = outcome.out_dir

    final = outcome.final_eval
    assert final.split == "test" and final.num_samples == 400
    assert final.accuracy >= baseline + 0.15, (baseline, final)
    assert final.accuracy >= 0.25

    rounds = read_jsonl(out / "metrics.jsonl")
    assert [r["round"] for r in rounds] == list(range(1, 9))
    assert [r["round"] for r in rounds if "eval" in r] == [4, 8]
    assert all(r["dropped"] == [] and 0 <= r["eval_time_s"] <= r["wall_time_s"] for r in rounds)
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 1 + 8

    budgets = json.loads((out / "run_info.json").read_text())["group_budgets"]
    assert budgets == [3, 5, 6]  # L = 6: ceil of 1/2, 3/4, 1 times L
    allocations = read_jsonl(out / "allocations.jsonl")
    clients = read_jsonl(out / "clients.jsonl")
    assert len(allocations) == 8 and len(clients) == 8 * 4
    for allocation in allocations:
        for entry in allocation["clients"]:
            assert len(entry["layers"]) == budgets[entry["group"]]
            assert len(set(entry["layers"])) == len(entry["layers"])
    for rnd, allocation in zip(rounds, allocations, strict=True):
        counts = np.zeros(6, dtype=int)
        for entry in allocation["clients"]:
            counts[entry["layers"]] += 1
        assert rnd["layer_counts"] == counts.tolist()
    fisher = read_jsonl(out / "fisher.jsonl")
    assert [record["round"] for record in fisher] == [3, 5, 7]
    for record in fisher:
        assert len(record["scores"]) == 6 and abs(sum(record["weights"]) - 1) < 1e-9
        order = np.argsort(record["scores"])
        assert np.all(np.diff(np.asarray(record["tiers"])[order]) >= 0)  # tiers follow the scores

    for name in (
        "config.yaml",
        "summary.md",
        "partition.csv",
        "learning_curves.png",
        "allocation_heatmap.png",
        "layer_counts.png",
        "fisher_scores.png",
        "partition.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "tensorboard").iterdir())
    assert load_config(path=out / "config.yaml") == config


def test_fedavg_lora_learns(tmp_path):
    config = small_config("federation.rounds=6", "allocation.strategy=full", "fisher.proxy_size=0")
    baseline = untrained_accuracy(config)
    outcome = run_experiment(config, tmp_path / "run")
    assert outcome.final_eval.accuracy >= baseline + 0.15
    clients = read_jsonl(outcome.out_dir / "clients.jsonl")
    assert all(record["layers"] == list(range(6)) for record in clients)
    assert not (outcome.out_dir / "fisher.jsonl").exists()


def _comparable(path):
    """Metrics without wall-clock fields."""
    records = []
    for record in read_jsonl(path):
        records.append({key: value for key, value in record.items() if not key.endswith("time_s")})
    return json.dumps(records, sort_keys=True)


def test_same_config_and_seed_reproduce_the_same_numbers(tmp_path):
    # Evaluation is most of a short run's time and reproduces like training does: 100 test samples suffice.
    overrides = [
        "federation.rounds=2",
        "allocation.strategy=rgd",
        "evaluation.every=1",
        "data.max_train_samples=600",
        "data.max_test_samples=100",
    ]
    first = run_experiment(small_config(*overrides), tmp_path / "a")
    second = run_experiment(small_config(*overrides), tmp_path / "b")
    assert _comparable(first.out_dir / "metrics.jsonl") == _comparable(second.out_dir / "metrics.jsonl")
    assert _comparable(first.out_dir / "clients.jsonl") == _comparable(second.out_dir / "clients.jsonl")
    for name, tensor in first.global_state.items():
        assert torch.equal(tensor, second.global_state[name]), name
    other_seed = run_experiment(small_config(*overrides, "seed=1"), tmp_path / "c")
    assert _comparable(first.out_dir / "metrics.jsonl") != _comparable(other_seed.out_dir / "metrics.jsonl")
