"""The image-classification path on offline data: a tiny random-init ViT on scikit-learn digits.

The same code path serves ViT-B/16 on CIFAR-100 for users with hub access (the paper presets).
"""

from __future__ import annotations

import pytest

from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.outputs.run_writer import read_jsonl
from fedhello.preparation import prepare_task
from fedhello.runner import run_experiment


def vit_config(folder, *extra):
    return load_config(
        overrides=[
            f"model.name={folder}",
            "model.task=image_classification",
            "data.dataset=digits",
            "federation.num_clients=6",
            "federation.clients_per_round=3",
            "federation.rounds=12",
            "partition.scheme=iid",
            "fisher.proxy_size=32",
            "training.lr=0.02",
            "training.max_local_steps=10",
            "evaluation.every=6",
            "evaluation.subset_size=null",
            "output.progress=false",
            "output.tensorboard=false",
            *extra,
        ]
    )


def test_image_batches_match_the_processor(tiny_vit_folder):
    task = prepare_task(vit_config(tiny_vit_folder))
    batch = task.train.batch([0, 1, 2])
    assert batch["pixel_values"].shape == (3, 1, 8, 8)
    assert batch["pixel_values"].min() >= -1.0 and batch["pixel_values"].max() <= 1.0  # (x - 0.5) / 0.5
    assert len(task.train) + len(task.proxy) == 1397 and len(task.test) == 400
    assert task.federated.layer_map.num_layers == 4


def test_fedhello_on_a_vision_transformer_learns(tiny_vit_folder, tmp_path):
    config = vit_config(
        tiny_vit_folder,
        "allocation.strategy=fedhello",
        "allocation.params.fim_start=4",
        "allocation.params.fim_every=4",
    )
    outcome = run_experiment(config, tmp_path / "run")
    assert outcome.final_eval.accuracy >= 0.35  # chance is 0.10
    assert [record["round"] for record in read_jsonl(tmp_path / "run" / "fisher.jsonl")] == [4, 8, 12]


def test_task_must_fit_the_dataset(tiny_vit_folder):
    with pytest.raises(ConfigError, match=r"model\.task"):
        prepare_task(vit_config(tiny_vit_folder, "model.task=sequence_classification"))


def test_cosine_classifier_from_the_config_and_clients_skip_the_cost_probe(tiny_vit_folder):
    from fedhello.tasks.classification import CosineClassifier

    config = vit_config(
        tiny_vit_folder, "model.classifier=cosine", "model.cosine_scale=12", "groups.budgets=['1GiB', '1GiB', '1GiB']"
    )
    server_side = prepare_task(config)
    head = server_side.federated.model.get_submodule("base_model.model.classifier")
    assert isinstance(head, CosineClassifier) and head.scale == 12
    assert server_side.costs is not None
    assert prepare_task(config, measure_costs=False).costs is None  # a Flower client: only the server prices sets
