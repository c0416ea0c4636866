"""What training, evaluation and Fisher scoring need from a data split, whatever the modality."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Split(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs and `labels` for the given sample positions."""
        ...
