"""Load a Hugging Face classifier (offline alias, local folder or hub id) with LoRA.

Text: AutoModelForSequenceClassification + tokenizer. Images: AutoModelForImageClassification
+ image processor (a new head replaces the checkpoint's, e.g. ViT in21k's).
"""

from __future__ import annotations

import torch
import transformers
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.models.federated_model import FederatedModel
from fedhello.models.lora import inject_lora
from fedhello.models.sources import resolve_model_source
from fedhello.seeding import torch_seed


def load_classifier(config: ExperimentConfig, num_labels: int, device: torch.device) -> FederatedModel:
    source = resolve_model_source(config.model.name)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    images = config.model.task == "image_classification"
    try:
        if images:
            preprocessor = AutoImageProcessor.from_pretrained(source)
            model_class, extra = AutoModelForImageClassification, {"ignore_mismatched_sizes": True}
        else:
            preprocessor = AutoTokenizer.from_pretrained(source)
            model_class, extra = AutoModelForSequenceClassification, {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(config.seed, "init", 0))
            model = model_class.from_pretrained(source, num_labels=num_labels, **extra)
    except (OSError, ValueError, KeyError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(
            f"config field 'model.name': cannot load {config.model.name!r} as a {config.model.task} model "
            f"({reason[:120]}); give an offline alias (see `fedhello datasets`), an existing model folder, "
            "or a hub id with network access"
        ) from None
    if not images and model.config.pad_token_id is None and preprocessor.pad_token_id is not None:
        model.config.pad_token_id = preprocessor.pad_token_id
    peft_model = inject_lora(model, config.lora, torch_seed(config.seed, "init", 1))
    return FederatedModel.wrap(peft_model.to(device), train_pooler=config.model.train_pooler, preprocessor=preprocessor)
