"""Causal-LM instruction tuning: a decoder LLM learns the answers of (prompt, answer) pairs.

Inputs are chat-template renderings of each pair with the prompt and padding masked out
of the labels (data/instruction_encoding.py), so the loss, the held-out perplexity and
the Fisher objective all count answer tokens only. The evaluation also records the loss
per category (class_loss / class_tokens), so a comparison can report the held-out loss on
the categories a group of clients holds. The headline metric is that held-out loss (mean
loss per answer token on the test pairs, lower is better); perplexity and ROUGE-L of greedy
generations on the first `evaluation.generate_samples` held-out prompts are secondary: the
ROUGE-L of a handful of answers is too noisy to rank rounds or methods by. There is no task
head: the LM head is part of the frozen base, and clients exchange LoRA tensors only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedhello.config import ExperimentConfig
from fedhello.data.instruction_encoding import IGNORE_INDEX, InstructionSplit, encode_instructions
from fedhello.data.instructions import InstructionData
from fedhello.data.rouge import rouge_l
from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.models.loading import ensure_pad_token, load_with_lora
from fedhello.precision import autocast_for
from fedhello.tasks.base import EvaluationSettings, Objective, Task


class CausalLMTask(Task):
    kind = "causal_lm"
    description = "instruction tuning of a decoder LLM (Llama-style q_proj/v_proj): answer tokens only"
    data_type = InstructionData
    comparison_metrics = ("loss", "perplexity", "rouge_l")  # held-out loss: low noise, unlike a few answers' ROUGE-L

    def load_model(self, config: ExperimentConfig, num_classes: int, device: torch.device) -> FederatedModel:
        model, tokenizer = load_with_lora(
            config, AutoTokenizer.from_pretrained, AutoModelForCausalLM.from_pretrained, device
        )
        ensure_pad_token(tokenizer)
        return FederatedModel.wrap(model, self, (), tokenizer)

    def encode(
        self,
        federated: FederatedModel,
        data: InstructionData,
        split: Literal["train", "test"],
        positions: np.ndarray,
        config: ExperimentConfig,
    ) -> InstructionSplit:
        prompts, responses = getattr(data, f"{split}_prompts"), getattr(data, f"{split}_responses")
        return encode_instructions(
            federated.preprocessor,
            [prompts[i] for i in positions],
            [responses[i] for i in positions],
            getattr(data, f"{split}_categories")[positions],
            config.model.max_length,
            system_prompt=config.model.system_prompt,
        )

    @torch.inference_mode()
    def evaluate(
        self, federated: FederatedModel, data: Split, indices: np.ndarray, settings: EvaluationSettings
    ) -> dict[str, Any]:
        if not isinstance(data, InstructionSplit):
            raise TypeError(f"causal_lm evaluates an InstructionSplit, not a {type(data).__name__}")
        model, device = federated.model, federated.device
        model.eval()
        categories = data.classes[indices].numpy()
        num_categories = int(data.classes.max()) + 1 if len(data) else 0
        sample_loss, sample_tokens = np.zeros(len(indices)), np.zeros(len(indices), dtype=np.int64)
        for start in range(0, len(indices), settings.batch_size):
            batch = {
                key: value.to(device) for key, value in data.batch(indices[start : start + settings.batch_size]).items()
            }
            labels = batch.pop("labels")
            with autocast_for(device, settings.precision):
                logits = model(**batch).logits.float()
            targets = labels[:, 1:]
            token_loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
            ).view(targets.shape)
            stop = start + len(targets)
            sample_loss[start:stop] = token_loss.sum(1).double().cpu().numpy()
            sample_tokens[start:stop] = (targets != IGNORE_INDEX).sum(1).cpu().numpy()
        loss = float(sample_loss.sum()) / max(int(sample_tokens.sum()), 1)
        metrics: dict[str, Any] = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "num_samples": len(indices),
            "class_loss": np.bincount(categories, weights=sample_loss, minlength=num_categories).tolist(),
            "class_tokens": np.bincount(categories, weights=sample_tokens, minlength=num_categories)
            .astype(np.int64)
            .tolist(),
        }
        generated = indices[: settings.generate_samples]
        if len(generated):
            predictions = greedy_answers(federated, data, generated, settings)
            metrics["rouge_l"] = rouge_l(predictions, data.references(generated))
            metrics["generated_samples"] = len(generated)
        return metrics

    def sample_objective(self, logits: torch.Tensor, labels: torch.Tensor, objective: Objective) -> torch.Tensor:
        """Summed log-likelihood (or raw logit) of the answer tokens: position t predicts token t + 1."""
        targets = labels[1:]
        answer = targets != IGNORE_INDEX
        scores = torch.log_softmax(logits[:-1], -1) if objective == "log_likelihood" else logits[:-1]
        picked = scores.gather(-1, torch.where(answer, targets, 0)[:, None])[:, 0]
        return (picked * answer).sum()


def greedy_answers(
    federated: FederatedModel, data: InstructionSplit, indices: np.ndarray, settings: EvaluationSettings
) -> list[str]:
    """Greedy continuations of the held-out prompts, decoded without special tokens."""
    model, device, tokenizer = federated.model, federated.device, federated.preprocessor
    answers: list[str] = []
    for start in range(0, len(indices), settings.batch_size):
        prompts = {
            key: value.to(device)
            for key, value in data.prompt_batch(indices[start : start + settings.batch_size]).items()
        }
        with autocast_for(device, settings.precision), warnings.catch_warnings():
            # The checkpoint's generation config may carry sampling settings that greedy decoding ignores.
            warnings.filterwarnings("ignore", category=UserWarning)
            output = model.generate(
                **prompts,
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        answers += tokenizer.batch_decode(output[:, prompts["input_ids"].shape[1] :], skip_special_tokens=True)
    return [answer.strip() for answer in answers]
