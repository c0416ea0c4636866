"""Load a Hugging Face model (offline alias, local folder or hub id) and inject LoRA.

The task decides the model class and the preprocessor (tokenizer or image processor);
this module owns what every task shares: locating the weights, a seeded initialisation
of whatever the checkpoint lacks (a new head), one clear error when loading fails, and
LoRA injection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peft
import torch
import transformers

from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.models.lora import inject_lora
from fedhello.models.sources import resolve_model_source
from fedhello.seeding import torch_seed


def load_with_lora(
    config: ExperimentConfig,
    load_preprocessor: Callable[[str], Any],
    load_model: Callable[[str], torch.nn.Module],
    device: torch.device,
) -> tuple[peft.PeftModel, Any]:
    """(LoRA-wrapped model on `device`, preprocessor), or a ConfigError naming `model.name`."""
    source = resolve_model_source(config.model.name)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        preprocessor = load_preprocessor(source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(config.seed, "init", 0))
            model = load_model(source)
    except (OSError, ValueError, KeyError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(
            f"config field 'model.name': cannot load {config.model.name!r} as a {config.model.task} model "
            f"({reason[:120]}); give an offline alias (see `fedhello datasets`), an existing model folder, "
            "or a hub id with network access"
        ) from None
    return inject_lora(model, config.lora, torch_seed(config.seed, "init", 1)).to(device), preprocessor


def ensure_pad_token(tokenizer: Any) -> None:
    """Decoder tokenizers often have no padding token; borrow end-of-sequence (padding is masked anyway)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
