"""Load a Hugging Face sequence classifier (offline alias, local folder or hub id) with LoRA."""

from __future__ import annotations

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fedhello.config import ExperimentConfig
from fedhello.models.federated_model import FederatedModel
from fedhello.models.lora import inject_lora
from fedhello.models.sources import resolve_model_source
from fedhello.seeding import torch_seed


def load_sequence_classifier(config: ExperimentConfig, num_labels: int, device: torch.device) -> FederatedModel:
    source = resolve_model_source(config.model.name)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(config.seed, "init", 0))
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_model = inject_lora(model, config.lora, torch_seed(config.seed, "init", 1))
    return FederatedModel.wrap(peft_model.to(device), train_pooler=config.model.train_pooler, tokenizer=tokenizer)
