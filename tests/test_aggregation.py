"""Heterogeneous aggregation (SPEC §3) on hand-made tensors with hand-computed results."""

from __future__ import annotations

import pytest
import torch

from fedhello.aggregation import ClientUpdate, aggregate
from fedhello.tensor_state import state_bytes, state_delta


def full(value: float, shape=(2, 3)) -> torch.Tensor:
    return torch.full(shape, float(value))


def test_sample_weighting_example_from_spec():
    new, counts = aggregate(
        {"w": full(1.0)},
        [ClientUpdate(0, {"w": full(2.0)}, num_samples=1), ClientUpdate(1, {"w": full(4.0)}, num_samples=3)],
        weighting="samples",
    )
    # 1 + (1/4 * 2 + 3/4 * 4) = 1 + 0.5 + 3
    assert torch.equal(new["w"], full(4.5))
    assert counts == {"w": 2}


def test_uniform_weighting_example():
    new, counts = aggregate(
        {"w": full(1.0)},
        [ClientUpdate(0, {"w": full(2.0)}, num_samples=1), ClientUpdate(1, {"w": full(4.0)}, num_samples=3)],
        weighting="uniform",
    )
    assert torch.equal(new["w"], full(4.0))  # 1 + (2 + 4) / 2
    assert counts == {"w": 2}


def three_clients():
    global_state = {
        "a": torch.tensor([1.0, -1.0]),
        "b": torch.tensor([[10.0, 0.0], [0.0, 10.0]]),
        "c": torch.tensor([7.0, 8.0, 9.0]),  # nobody trains c
        "d": torch.tensor([0.5]),
    }
    updates = [
        ClientUpdate(0, {"a": torch.tensor([1.0, 1.0]), "b": torch.full((2, 2), 2.0)}, num_samples=1),
        ClientUpdate(1, {"a": torch.tensor([4.0, 0.0]), "d": torch.tensor([3.0])}, num_samples=6),
        ClientUpdate(2, {"a": torch.tensor([-2.0, 2.0]), "b": torch.full((2, 2), -2.0)}, num_samples=3),
    ]
    return global_state, updates


def test_partial_keys_sample_weighting():
    global_state, updates = three_clients()
    snapshot = {name: tensor.clone() for name, tensor in global_state.items()}
    new, counts = aggregate(global_state, updates, weighting="samples")

    # a: all three, weights 1/10, 6/10, 3/10: delta = (0.1 + 2.4 - 0.6, 0.1 + 0 + 0.6) = (1.9, 0.7)
    torch.testing.assert_close(new["a"], torch.tensor([2.9, -0.3]), rtol=0, atol=1e-6)
    # b: clients 0 and 2 only, weights renormalised to 1/4, 3/4 (client 1's 6 samples do not count):
    # delta = 0.25 * 2 + 0.75 * -2 = -1
    torch.testing.assert_close(new["b"], torch.tensor([[9.0, -1.0], [-1.0, 9.0]]), rtol=0, atol=1e-6)
    # c: nobody trained it -> unchanged
    assert torch.equal(new["c"], snapshot["c"])
    # d: only client 1 -> its delta at full weight
    torch.testing.assert_close(new["d"], torch.tensor([3.5]), rtol=0, atol=0)
    assert counts == {"a": 3, "b": 2, "c": 0, "d": 1}
    assert set(new) == set(global_state)
    # Inputs are not modified in place.
    for name, tensor in snapshot.items():
        assert torch.equal(global_state[name], tensor)


def test_partial_keys_uniform_weighting():
    global_state, updates = three_clients()
    new, counts = aggregate(global_state, updates, weighting="uniform")
    # a: mean of deltas = ((1 + 4 - 2) / 3, (1 + 0 + 2) / 3) = (1, 1)
    torch.testing.assert_close(new["a"], torch.tensor([2.0, 0.0]), rtol=0, atol=1e-6)
    # b: (2 - 2) / 2 = 0 -> unchanged values
    torch.testing.assert_close(new["b"], torch.tensor([[10.0, 0.0], [0.0, 10.0]]), rtol=0, atol=1e-6)
    assert torch.equal(new["c"], torch.tensor([7.0, 8.0, 9.0]))
    torch.testing.assert_close(new["d"], torch.tensor([3.5]), rtol=0, atol=0)
    assert counts == {"a": 3, "b": 2, "c": 0, "d": 1}


def test_no_updates_keeps_everything():
    global_state, _ = three_clients()
    new, counts = aggregate(global_state, [], weighting="samples")
    assert all(torch.equal(new[name], global_state[name]) for name in global_state)
    assert counts == dict.fromkeys(global_state, 0)


def test_single_client_gets_full_weight_regardless_of_samples():
    new, _ = aggregate({"w": full(1.0)}, [ClientUpdate(5, {"w": full(0.25)}, num_samples=17)], weighting="samples")
    assert torch.equal(new["w"], full(1.25))


def test_unknown_key_raises():
    with pytest.raises(KeyError):
        aggregate({"w": full(1.0)}, [ClientUpdate(0, {"w": full(1.0), "zzz": full(1.0)}, num_samples=1)])


def test_delta_dtype_follows_global_state():
    new, _ = aggregate(
        {"w": torch.ones(3, dtype=torch.float64)},
        [ClientUpdate(0, {"w": torch.full((3,), 0.5, dtype=torch.float32)}, num_samples=2)],
    )
    assert new["w"].dtype == torch.float64
    assert torch.equal(new["w"], torch.full((3,), 1.5, dtype=torch.float64))


def test_state_delta_then_aggregate_roundtrip():
    before = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    after = {"a": torch.tensor([1.5, 1.0])}  # the client only uploads what it trained
    delta = state_delta(after, before)
    assert set(delta) == {"a"}
    assert torch.equal(delta["a"], torch.tensor([0.5, -1.0]))
    new, counts = aggregate(before, [ClientUpdate(0, delta, num_samples=4)])
    assert torch.equal(new["a"], after["a"])
    assert torch.equal(new["b"], before["b"])
    assert counts == {"a": 1, "b": 0}


def test_state_bytes_exact():
    state = {
        "f32": torch.zeros(3, 4, dtype=torch.float32),  # 12 * 4 = 48
        "f16": torch.zeros(5, dtype=torch.float16),  # 5 * 2 = 10
        "i64": torch.zeros(2, dtype=torch.int64),  # 2 * 8 = 16
        "bf16": torch.zeros(2, 3, 1, dtype=torch.bfloat16),  # 6 * 2 = 12
    }
    assert state_bytes(state) == 48 + 10 + 16 + 12
    assert state_bytes({}) == 0
