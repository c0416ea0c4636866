"""Local training on allocated layers: exact gradients, frozen layers untouched, real savings."""

from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest
import torch

from fedhello.precision import autocast_for
from fedhello.training import LocalTrainingSettings, SavedActivationMeter, local_batches, train_locally


def settings(**overrides) -> LocalTrainingSettings:
    values = dict(lr=1e-2, weight_decay=0.0, batch_size=4, local_epochs=1, max_local_steps=None, max_grad_norm=None)
    values.update(overrides)
    return LocalTrainingSettings(**values)


def gradients_for(federated, batch, trainable):
    model = federated.model
    federated.set_trainable(trainable)
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    return {name: (None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()}


def test_allocated_gradients_equal_full_backward(tiny_bert4, encoded_split):
    federated = tiny_bert4
    federated.model.eval()  # no dropout: both passes must be the same function
    data = encoded_split(6, 10, seed=3, pad_from={1: 7, 4: 5})
    batch = data.batch(np.arange(6))
    layer_map = federated.layer_map
    head = list(federated.head_names)

    full = gradients_for(federated, batch, list(layer_map.all_names) + head)
    allocated_names = layer_map.names_for({2, 3}) + head
    partial = gradients_for(federated, batch, allocated_names)

    for name in list(layer_map.all_names) + head:
        assert full[name] is not None and full[name].abs().sum() > 0, name
    for name in allocated_names:
        assert partial[name] is not None, name
        assert torch.allclose(partial[name], full[name], atol=1e-6), name
    for name, gradient in partial.items():
        if name not in allocated_names:
            assert gradient is None, name
    # The frozen layers' tensors really were frozen for the second pass.
    parameters = federated.parameters_by_name()
    assert all(not parameters[name].requires_grad for name in layer_map.names_for({0, 1}))


@pytest.mark.parametrize(
    ("max_local_steps", "local_epochs", "expected_steps", "expected_seen"),
    [(None, 2, 6, 20), (4, 2, 4, 4 + 4 + 2 + 4), (100, 1, 3, 10)],
)
def test_train_locally_touches_only_allocated(
    tiny_bert4, encoded_split, max_local_steps, local_epochs, expected_steps, expected_seen
):
    federated = tiny_bert4
    layer_map = federated.layer_map
    data = encoded_split(30, 8, seed=5)
    sample_indices = np.arange(5, 15)  # 10 samples of the client, batch 4 -> 3 batches per epoch
    trainable = layer_map.names_for([3]) + list(federated.head_names)
    before = {name: p.detach().clone() for name, p in federated.model.named_parameters()}

    result = train_locally(
        federated,
        data,
        sample_indices,
        trainable,
        settings(max_local_steps=max_local_steps, local_epochs=local_epochs),
        torch.Generator().manual_seed(0),
    )

    assert result.steps == expected_steps
    assert math.isfinite(result.mean_loss)
    after = dict(federated.model.named_parameters())
    for name in trainable:
        assert not torch.equal(after[name], before[name]), f"{name} did not change"
    for name, value in before.items():
        if name not in trainable:
            assert torch.equal(after[name], value), f"{name} changed but was not allocated"
    assert result.activation_bytes > 0
    assert result.samples_seen == expected_seen


def test_samples_seen_counts_partial_last_batch(tiny_bert4, encoded_split):
    federated = tiny_bert4
    data = encoded_split(10, 8, seed=5)
    trainable = federated.layer_map.names_for([3]) + list(federated.head_names)
    result = train_locally(
        federated,
        data,
        np.arange(10),
        trainable,
        settings(batch_size=4, local_epochs=2),
        torch.Generator().manual_seed(0),
    )
    assert result.steps == 6
    assert result.samples_seen == 20
    # Training leaves nothing trainable behind.
    assert not any(p.requires_grad for p in federated.model.parameters())


def activation_bytes_for(federated, data, layers):
    snapshot = federated.state()
    result = train_locally(
        federated,
        data,
        np.arange(len(data)),
        federated.layer_map.names_for(layers) + list(federated.head_names),
        settings(batch_size=8, max_local_steps=1),
        torch.Generator().manual_seed(0),
    )
    federated.load_state(snapshot)
    return result.activation_bytes


def test_activation_savings_only_below_lowest_trained_layer(tiny_bert4, encoded_split):
    federated = tiny_bert4
    data = encoded_split(8, 16, seed=2)
    full = activation_bytes_for(federated, data, [0, 1, 2, 3])
    per_client = {layer: activation_bytes_for(federated, data, [layer]) for layer in range(4)}
    top_and_bottom = activation_bytes_for(federated, data, [0, 3])

    assert per_client[3] < full
    assert per_client[3] < 0.5 * full  # top layer only: most activations are never kept
    assert per_client[0] >= 0.9 * full  # a shallow layer saves almost nothing
    assert top_and_bottom >= 0.9 * full
    # The lower the lowest trained layer, the more is kept.
    assert per_client[3] < per_client[2] < per_client[1] < per_client[0] <= full


def test_meter_counts_saved_activations_not_parameters():
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 16)
    x = torch.randn(4, 16)
    meter = SavedActivationMeter(layer)
    with meter.step():
        hidden = torch.relu(layer(x))  # linear saves x (input) and relu saves its output
    assert meter.peak_bytes == 2 * 4 * 16 * 4
    hidden.sum().backward()
    for parameter in layer.parameters():
        parameter.requires_grad_(False)
    with meter.step():
        layer(x)  # nothing requires grad: nothing is saved
    assert meter.current_bytes == 0
    assert meter.peak_bytes == 2 * 4 * 16 * 4


def test_a_metered_forward_pass_without_backward_frees_its_activations():
    """The cost probe runs forward passes only: its saved outputs must not outlive the pass (they leaked 15 GB)."""
    x = torch.randn(8, 8, requires_grad=True)
    meter = SavedActivationMeter(torch.nn.Linear(1, 1))
    with meter.step():
        output = torch.sigmoid(x @ x)  # sigmoid saves its output for backward
    freed = weakref.ref(output)
    del output
    gc.collect()
    assert freed() is None and meter.peak_bytes > 0
    with meter.step():
        metered = torch.sigmoid(x @ x).sum()
    (metered_grad,) = torch.autograd.grad(metered, x)
    (plain_grad,) = torch.autograd.grad(torch.sigmoid(x @ x).sum(), x)
    assert torch.equal(metered_grad, plain_grad)  # what backward reads is unchanged


@pytest.mark.parametrize(
    ("num_samples", "batch_size", "epochs", "max_steps"),
    [
        (10, 4, 1, None),
        (10, 4, 3, None),
        (10, 4, 3, 5),
        (8, 4, 2, None),
        (7, 10, 2, None),
        (10, 3, 2, 100),
        (10, 1, 1, 3),
    ],
)
def test_local_batches(num_samples, batch_size, epochs, max_steps):
    local = settings(batch_size=batch_size, local_epochs=epochs, max_local_steps=max_steps)
    batches = list(local_batches(num_samples, local, torch.Generator().manual_seed(7)))
    per_epoch = math.ceil(num_samples / batch_size)
    expected = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
    assert len(batches) == expected
    assert all(1 <= len(batch) <= batch_size for batch in batches)

    # Each complete epoch covers every sample exactly once.
    for epoch in range(len(batches) // per_epoch):
        positions = np.concatenate(batches[epoch * per_epoch : (epoch + 1) * per_epoch])
        np.testing.assert_array_equal(np.sort(positions), np.arange(num_samples))
    # A cut epoch never repeats a sample.
    rest = batches[(len(batches) // per_epoch) * per_epoch :]
    if rest:
        positions = np.concatenate(rest)
        assert len(np.unique(positions)) == len(positions)

    # Same generator seed, same batches; the cut is a prefix of the uncut schedule.
    again = list(local_batches(num_samples, local, torch.Generator().manual_seed(7)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    uncut = list(
        local_batches(
            num_samples, settings(batch_size=batch_size, local_epochs=epochs), torch.Generator().manual_seed(7)
        )
    )
    assert all(np.array_equal(a, b) for a, b in zip(batches, uncut[: len(batches)], strict=True))


def test_local_batches_depend_on_generator_and_reshuffle_each_epoch():
    local = settings(batch_size=5, local_epochs=2)
    first = np.concatenate(list(local_batches(20, local, torch.Generator().manual_seed(0))))
    other = np.concatenate(list(local_batches(20, local, torch.Generator().manual_seed(1))))
    assert not np.array_equal(first, other)
    assert not np.array_equal(first[:20], first[20:])  # a fresh permutation per epoch


@pytest.mark.parametrize(
    ("precision", "dtype"), [("auto", torch.float32), ("fp32", torch.float32), ("bf16", torch.bfloat16)]
)
def test_autocast_for_cpu_precision(precision, dtype):
    layer = torch.nn.Linear(4, 3)
    with autocast_for(torch.device("cpu"), precision):
        assert layer(torch.ones(2, 4)).dtype == dtype


def test_autocast_for_rejects_unknown_precision():
    with pytest.raises(ValueError, match="precision"):
        autocast_for(torch.device("cpu"), "fp16")
