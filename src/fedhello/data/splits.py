"""What training, evaluation and Fisher scoring need from a data split, whatever the modality."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Split(Protocol):
    @property
    def classes(self) -> torch.Tensor:
        """The class of each sample (its label, or an instruction pair's category): partitions and per-class counts."""
        ...

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs and `labels` (what the loss is computed against) for the given sample positions."""
        ...
