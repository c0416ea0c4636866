"""Empirical Fisher diagonal of the LoRA parameters and per-layer scores (SPEC §2.3).

F_j = mean over proxy samples of (d/d theta_j log p(y | x))^2, with per-sample gradients
computed in batches by `torch.func.vmap(grad(...))` over the LoRA tensors only. The task
defines log p(y | x) (`Task.sample_objective`): the true label's log-probability for
classification, the summed log-likelihood of the answer tokens for instruction tuning.
S_l = sum over layer l's LoRA tensors of the Frobenius norm of their Fisher diagonal.

Fused CPU attention (`sdpa`) has no vmap batching rule: under vmap torch runs it one
sample at a time. Scoring therefore switches the model to the `eager` attention
implementation (plain matmul + softmax, which vmap batches) and back afterwards; the
scores are the same up to float rounding (tests/test_fisher.py), and
benchmarks/fisher_scoring.py measures the speed of both.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import peft
import torch
from torch.func import functional_call, grad, vmap

from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel, TensorState
from fedhello.models.layers import LayerMap
from fedhello.tasks.base import Objective

# The attention implementation used while scoring (None: leave the model's own).
SCORING_ATTENTION = "eager"


@contextlib.contextmanager
def attention_implementation(model: peft.PeftModel, implementation: str | None) -> Iterator[None]:
    """Switch a (peft-wrapped) Hugging Face model's attention implementation, then restore it."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if implementation is None or previous is None or previous == implementation:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def is_causal_model(model: torch.nn.Module) -> bool:
    """Whether the model's attention is causal (decoder LLMs): some attention module says so."""
    return any(getattr(module, "is_causal", False) is True for module in model.modules())


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype, causal: bool = False) -> torch.Tensor:
    """[batch, seq] 0/1 mask -> [batch, 1, 1, seq] additive mask ([batch, 1, seq, seq] if causal).

    A prepared 4-D mask makes transformers skip its mask builder, whose data-dependent
    shortcut (`mask.all()`) cannot run under vmap. Because transformers then uses the
    mask as given, a causal model needs the causal triangle in it too.
    """
    allowed = attention_mask[:, None, None, :].bool()
    if causal:
        length = attention_mask.shape[-1]
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return (~allowed).to(dtype) * torch.finfo(dtype).min


def per_sample_gradients(
    federated: FederatedModel,
    batch: dict[str, torch.Tensor],
    names: list[str],
    objective: Objective,
    attention: str | None = SCORING_ATTENTION,
) -> TensorState:
    """Gradient of each sample's objective w.r.t. the named parameters: tensors [batch, *shape].

    `attention` is the attention implementation used meanwhile (None: the model's own).
    """
    model = federated.model
    parameters = federated.parameters_by_name()
    differentiated = {name: parameters[name].detach() for name in names}
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if "attention_mask" in inputs:
        inputs["attention_mask"] = additive_attention_mask(
            inputs["attention_mask"], torch.float32, causal=is_causal_model(model)
        )

    def sample_objective(params: TensorState, sample_inputs: dict[str, torch.Tensor], labels) -> torch.Tensor:
        logits = functional_call(
            model, params, args=(), kwargs={key: value[None] for key, value in sample_inputs.items()}
        ).logits[0]
        return federated.task.sample_objective(logits, labels, objective)

    # torch.func.grad differentiates regardless of the outer no_grad; the outer no_grad keeps
    # regular autograd from also recording a graph through the other trainable parameters
    # (the results would carry grad_fn and accumulating them would retain every batch's graph).
    with warnings.catch_warnings(), torch.no_grad(), attention_implementation(model, attention):
        # Fused CPU attention has no vmap batching rule yet; torch falls back to a loop and says so.
        warnings.filterwarnings("ignore", message="There is a performance drop")
        return vmap(grad(sample_objective), in_dims=(None, 0, 0))(differentiated, inputs, batch["labels"])


def per_sample_gradients_loop(
    federated: FederatedModel, batch: dict[str, torch.Tensor], names: list[str], objective: Objective
) -> TensorState:
    """The plain reference for `per_sample_gradients`: one ordinary backward per sample.

    Each sample runs as a batch of one with its own 2-D mask and the model's own attention.
    Used by the tests (as the ground truth) and by benchmarks/fisher_scoring.py (as the baseline).
    """
    model = federated.model
    federated.set_trainable(names)
    parameters = federated.parameters_by_name()
    per_sample: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    for index in range(len(batch["labels"])):
        model.zero_grad(set_to_none=True)
        logits = model(**{key: value[index : index + 1] for key, value in inputs.items()}).logits[0]
        federated.task.sample_objective(logits, batch["labels"][index], objective).backward()
        for name in names:
            gradient = parameters[name].grad
            if gradient is None:
                raise RuntimeError(f"{name} is trainable but the objective does not depend on it")
            per_sample[name].append(gradient.detach().clone())
    model.zero_grad(set_to_none=True)
    federated.set_trainable(())
    return {name: torch.stack(gradients) for name, gradients in per_sample.items()}


def lora_fisher_diagonal(
    federated: FederatedModel,
    proxy: Split,
    batch_size: int,
    objective: Objective = "log_likelihood",
    attention: str | None = SCORING_ATTENTION,
) -> TensorState:
    """Mean squared per-sample gradient of every LoRA tensor over the proxy set (eval mode)."""
    names = list(federated.layer_map.all_names)
    device = federated.device
    was_training = federated.model.training
    federated.model.eval()
    sums = {
        name: torch.zeros_like(parameter) for name, parameter in federated.parameters_by_name().items() if name in names
    }
    for start in range(0, len(proxy), batch_size):
        batch = {
            key: value.to(device)
            for key, value in proxy.batch(np.arange(start, min(start + batch_size, len(proxy)))).items()
        }
        for name, gradients in per_sample_gradients(federated, batch, names, objective, attention).items():
            sums[name] += gradients.pow(2).sum(0)
    federated.model.train(was_training)
    return {name: total / len(proxy) for name, total in sums.items()}


def layer_scores(fisher: TensorState, layer_map: LayerMap) -> np.ndarray:
    return np.array(
        [sum(float(torch.linalg.norm(fisher[name])) for name in names) for names in layer_map.layers], dtype=np.float64
    )
