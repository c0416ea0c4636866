"""Offline vision: MNIST / Fashion-MNIST loaders, the safe unpickler, and the project-pretrained ViT.

The pretraining runs here use a tiny ViT and a handful of steps; the real `vit-mnist`
(800 steps, about two minutes) is measured in the README, not in the suite.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fedhello.cli import main
from fedhello.config import load_config
from fedhello.data import mnist
from fedhello.data.datasets import load_dataset
from fedhello.errors import ConfigError
from fedhello.models import pretrained_vit
from fedhello.models.pretrained_vit import PretrainSettings, pretrain_vit
from fedhello.models.sources import resolve_model_source
from fedhello.outputs.run_writer import read_jsonl
from fedhello.runner import run_experiment
from fedhello.tasks import task_for

TINY = PretrainSettings(
    steps=3, batch_size=8, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, validation_size=100
)


def test_mnist_has_the_documented_splits():
    data = load_dataset("mnist")
    assert (data.train_images.shape, data.test_images.shape) == ((50_000, 28, 28, 1), (10_000, 28, 28, 1))
    assert data.train_images.dtype == np.uint8 and data.train_images.max() == 255
    assert data.num_classes == 10 and set(np.unique(data.train_labels)) == set(range(10))
    assert set(np.unique(data.test_labels)) == set(range(10))
    pretraining = mnist.pretraining_split("mnist")
    assert pretraining.images.shape == (10_000, 28, 28, 1) and pretraining.labels.shape == (10_000,)


def test_the_data_unpickler_refuses_anything_but_numpy_arrays():
    malicious = pickle.dumps(os.system)  # a pickle that would hand back os.system
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system|os\.system"):
        mnist.load_numpy_pickle(io.BytesIO(malicious))
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2]))
    loaded = mnist.load_numpy_pickle(io.BytesIO(pickle.dumps(arrays)))
    assert all(np.array_equal(a, b) for a, b in zip(loaded, arrays, strict=True))


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_parser_reads_a_hand_written_file(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "images.gz", images)
    assert np.array_equal(mnist.read_idx(tmp_path / "images.gz"), images)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00")  # float32 idx
    with pytest.raises(ValueError, match="unsigned bytes"):
        mnist.read_idx(tmp_path / "bad")


def test_fashion_mnist_needs_its_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "FASHION_MNIST_FOLDER", tmp_path / "absent")
    mnist.fashion_mnist_splits.cache_clear()
    with pytest.raises(ConfigError, match="apt install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_fashion_mnist_holds_out_a_pretraining_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for prefix, size in (("train", 10_050), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (size, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(size) % 10)
    monkeypatch.setattr(mnist, "FASHION_MNIST_FOLDER", tmp_path)
    mnist.fashion_mnist_splits.cache_clear()
    try:
        data = load_dataset("fashion-mnist")
        pretraining = mnist.pretraining_split("fashion-mnist")
    finally:
        mnist.fashion_mnist_splits.cache_clear()
    assert (len(data.train_labels), len(data.test_labels), len(pretraining.labels)) == (50, 20, 10_000)
    assert data.train_images.shape[1:] == (28, 28, 1) and data.label_names[-1] == "Ankle boot"


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch, one_torch_thread) -> Path:
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_pretrain_vit_writes_a_loadable_folder_that_the_alias_resolves_to(tmp_cache):
    result = pretrain_vit("mnist", TINY, progress=False)
    folder = tmp_cache / "vit-mnist-pretrained"
    assert result.folder == folder and 0.0 <= result.validation_accuracy <= 1.0
    assert sorted(path.name for path in folder.iterdir()) == sorted(pretrained_vit.CACHE_FILES)
    assert json.loads((folder / "preprocessor_config.json").read_text())["size"] == {"height": 28, "width": 28}
    assert "not a foundation model" in json.loads((folder / "pretraining.json").read_text())["what"]
    assert resolve_model_source("vit-mnist") == str(folder)
    config = load_config(overrides=["model.name=vit-mnist", "model.task=image_classification"])
    federated = task_for(config.model.task).load_model(config, 3, torch.device("cpu"))  # a new 3-class head
    # transformers 5 names ViT's attention projections q_proj/v_proj (query/value before); lora.py detects either.
    assert federated.layer_map.num_layers == TINY.num_layers
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in federated.layer_map.all_names} == {
        "q_proj",
        "v_proj",
    }


def test_interrupted_pretraining_leaves_nothing_behind(tmp_cache, monkeypatch):
    def interrupted_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained_vit.ViTImageProcessor, "save_pretrained", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain_vit("mnist", TINY, progress=False)
    assert not tmp_cache.exists() or not list(tmp_cache.iterdir())


def test_cli_pretrain_vit_reports_folder_and_accuracy(tmp_cache, monkeypatch, capsys):
    monkeypatch.setattr(pretrained_vit, "PretrainSettings", lambda: TINY)
    assert main(["pretrain-vit", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_cache / "vit-mnist-pretrained") in printed and "after 2 steps" in printed
    assert "validation accuracy" in printed


def test_federated_lora_on_the_pretrained_vit_runs_over_mnist(tmp_cache, tmp_path):
    pretrain_vit("mnist", TINY, progress=False)
    config = load_config(
        preset="vit-mnist",
        overrides=[
            "data.max_train_samples=400",
            "data.max_test_samples=100",
            "federation.num_clients=4",
            "federation.clients_per_round=2",
            "federation.rounds=2",
            "training.max_local_steps=2",
            "fisher.proxy_size=16",
            "evaluation.every=1",
            "evaluation.final_size=null",
            "output.progress=false",
            "output.tensorboard=false",
            "output.plots=false",
        ],
    )
    outcome = run_experiment(config, tmp_path / "run")
    assert [record["round"] for record in read_jsonl(tmp_path / "run" / "metrics.jsonl")][-1] == 2
    assert 0.0 <= outcome.final_eval.accuracy <= 1.0
