"""One seed, separate random streams per concern.

Each concern (partition, client sampling, allocation, data order, init, ...) gets its
own generator derived from the run seed and the concern's name, so changing how often
one concern draws never shifts the numbers another concern sees.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

STREAMS = (
    "partition",
    "groups",
    "sampling",
    "allocation",
    "data_order",
    "init",
    "dropout",
    "proxy",
    "eval",
    "pretrain",
    "privacy",
)


def _stream_key(name: str) -> int:
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; known: {', '.join(STREAMS)}")
    return zlib.crc32(name.encode())


def numpy_rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    """A numpy generator for `stream`, optionally keyed further (e.g. by round, client)."""
    return np.random.default_rng([seed, _stream_key(stream), *extra])


def torch_seed(seed: int, stream: str, *extra: int) -> int:
    """A 63-bit seed for torch generators / `torch.manual_seed`, derived like `numpy_rng`."""
    return int(numpy_rng(seed, stream, *extra).integers(0, 2**63 - 1))


def torch_generator(seed: int, stream: str, *extra: int) -> torch.Generator:
    return torch.Generator().manual_seed(torch_seed(seed, stream, *extra))
