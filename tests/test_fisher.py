"""Batched per-sample Fisher gradients against plain autograd, layer scores, and tiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhello.allocation.tiers import score_tiers
from fedhello.fisher import (
    attention_implementation,
    layer_scores,
    lora_fisher_diagonal,
    per_sample_gradients,
    per_sample_gradients_loop,
)
from fedhello.models.layers import LayerMap

OBJECTIVES = ["log_likelihood", "logit"]


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_per_sample_gradients_match_loop(tiny_federated, lora_randomizer, encoded_split, arch, objective):
    federated = tiny_federated(arch, 2)
    lora_randomizer(federated, seed=4)
    federated.model.eval()
    # Right padding in two samples: the padded positions must not leak into the gradients
    # (and for a decoder the batched mask must stay causal).
    data = encoded_split(5, 10, seed=11, pad_from={1: 6, 3: 3})
    batch = data.batch(np.arange(5))
    names = list(federated.layer_map.all_names)

    batched = per_sample_gradients(federated, batch, names, objective)
    looped = per_sample_gradients_loop(federated, batch, names, objective)

    assert set(batched) == set(names)
    # Plain tensors: no autograd graph through the other trainable parameters is kept.
    assert not any(gradient.requires_grad for gradient in batched.values())
    parameters = federated.parameters_by_name()
    for name in names:
        assert batched[name].shape == (5, *parameters[name].shape)
        assert looped[name].abs().sum() > 0
        torch.testing.assert_close(batched[name], looped[name], rtol=1e-4, atol=1e-5)


def test_objectives_differ(tiny_federated, lora_randomizer, encoded_split):
    federated = tiny_federated("bert", 2)
    lora_randomizer(federated, seed=4)
    federated.model.eval()
    batch = encoded_split(3, 8, seed=1).batch(np.arange(3))
    names = list(federated.layer_map.layers[1])
    likelihood = per_sample_gradients(federated, batch, names, "log_likelihood")
    logit = per_sample_gradients(federated, batch, names, "logit")
    # Layer 0's LoRA still requires grad here; the results must still be plain tensors,
    # not ends of an autograd graph that would pile up across Fisher batches.
    assert not any(gradient.requires_grad for gradient in likelihood.values())
    for name in names:
        difference = (likelihood[name] - logit[name]).abs().max()
        assert difference > 0.05 * logit[name].abs().max()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_fisher_diagonal_is_mean_squared_gradient(tiny_federated, lora_randomizer, encoded_split, objective):
    federated = tiny_federated("bert", 3)
    lora_randomizer(federated, seed=2)
    proxy = encoded_split(7, 8, seed=6, pad_from={2: 5, 6: 2})
    names = list(federated.layer_map.all_names)
    federated.model.train()  # the function must switch to eval (dropout off) and back

    fisher = lora_fisher_diagonal(federated, proxy, batch_size=3, objective=objective)  # 3 + 3 + 1 samples

    assert federated.model.training
    federated.model.eval()
    looped = per_sample_gradients_loop(federated, proxy.batch(np.arange(len(proxy))), names, objective)
    assert set(fisher) == set(names)
    assert not any(value.requires_grad for value in fisher.values())
    for name in names:
        expected = looped[name].pow(2).mean(0)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(fisher[name], expected, rtol=1e-4, atol=1e-8)


def test_layer_scores_hand_made():
    layer_map = LayerMap("blocks", (("a", "b"), ("c",), ("d", "e")))
    fisher = {
        "a": torch.tensor([3.0, 4.0]),  # norm 5
        "b": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),  # norm 1
        "c": torch.zeros(2, 2),  # norm 0
        "d": torch.tensor([[2.0, 2.0], [2.0, 2.0]]),  # norm 4
        "e": torch.tensor([12.0, 5.0]),  # norm 13 (not sqrt(4 + 13))
        "unused": torch.full((3,), 100.0),
    }
    scores = layer_scores(fisher, layer_map)
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, [6.0, 0.0, 17.0], rtol=1e-12)


def test_layer_scores_from_layer_map(tiny_federated):
    federated = tiny_federated("bert", 4)
    generator = torch.Generator().manual_seed(0)
    parameters = federated.parameters_by_name()
    fisher = {
        name: torch.rand(parameters[name].shape, generator=generator) * (index + 1)
        for index, names in enumerate(federated.layer_map.layers)
        for name in names
    }
    expected = []
    for index in range(4):
        container = federated.model.get_submodule(f"{federated.layer_map.container}.{index}")
        block_ids = {id(p) for p in container.parameters()}
        total = 0.0
        for name, parameter in parameters.items():
            if name in fisher and id(parameter) in block_ids:
                total += float(fisher[name].pow(2).sum().sqrt())
        expected.append(total)
    np.testing.assert_allclose(layer_scores(fisher, federated.layer_map), expected, rtol=1e-6)


def test_dominant_layer_gets_highest_score_and_top_tier(tiny_federated, lora_randomizer, encoded_split):
    federated = tiny_federated("bert", 4)
    # Small LoRA everywhere, large in layer 2: the gradient of A scales with B and vice versa,
    # so layer 2's Fisher mass dominates.
    lora_randomizer(federated, seed=3, std=0.02, layer_scales={0: 1.0, 1: 2.0, 2: 50.0, 3: 4.0})
    proxy = encoded_split(12, 8, seed=9, pad_from={0: 4})

    scores = layer_scores(lora_fisher_diagonal(federated, proxy, batch_size=6), federated.layer_map)
    assert np.argmax(scores) == 2
    assert scores[2] > 3 * np.max(np.delete(scores, 2))

    tiers = score_tiers(scores, 3)
    assert tiers[2] == 2
    assert tiers.min() == 0
    for i in range(4):
        for j in range(4):
            if scores[i] < scores[j]:
                assert tiers[i] <= tiers[j], (scores, tiers)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_scoring_attention_switch_keeps_scores_and_restores_model(tiny_federated, lora_randomizer, encoded_split, arch):
    """Eager attention during scoring (vmap batches it) gives the fused implementation's scores."""
    federated = tiny_federated(arch, 3)
    lora_randomizer(federated, seed=5)
    proxy = encoded_split(6, 10, seed=2, pad_from={1: 7, 4: 4})
    model = federated.model
    assert model.config._attn_implementation == "sdpa"

    switched = lora_fisher_diagonal(federated, proxy, batch_size=4, attention="eager")
    assert model.config._attn_implementation == "sdpa"  # restored afterwards
    kept = lora_fisher_diagonal(federated, proxy, batch_size=4, attention=None)
    assert set(switched) == set(kept)
    for name in kept:
        assert kept[name].abs().sum() > 0
        torch.testing.assert_close(switched[name], kept[name], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(
        layer_scores(switched, federated.layer_map), layer_scores(kept, federated.layer_map), rtol=1e-5
    )


def test_attention_switch_restores_after_error(tiny_federated):
    federated = tiny_federated("bert", 1)
    with pytest.raises(RuntimeError), attention_implementation(federated.model, "eager"):
        assert federated.model.config._attn_implementation == "eager"
        raise RuntimeError("scoring failed")
    assert federated.model.config._attn_implementation == "sdpa"
