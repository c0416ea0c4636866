"""Every run saves its final global adapter in PEFT's format; it reloads with PeftModel.from_pretrained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from fedhello.config import load_config
from fedhello.preparation import prepare_task
from fedhello.runner import run_experiment


def test_saved_adapter_reloads_and_reproduces_the_final_evaluation(tiny_vit_folder, tmp_path, one_torch_thread):
    config = load_config(
        overrides=[
            f"model.name={tiny_vit_folder}",
            "model.task=image_classification",
            "data.dataset=digits",
            "data.max_test_samples=24",
            "federation.num_clients=4",
            "federation.clients_per_round=2",
            "federation.rounds=2",
            "partition.scheme=iid",
            "fisher.proxy_size=16",
            "allocation.strategy=fedra",
            "training.lr=0.05",
            "training.max_local_steps=5",
            "evaluation.subset_size=null",
            "output.progress=false",
            "output.tensorboard=false",
            "output.plots=false",
        ]
    )
    outcome = run_experiment(config, tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"

    base = AutoModelForImageClassification.from_pretrained(tiny_vit_folder)
    missing, unexpected = base.load_state_dict(load_file(adapter / "head.safetensors"), strict=False)
    assert not unexpected and {"classifier.weight", "classifier.bias"}.isdisjoint(missing)
    model = PeftModel.from_pretrained(base, adapter).eval()

    test = prepare_task(config).test
    batch = test.batch(np.arange(len(test)))
    with torch.inference_mode():
        logits = model(pixel_values=batch["pixel_values"]).logits
    accuracy = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    loss = F.cross_entropy(logits, batch["labels"]).item()
    assert outcome.final_eval.num_samples == len(test) == 24
    assert accuracy == pytest.approx(outcome.final_eval.accuracy)
    assert loss == pytest.approx(outcome.final_eval.loss, abs=1e-5)
    with torch.inference_mode(), model.disable_adapter():  # the LoRA factors matter: without them the loss differs
        assert (
            abs(F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"]).item() - loss) > 1e-3
        )
