"""The cosine classifier: scale x cos(features, class weights), on the weights of the head it replaces."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import NUM_LABELS, tiny_base_model
from fedhello.config import LoraConfig
from fedhello.models.lora import inject_lora
from fedhello.tasks.classification import CosineClassifier, head_parameter_names, use_cosine_classifier


def test_logits_are_scaled_cosines_and_ignore_the_feature_norm() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 3)
    head = CosineClassifier(linear, scale=16.0)
    features = torch.randn(4, 5)
    by_hand = torch.stack(
        [
            torch.stack([16.0 * F.cosine_similarity(feature, row, dim=0) for row in linear.weight])
            for feature in features
        ]
    )
    torch.testing.assert_close(head(features), by_hand)
    torch.testing.assert_close(head(7.5 * features), by_hand)
    assert head(features).abs().max() <= 16.0 + 1e-5
    assert head.weight is linear.weight and head.bias is None


def test_replaces_every_architectures_head_and_keeps_its_parameter_names() -> None:
    for arch, leaf in (("bert", "classifier"), ("vit", "classifier"), ("llama", "score")):
        model = tiny_base_model(arch, 2)
        weight = model.get_submodule(leaf).weight.detach().clone()
        use_cosine_classifier(model, scale=10.0)
        head = model.get_submodule(leaf)
        assert isinstance(head, CosineClassifier) and head.scale == 10.0
        assert torch.equal(head.weight, weight) and head.weight.shape[0] == NUM_LABELS
        peft_model = inject_lora(model, LoraConfig(rank=2, alpha=4), init_seed=0)
        assert any(name.endswith(f"{leaf}.weight") for name in head_parameter_names(peft_model, train_pooler=False))


def test_a_frozen_cosine_head_still_lets_lora_learn() -> None:
    """With the head fixed, LoRA alone must fit a small batch (the head is the target the features turn to)."""
    model = tiny_base_model("bert", 2)
    use_cosine_classifier(model, scale=16.0)
    model = inject_lora(model, LoraConfig(rank=4, alpha=8), init_seed=0)
    trainable = [parameter for name, parameter in model.named_parameters() if "lora_" in name]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 100, (8, 12), generator=generator)
    labels = torch.arange(8) % NUM_LABELS
    optimizer = torch.optim.AdamW(trainable, lr=3e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(input_ids=input_ids).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
