"""Offline asset loaders return the documented sizes and label sets; offline models load as documented."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from fedhello.config import load_config
from fedhello.data.datasets import load_dataset
from fedhello.models.sources import resolve_model_source
from fedhello.tasks import task_for


def test_rotten_tomatoes_sizes_and_labels():
    data = load_dataset("rotten-tomatoes")
    assert data.label_names == ("rotten", "fresh")
    assert (len(data.train_texts), len(data.test_texts)) == (10_227, 2_581)
    counts = np.bincount(data.train_labels, minlength=2) + np.bincount(data.test_labels, minlength=2)
    assert counts.tolist() == [5_405, 7_403]  # rotten, fresh: the whole corpus
    assert load_config(preset="rotten-tomatoes").data.dataset == "rotten-tomatoes"


@pytest.mark.slow
def test_smollm2_is_dequantised_once_and_loads_as_a_30_layer_decoder(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path))
    folder = Path(resolve_model_source("smollm2-135m"))
    assert folder == tmp_path / "smollm2-135m"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not list(folder.glob("*.bin")) and not list(tmp_path.glob("*.partial-*"))
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    config = load_config(overrides=["model.name=smollm2-135m", "lora.rank=4"])
    federated = task_for("sequence_classification").load_model(config, 2, torch.device("cpu"))
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # the cache was reused
    assert federated.layer_map.num_layers == 30
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in federated.layer_map.all_names} == {
        "q_proj",
        "v_proj",
    }
    assert federated.preprocessor.chat_template


def test_hub_dataset_names_may_carry_a_config(monkeypatch):
    """`hf:<id>:<config>` asks the hub for one dataset of a collection (LEDGAR of LexGLUE); no network needed."""
    import types

    import numpy as np

    from fedhello.data import datasets

    class Split(dict):
        features: ClassVar[dict] = {"text": None, "label": types.SimpleNamespace(names=["a", "b"])}

    requested = []

    def load_dataset(repository, config_name):
        requested.append((repository, config_name))
        split = Split(text=["x", "y"], label=[0, 1])
        return {"train": split, "test": split}

    fake = types.SimpleNamespace(load_dataset=load_dataset, Image=type("Image", (), {}))
    monkeypatch.setattr(datasets, "import_hub_datasets", lambda: fake)
    data = datasets.load_dataset("hf:coastalcph/lex_glue:ledgar")
    assert requested == [("coastalcph/lex_glue", "ledgar")]
    assert data.label_names == ("a", "b") and np.array_equal(data.test_labels, [0, 1])
    datasets.load_dataset("hf:uoft-cs/cifar100")
    assert requested[-1] == ("uoft-cs/cifar100", None)
