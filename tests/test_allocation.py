"""Layer-allocation strategies (SPEC §2): patterns, sampling, tiers, groups, registry."""

from __future__ import annotations

import numpy as np
import pytest

from fedhello.allocation.base import (
    Allocation,
    AllocationContext,
    AllocationStrategy,
    ClientSlot,
    StrategyParams,
)
from fedhello.allocation.groups import assign_groups, group_sizes, resolve_budgets
from fedhello.allocation.patterns import PATTERNS, count_profile, pattern_layers, profile_weights
from fedhello.allocation.registry import all_strategies, build_strategy, register_strategy
from fedhello.allocation.tiers import score_tiers, tier_sampling_weights
from fedhello.errors import ConfigError

L = 12
BUDGETS = [6, 9, 12]


def make_context(
    round_: int = 1,
    *,
    total_rounds: int = 10,
    num_layers: int = L,
    budgets=BUDGETS,
    per_group: int = 1,
    rng: np.random.Generator | None = None,
    layer_scores=None,
) -> AllocationContext:
    clients = []
    for group, budget in enumerate(budgets):
        for _ in range(per_group):
            clients.append(ClientSlot(len(clients), group, budget))
    return AllocationContext(
        round=round_,
        total_rounds=total_rounds,
        num_layers=num_layers,
        clients=clients,
        group_budgets=list(budgets),
        rng=rng if rng is not None else np.random.default_rng(0),
        layer_scores=layer_scores,
    )


def assert_valid_layer_set(layers, budget: int, num_layers: int) -> None:
    assert isinstance(layers, tuple)
    assert len(layers) == min(budget, num_layers)
    assert list(layers) == sorted(set(layers)), "layer sets must be sorted and duplicate-free"
    assert all(isinstance(layer, int) and 0 <= layer < num_layers for layer in layers)


# ---------------------------------------------------------------------------------------
# 1. GD patterns (SPEC §2.1)

SPEC_PROFILES = {
    "triangle": [3, 3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 1],
    "inverted_triangle": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3],
    "bottleneck": [3, 3, 3, 2, 2, 1, 1, 1, 2, 3, 3, 3],
    "uniform": [3, 2, 3, 1, 3, 2, 3, 1, 3, 2, 3, 1],
}


@pytest.mark.parametrize("pattern", sorted(SPEC_PROFILES))
def test_count_profile_matches_spec_table(pattern):
    profile = count_profile(pattern, L, BUDGETS)
    assert profile.tolist() == SPEC_PROFILES[pattern]
    weights = profile_weights(pattern, L, BUDGETS)
    np.testing.assert_allclose(weights, np.array(SPEC_PROFILES[pattern]) / 27.0)


def test_patterns_tuple_lists_exactly_the_spec_patterns():
    assert set(PATTERNS) == set(SPEC_PROFILES)


@pytest.mark.parametrize(
    ("pattern", "budget", "expected"),
    [
        ("bottleneck", 6, (0, 1, 2, 9, 10, 11)),
        ("bottleneck", 9, (0, 1, 2, 3, 4, 8, 9, 10, 11)),
        ("uniform", 6, (0, 2, 4, 6, 8, 10)),
        ("uniform", 9, (0, 1, 2, 4, 5, 6, 8, 9, 10)),
        ("triangle", 6, (0, 1, 2, 3, 4, 5)),
        ("inverted_triangle", 6, (6, 7, 8, 9, 10, 11)),
        ("bottleneck", 12, tuple(range(12))),
        ("uniform", 12, tuple(range(12))),
    ],
)
def test_explicit_pattern_sets(pattern, budget, expected):
    assert pattern_layers(pattern, L, budget) == expected


@pytest.mark.parametrize("pattern", ["triangle", "inverted_triangle", "bottleneck"])
@pytest.mark.parametrize("num_layers", [1, 6, 12, 30])
def test_priority_patterns_are_nested_across_budgets(pattern, num_layers):
    previous: set[int] = set()
    for budget in range(1, num_layers + 1):
        current = set(pattern_layers(pattern, num_layers, budget))
        assert previous < current, f"budget {budget} set must strictly contain budget {budget - 1} set"
        assert len(current - previous) == 1
        previous = current


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("num_layers", [1, 2, 5, 6, 7, 30])
def test_every_budget_gives_exactly_budget_distinct_layers(pattern, num_layers):
    for budget in range(1, num_layers + 1):
        assert_valid_layer_set(pattern_layers(pattern, num_layers, budget), budget, num_layers)
    assert pattern_layers(pattern, num_layers, num_layers) == tuple(range(num_layers))


def test_bottleneck_alternates_from_both_ends_for_odd_and_even_L():
    assert pattern_layers("bottleneck", 7, 3) == (0, 1, 6)
    assert pattern_layers("bottleneck", 7, 6) == (0, 1, 2, 4, 5, 6)
    assert pattern_layers("bottleneck", 30, 4) == (0, 1, 28, 29)


def test_unknown_pattern_and_bad_budget_raise():
    with pytest.raises(ValueError, match="diamond"):
        pattern_layers("diamond", L, 6)
    with pytest.raises(ValueError):
        pattern_layers("triangle", L, 0)
    with pytest.raises(ValueError):
        pattern_layers("triangle", L, L + 1)


# ---------------------------------------------------------------------------------------
# 2. RGD sampling: realised counts vs the exact expectation (SPEC §2.2)


def exact_inclusion(weights: np.ndarray, draws: int) -> np.ndarray:
    """P(layer l is among `draws` successive weighted draws without replacement), exactly.

    prob[S] = probability that the first |S| draws are the set S (in any order); it is the
    sum over the last-drawn j in S of prob[S - j] * p_j / (1 - p(S - j)). 2^L subsets.
    """
    n = len(weights)
    weights = np.asarray(weights, dtype=np.float64)
    mass = np.zeros(1 << n)
    for mask in range(1, 1 << n):
        low = mask & -mask
        mass[mask] = mass[mask ^ low] + weights[low.bit_length() - 1]
    prob = np.zeros(1 << n)
    prob[0] = 1.0
    inclusion = np.zeros(n)
    for mask in range(1, 1 << n):
        size = bin(mask).count("1")
        if size > draws:
            continue
        total = 0.0
        for j in range(n):
            if mask >> j & 1:
                rest = mask ^ (1 << j)
                remaining = 1.0 - mass[rest]
                if prob[rest] > 0 and remaining > 1e-15:
                    total += prob[rest] * weights[j] / remaining
        prob[mask] = total
        if size == draws:
            for j in range(n):
                if mask >> j & 1:
                    inclusion[j] += total
    return inclusion


def test_exact_inclusion_helper_on_a_hand_computed_case():
    # weights 1/2, 1/4, 1/4, two draws: P(0) = 1/2 + 1/4*(2/3) + 1/4*(2/3) = 5/6
    inc = exact_inclusion(np.array([0.5, 0.25, 0.25]), 2)
    np.testing.assert_allclose(inc, [5 / 6, 7 / 12, 7 / 12])
    assert inc.sum() == pytest.approx(2.0)


@pytest.fixture(scope="module")
def bottleneck_expectation() -> np.ndarray:
    weights = profile_weights("bottleneck", L, BUDGETS)
    expected = np.ones(L)  # the full-budget group trains every layer
    for budget in BUDGETS[:-1]:
        inc = exact_inclusion(weights, budget)
        assert inc.sum() == pytest.approx(budget)
        expected += inc
    return expected


def test_rgd_expectation_matches_spec_values(bottleneck_expectation):
    e = bottleneck_expectation
    for layer in (0, 1, 2, 9, 10, 11):
        assert e[layer] == pytest.approx(2.50, abs=0.02)
    for layer in (3, 4, 8):
        assert e[layer] == pytest.approx(2.23, abs=0.02)
    for layer in (5, 6, 7):
        assert e[layer] == pytest.approx(1.77, abs=0.02)
    assert e.sum() == pytest.approx(27.0)


def test_rgd_expectation_is_flatter_than_profile(bottleneck_expectation):
    """A sampler that realised the raw profile (3/2/1) would be off by far more than the tolerance."""
    profile = count_profile("bottleneck", L, BUDGETS).astype(float)
    assert np.max(np.abs(bottleneck_expectation - profile)) > 0.4
    assert np.all(bottleneck_expectation[profile == 3] < 3 - 0.3)
    assert np.all(bottleneck_expectation[profile == 1] > 1 + 0.3)
    # but the order is preserved
    assert bottleneck_expectation[profile == 3].min() > bottleneck_expectation[profile == 2].max()
    assert bottleneck_expectation[profile == 2].min() > bottleneck_expectation[profile == 1].max()


def test_rgd_sampler_realises_exact_expectation(bottleneck_expectation):
    strategy = build_strategy("rgd", {"pattern": "bottleneck"})
    rng = np.random.default_rng(12345)
    per_group, rounds = 100, 200  # 20,000 draws per budget
    counts = np.zeros(L)
    for round_ in range(1, rounds + 1):
        context = make_context(round_, total_rounds=rounds, per_group=per_group, rng=rng)
        allocation = strategy.allocate(context)
        for client in context.clients:
            layers = allocation.layers[client.client_id]
            assert_valid_layer_set(layers, client.budget, L)
            counts[list(layers)] += 1
    realised = counts / (rounds * per_group)
    np.testing.assert_allclose(realised, bottleneck_expectation, atol=0.03)
    profile = count_profile("bottleneck", L, BUDGETS)
    assert np.max(np.abs(realised - profile)) > 0.4
    np.testing.assert_allclose(allocation.info["weights"], profile / profile.sum())


# ---------------------------------------------------------------------------------------
# 3. Strategies through the registry


def test_builtin_strategies_are_registered():
    names = set(all_strategies())
    assert {"full", "exclusive", "straggler", "gd", "rgd", "fedra", "fim", "fedhello"} <= names


def test_full_everyone_trains_everything():
    allocation = build_strategy("full", {}).allocate(make_context(per_group=2))
    assert len(allocation.layers) == 6
    assert all(layers == tuple(range(L)) for layers in allocation.layers.values())


def test_exclusive_only_full_budget_clients_train():
    context = make_context(per_group=2)
    allocation = build_strategy("exclusive", {}).allocate(context)
    for client in context.clients:
        expected = tuple(range(L)) if client.budget == L else ()
        assert allocation.layers[client.client_id] == expected


@pytest.mark.parametrize("pattern", PATTERNS)
def test_straggler_everyone_gets_weakest_budget_pattern(pattern):
    context = make_context(per_group=2, budgets=[9, 4, 12])
    allocation = build_strategy("straggler", {"pattern": pattern}).allocate(context)
    expected = pattern_layers(pattern, L, 4)
    assert {client.client_id for client in context.clients} == set(allocation.layers)
    assert all(layers == expected for layers in allocation.layers.values())


def test_straggler_default_pattern_is_inverted_triangle():
    allocation = build_strategy("straggler", {}).allocate(make_context())
    assert allocation.layers[0] == (6, 7, 8, 9, 10, 11)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_gd_each_client_gets_its_pattern_set(pattern):
    context = make_context(per_group=2)
    strategy = build_strategy("gd", {"pattern": pattern})
    for _ in (1, 2):
        allocation = strategy.allocate(context)
        for client in context.clients:
            assert allocation.layers[client.client_id] == pattern_layers(pattern, L, client.budget)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("rgd", {}),
        ("rgd", {"pattern": "triangle"}),
        ("fedra", {}),
        ("fedra-depth", {}),
        ("fim", {}),
        ("fedhello", {"fim_start": 2, "fim_every": 2}),
    ],
)
def test_random_strategies_give_budget_distinct_sorted_layers(name, params):
    scores = np.linspace(0.0, 1.0, L)
    strategy = build_strategy(name, params)
    rng = np.random.default_rng(3)
    seen = set()
    for round_ in range(1, 6):
        context = make_context(round_, per_group=3, rng=rng, layer_scores=lambda: scores)
        allocation = strategy.allocate(context)
        assert set(allocation.layers) == {client.client_id for client in context.clients}
        for client in context.clients:
            layers = allocation.layers[client.client_id]
            assert_valid_layer_set(layers, client.budget, L)
            if client.budget == L:
                assert layers == tuple(range(L))
            else:
                seen.add(layers)
    assert len(seen) > 3, "random strategies must not always return the same sets"


def test_random_strategies_with_uneven_L():
    strategy = build_strategy("rgd", {"pattern": "uniform"})
    rng = np.random.default_rng(0)
    for round_ in range(1, 20):
        context = make_context(round_, num_layers=7, budgets=[2, 5, 7], rng=rng)
        allocation = strategy.allocate(context)
        for client in context.clients:
            assert_valid_layer_set(allocation.layers[client.client_id], client.budget, 7)


def test_fedra_is_roughly_uniform():
    strategy = build_strategy("fedra", {})
    rng = np.random.default_rng(7)
    per_group, rounds = 50, 100
    counts = {6: np.zeros(L), 9: np.zeros(L)}
    for round_ in range(1, rounds + 1):
        context = make_context(round_, per_group=per_group, rng=rng)
        allocation = strategy.allocate(context)
        for client in context.clients:
            if client.budget < L:
                counts[client.budget][list(allocation.layers[client.client_id])] += 1
    for budget, count in counts.items():
        frequency = count / (rounds * per_group)
        np.testing.assert_allclose(frequency, budget / L, atol=0.04)


def _spiky_scores() -> np.ndarray:
    scores = np.full(L, 1.0)
    scores[[2, 4]] = 5.0
    scores[7] = 100.0
    return scores


def test_fim_prefers_the_top_tier_layer():
    strategy = build_strategy("fim", {"every": 1000})
    rng = np.random.default_rng(11)
    counts = np.zeros(L)
    for round_ in range(1, 41):
        context = make_context(
            round_, total_rounds=1000, per_group=25, budgets=[6, 9], rng=rng, layer_scores=_spiky_scores
        )
        allocation = strategy.allocate(context)
        if round_ == 1:
            fisher = allocation.fisher
        else:
            assert allocation.fisher is None
        for layers in allocation.layers.values():
            counts[list(layers)] += 1
    assert fisher.tiers[7] == 2
    assert fisher.tiers[2] == fisher.tiers[4] == 1
    assert all(fisher.tiers[layer] == 0 for layer in range(L) if layer not in (2, 4, 7))
    weights = np.array(fisher.weights)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[7] == pytest.approx(3 / 16)
    assert weights[2] == pytest.approx(2 / 16)
    assert weights[0] == pytest.approx(1 / 16)
    np.testing.assert_allclose(fisher.scores, _spiky_scores())
    assert int(np.argmax(counts)) == 7
    assert counts[7] > counts[[2, 4]].max() > counts[[0, 1, 3, 5, 6, 8, 9, 10, 11]].max()


def test_fim_every_controls_scoring_calls():
    calls = []

    def scores():
        calls.append(current["round"])
        return _spiky_scores()

    current = {}
    strategy = build_strategy("fim", {"every": 3})
    rng = np.random.default_rng(0)
    for round_ in range(1, 11):
        current["round"] = round_
        allocation = strategy.allocate(make_context(round_, rng=rng, layer_scores=scores))
        assert (allocation.fisher is not None) == (round_ in (1, 4, 7, 10))
    assert calls == [1, 4, 7, 10]


def test_fim_without_scoring_function_fails_loudly():
    with pytest.raises(RuntimeError):
        build_strategy("fim", {}).allocate(make_context(layer_scores=None))


def _run_fedhello(params: dict, total_rounds: int, rounds: int):
    calls = []
    sources = {}
    current = {}

    def scores():
        calls.append(current["round"])
        return _spiky_scores()

    strategy = build_strategy("fedhello", params)
    rng = np.random.default_rng(0)
    for round_ in range(1, rounds + 1):
        current["round"] = round_
        allocation = strategy.allocate(make_context(round_, total_rounds=total_rounds, rng=rng, layer_scores=scores))
        sources[round_] = allocation.info["source"]
        assert (allocation.fisher is not None) == (round_ in calls and calls[-1] == round_)
    return calls, sources


@pytest.mark.parametrize("mode", ["persistent", "refresh_only"])
def test_fedhello_schedule(mode):
    calls, sources = _run_fedhello({"fim_start": 3, "fim_every": 2, "mode": mode}, total_rounds=10, rounds=10)
    assert calls == [3, 5, 7, 9]
    assert sources[1] == sources[2] == "rgd"
    for round_ in range(3, 11):
        if mode == "persistent":
            assert sources[round_] == "fim"
        else:
            assert sources[round_] == ("fim" if round_ in calls else "rgd")


def test_fedhello_default_mode_is_persistent():
    calls, sources = _run_fedhello({"fim_start": 3, "fim_every": 2}, total_rounds=10, rounds=6)
    assert calls == [3, 5]
    assert [sources[r] for r in range(1, 7)] == ["rgd", "rgd", "fim", "fim", "fim", "fim"]


def test_fedhello_fractional_schedule():
    calls, sources = _run_fedhello({"fim_start": 0.1, "fim_every": 0.1}, total_rounds=500, rounds=101)
    assert calls == [50, 100]
    assert all(sources[r] == "rgd" for r in range(1, 50))
    assert all(sources[r] == "fim" for r in range(50, 102))


def test_fedhello_uses_fisher_weights_after_start():
    """After the refresh, sampling follows the Fisher tiers, not the bottleneck profile."""
    strategy = build_strategy("fedhello", {"fim_start": 2, "fim_every": 100})
    rng = np.random.default_rng(5)
    counts = np.zeros(L)
    for round_ in range(1, 42):
        context = make_context(round_, total_rounds=100, per_group=25, budgets=[6], rng=rng, layer_scores=_spiky_scores)
        allocation = strategy.allocate(context)
        if round_ >= 2:
            for layers in allocation.layers.values():
                counts[list(layers)] += 1
    # layer 7 sits in the bottleneck's least-weighted middle, but is the Fisher top tier
    assert int(np.argmax(counts)) == 7


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("rgd", {"foo": 1}, "foo"),
        ("full", {"pattern": "triangle"}, "pattern"),
        ("gd", {"pattern": "diamond"}, "pattern"),
        ("straggler", {"pattern": 3}, "pattern"),
        ("fim", {"every": 0}, "every"),
        ("fim", {"every": 1.5}, "every"),
        ("fim", {"tier_weights": [1.0, -2.0, 3.0]}, "tier_weights"),
        ("fim", {"tier_weights": [1.0]}, "tier_weights"),
        ("fedhello", {"mode": "sometimes"}, "mode"),
        ("fedhello", {"fim_start": 0}, "fim_start"),
        ("fedhello", {"fim_every": -0.5}, "fim_every"),
        ("fedhello", {"fim_every": 2, "extra": True}, "extra"),
    ],
)
def test_bad_params_raise_config_error_naming_the_field(name, params, field):
    with pytest.raises(ConfigError, match=rf"allocation\.params\.{field}"):
        build_strategy(name, params)


def test_valid_params_are_accepted():
    assert (
        build_strategy("fedhello", {"fim_start": 50, "fim_every": 0.25, "mode": "refresh_only"}).params.fim_every
        == 0.25
    )
    assert build_strategy("fim", {"tier_weights": [1, 27]}).params.tier_weights == [1.0, 27.0]


def test_unknown_strategy_lists_available():
    with pytest.raises(ConfigError, match=r"allocation\.strategy") as excinfo:
        build_strategy("no_such_strategy", {})
    message = str(excinfo.value)
    assert "no_such_strategy" in message
    for name in ("fedhello", "rgd", "fedra", "full"):
        assert name in message


# ---------------------------------------------------------------------------------------
# 4. Tiers


@pytest.mark.parametrize("seed", range(8))
def test_score_tiers_follow_centroid_order(seed):
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.0, 1.0, 4)
    mid = rng.uniform(10.0, 11.0, 4)
    high = rng.uniform(100.0, 101.0, 4)
    scores = np.concatenate([low, mid, high])
    true_tier = np.repeat([0, 1, 2], 4)
    order = rng.permutation(len(scores))
    tiers = score_tiers(scores[order], 3)
    assert tiers.tolist() == true_tier[order].tolist()
    # reversed and otherwise-shuffled inputs must give the same mapping
    reverse = order[::-1]
    assert score_tiers(scores[reverse], 3).tolist() == true_tier[reverse].tolist()


def test_score_tiers_unordered_reproduces_raw_kmeans_labels():
    """`tier_order: kmeans_label` (the reference): the arbitrary k-means labels index the tier weights."""
    from sklearn.cluster import KMeans

    scores = np.array([0.1, 50.0, 0.2, 9.0, 10.0, 51.0])
    labels = KMeans(n_clusters=3, n_init=10, random_state=0).fit(scores.reshape(-1, 1)).labels_
    assert score_tiers(scores, 3, ordered=False).tolist() == labels.tolist()
    # Same partition into clusters as the ordered tiers, only the tier numbers may differ.
    ordered = score_tiers(scores, 3)
    assert len({(a, b) for a, b in zip(labels, ordered, strict=True)}) == 3


def test_score_tiers_degenerate_cases():
    assert score_tiers(np.full(12, 0.7), 3).tolist() == [0] * 12
    two_values = np.array([5.0, 1.0, 5.0, 1.0])
    assert score_tiers(two_values, 3).tolist() == [1, 0, 1, 0]


def test_tier_sampling_weights_normalised_and_proportional():
    scores = np.array([0.1, 50.0, 0.2, 9.0, 10.0, 51.0])
    tiers, weights = tier_sampling_weights(scores, [1.0, 2.0, 3.0])
    assert tiers.tolist() == [0, 2, 0, 1, 1, 2]
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, np.array([1, 3, 1, 2, 2, 3]) / 12.0)
    # reference weights 1/27, 2/27, 3/27 normalise to the same thing
    _, ref = tier_sampling_weights(scores, [1 / 27, 2 / 27, 3 / 27])
    np.testing.assert_allclose(ref, weights)
    _, flat = tier_sampling_weights(np.full(6, 3.0), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(flat, np.full(6, 1 / 6))


# ---------------------------------------------------------------------------------------
# 5. Groups


def test_resolve_budgets():
    assert resolve_budgets([0.5, 0.75, 1.0], 12) == [6, 9, 12]
    assert resolve_budgets([0.5, 0.75, 1.0], 6) == [3, 5, 6]
    assert resolve_budgets([6, 9, 12], 12) == [6, 9, 12]
    assert all(isinstance(b, int) for b in resolve_budgets([0.5, 1.0], 30))
    with pytest.raises(ConfigError, match=r"groups\.budgets"):
        resolve_budgets([6, 13], 12)
    with pytest.raises(ConfigError, match=r"groups\.budgets"):
        resolve_budgets([0], 12)


def test_group_sizes():
    assert group_sizes(10, [6, 3, 1]) == [6, 3, 1]
    assert group_sizes(100, [6, 3, 1]) == [60, 30, 10]
    sizes = group_sizes(20, [1, 1, 1])
    assert sum(sizes) == 20
    assert sorted(sizes) == [6, 7, 7]
    for n in range(1, 40):
        assert sum(group_sizes(n, [6, 3, 1])) == n


def test_assign_groups():
    index = assign_groups(20, [1, 1, 1], "index", np.random.default_rng(0))
    assert len(index) == 20
    assert np.all(np.diff(index) >= 0)
    assert np.bincount(index).tolist() == group_sizes(20, [1, 1, 1])
    first = assign_groups(20, [1, 1, 1], "random", np.random.default_rng(42))
    again = assign_groups(20, [1, 1, 1], "random", np.random.default_rng(42))
    np.testing.assert_array_equal(first, again)
    assert sorted(first.tolist()) == sorted(index.tolist())
    assert not np.array_equal(first, index)
    with pytest.raises(ConfigError, match=r"groups\.assignment"):
        assign_groups(20, [1, 1, 1], "roundrobin", np.random.default_rng(0))


# ---------------------------------------------------------------------------------------
# 6. User-defined strategies


class EveryOtherParams(StrategyParams):
    offset: int = 0


@register_strategy
class EveryOtherStrategy(AllocationStrategy):
    name = "test_every_other"
    summary = "test-only: layers offset, offset+2, ... up to the budget"
    Params = EveryOtherParams

    def allocate(self, context: AllocationContext) -> Allocation:
        layers = {}
        for client in context.clients:
            candidates = [(self.params.offset + 2 * i) % context.num_layers for i in range(context.num_layers)]
            chosen = list(dict.fromkeys(candidates))[: client.budget]
            layers[client.client_id] = tuple(sorted(chosen))
        return Allocation(layers, {"custom": True})


def test_user_strategy_is_registered_and_built():
    assert all_strategies()["test_every_other"] is EveryOtherStrategy
    strategy = build_strategy("test_every_other", {"offset": 1})
    assert isinstance(strategy, EveryOtherStrategy)
    assert strategy.params.offset == 1
    allocation = strategy.allocate(make_context(budgets=[3]))
    assert allocation.layers == {0: (1, 3, 5)}
    assert allocation.info == {"custom": True}
    with pytest.raises(ConfigError, match=r"allocation\.params\.bogus"):
        build_strategy("test_every_other", {"bogus": 1})
    # registering the same class again is harmless
    assert register_strategy(EveryOtherStrategy) is EveryOtherStrategy


def test_registering_another_class_under_an_existing_name_fails():
    builtin_full = all_strategies()["full"]

    class Impostor(AllocationStrategy):
        name = "full"
        summary = "not the real one"

        def allocate(self, context):
            return Allocation({})

    with pytest.raises(ValueError, match="full"):
        register_strategy(Impostor)
    assert all_strategies()["full"] is builtin_full
    assert all_strategies()["full"] is not Impostor
