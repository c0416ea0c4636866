"""LoRA injection with peft, with target modules detected per architecture."""

from __future__ import annotations

import warnings

import peft
import torch
from torch import nn

from fedhello.config import LoraConfig
from fedhello.errors import ConfigError

# Attention projection names by architecture family: BERT/RoBERTa (and older ViT) use
# query/value; Llama, Mistral, Qwen and current ViT use q_proj/v_proj; T5 uses q/v.
TARGET_MODULE_CANDIDATES: tuple[tuple[str, ...], ...] = (("query", "value"), ("q_proj", "v_proj"), ("q", "v"))


def detect_target_modules(model: nn.Module) -> list[str]:
    linear_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for candidate in TARGET_MODULE_CANDIDATES:
        if set(candidate) <= linear_names:
            return list(candidate)
    raise ConfigError(
        f"config field 'lora.target_modules': cannot detect the attention projections of {type(model).__name__}; "
        f"set them explicitly, from its linear layers: {', '.join(sorted(linear_names))}"
    )


def check_target_modules(model: nn.Module, targets: list[str]) -> None:
    """Refuse any name that matches no module (peft would silently skip it and record it in the adapter)."""
    names = [name for name, _ in model.named_modules()]
    unknown = [target for target in targets if not any(n == target or n.endswith(f".{target}") for n in names)]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(
            f"config field 'lora.target_modules': {unknown} match no module of {type(model).__name__}; "
            f"use names of its linear layers ({', '.join(linear)}) or 'auto'"
        )


def inject_lora(model: nn.Module, settings: LoraConfig, init_seed: int) -> peft.PeftModel:
    """Wrap `model` with LoRA adapters; base weights end up frozen (peft freezes them)."""
    targets = detect_target_modules(model) if settings.target_modules == "auto" else settings.target_modules
    check_target_modules(model, targets)
    lora_config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # annotated int, but peft only divides it by r
        lora_dropout=settings.dropout,
        target_modules=targets,
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft still calls a transformers method that transformers 5 deprecates.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        torch.manual_seed(init_seed)
        try:
            return peft.get_peft_model(model, lora_config)
        except ValueError as error:
            if "not found in the base model" not in str(error) and "Target modules" not in str(error):
                raise
            raise ConfigError(
                f"config field 'lora.target_modules': {targets} match no module of {type(model).__name__}; "
                "use module names of the model (e.g. query, value) or 'auto'"
            ) from None
