import numpy as np
import pytest

from fedhello.data.partition import PARTITIONERS, partition_indices, partition_summary

SCHEMES = ["iid", "pathological", "dirichlet"]


def make_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "each part must be sorted and duplicate-free"
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def class_counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def test_registry_names():
    assert set(PARTITIONERS) == set(SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_index_assigned_exactly_once(scheme):
    # uneven class sizes to exercise remainders
    labels = np.random.default_rng(1).integers(0, 7, size=1013)
    parts = partition_indices(labels, 13, scheme, np.random.default_rng(2), classes_per_client=3)
    assert len(parts) == 13
    assert_exact_cover(parts, len(labels))


@pytest.mark.parametrize(
    "num_clients,num_classes,k,per_class",
    [(20, 20, 4, 60), (100, 100, 10, 120), (7, 5, 3, 60), (10, 10, 2, 30), (3, 10, 10, 40)],
)
def test_pathological_class_structure(num_clients, num_classes, k, per_class):
    labels = make_labels(num_classes, per_class)
    min_per_client = 5
    parts = partition_indices(
        labels,
        num_clients,
        "pathological",
        np.random.default_rng(3),
        classes_per_client=k,
        min_per_client=min_per_client,
    )
    assert_exact_cover(parts, len(labels))
    counts = class_counts(labels, parts, num_classes)
    held = counts > 0
    np.testing.assert_array_equal(held.sum(axis=1), np.full(num_clients, k))

    holders = held.sum(axis=0)
    assert holders.max() - holders.min() <= 1
    if (num_clients * k) % num_classes == 0:
        assert np.all(holders == num_clients * k // num_classes)

    # per_class >= holders * min_per_client in every case above
    assert np.all(counts[held] >= min_per_client)


def test_pathological_min_shrinks_for_small_classes():
    labels = make_labels(num_classes=4, per_class=9)
    parts = partition_indices(
        labels, 8, "pathological", np.random.default_rng(0), classes_per_client=2, min_per_client=10
    )
    assert_exact_cover(parts, len(labels))
    counts = class_counts(labels, parts, 4)
    # 4 holders per class, 9 samples -> floor(9 / 4) = 2 each
    assert np.all(counts[counts > 0] >= 2)
    assert np.all((counts > 0).sum(axis=1) == 2)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_reproducible_for_seed(scheme):
    labels = make_labels(10, 50)

    def run(seed: int) -> list[np.ndarray]:
        return partition_indices(labels, 8, scheme, np.random.default_rng(seed))

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def mean_tv_from_global(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    counts = class_counts(labels, parts, num_classes).astype(float)
    local = counts / counts.sum(axis=1, keepdims=True)
    global_dist = np.bincount(labels, minlength=num_classes) / len(labels)
    return float(np.mean(0.5 * np.abs(local - global_dist).sum(axis=1)))


def test_dirichlet_skew_decreases_with_alpha():
    labels = make_labels(10, 200)

    def skew(alpha: float) -> float:
        values = []
        for seed in range(5):
            rng = np.random.default_rng(seed)
            parts = partition_indices(labels, 10, "dirichlet", rng, alpha=alpha)
            values.append(mean_tv_from_global(labels, parts, 10))
        return float(np.mean(values))

    low, mid, high = skew(0.1), skew(1.0), skew(100.0)
    assert low > mid > high
    assert high < 0.1


def test_dirichlet_no_empty_client():
    # tiny alpha with many clients would leave some clients empty without the fix-up
    labels = make_labels(2, 30)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        parts = partition_indices(labels, 40, "dirichlet", rng, alpha=0.01)
        assert_exact_cover(parts, len(labels))
        assert min(len(p) for p in parts) >= 1


def test_iid_sizes_and_balance():
    labels = make_labels(10, 2000)
    parts = partition_indices(labels, 7, "iid", np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert mean_tv_from_global(labels, parts, 10) < 0.03


def test_partition_summary_matches_bincount():
    labels = make_labels(6, 40)
    rng = np.random.default_rng(4)
    parts = partition_indices(labels, 5, "pathological", rng, classes_per_client=2)
    summary = partition_summary(labels, parts, 6)
    assert [s["client"] for s in summary] == list(range(5))
    for s, p in zip(summary, parts, strict=True):
        expected = np.bincount(labels[p], minlength=6)
        assert s["class_counts"] == expected.tolist()
        assert s["num_samples"] == len(p)
        assert s["num_classes"] == int(np.count_nonzero(expected)) == 2


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(scheme="nope"), "iid"),
        (dict(num_clients=0), "num_clients"),
        (dict(num_clients=101), "num_clients"),
        (dict(scheme="pathological", classes_per_client=0), "classes_per_client"),
        (dict(scheme="pathological", classes_per_client=6), "classes_per_client"),
        (dict(scheme="pathological", min_per_client=-1), "min_per_client"),
        (dict(scheme="dirichlet", alpha=0.0), "alpha"),
        (dict(labels=np.array([[0, 1]])), "labels"),
        (dict(labels=np.array([0.0, 1.0])), "labels"),
        (dict(labels=np.array([-1, 0])), "labels"),
    ],
)
def test_bad_inputs_raise(kwargs, field):
    args = dict(labels=make_labels(5, 20), num_clients=4, scheme="iid")
    args.update(kwargs)
    labels, num_clients, scheme = args.pop("labels"), args.pop("num_clients"), args.pop("scheme")
    with pytest.raises(ValueError, match=field):
        partition_indices(labels, num_clients, scheme, np.random.default_rng(0), **args)
