"""Image splits kept as uint8 and turned into model inputs one batch at a time.

Keeping raw pixels (CIFAR-100: 150 MB) and resizing/normalising per batch avoids a
pre-processed float copy at the model's resolution (CIFAR-100 at 224 px: 30 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageSplit:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor
    size: tuple[int, int]
    mean: torch.Tensor  # [C, 1, 1]
    std: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> torch.Tensor:
        return self.labels

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        pixels = self.images[index].float() / 255.0
        if tuple(pixels.shape[-2:]) != self.size:
            pixels = F.interpolate(pixels, size=self.size, mode="bilinear", align_corners=False)
        return {"pixel_values": (pixels - self.mean) / self.std, "labels": self.labels[index]}


def image_split(images: np.ndarray, labels: np.ndarray, processor, num_channels: int) -> ImageSplit:
    """[N, H, W, C] uint8 images -> an ImageSplit matching the processor's size and normalisation."""
    tensor = torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()
    if tensor.shape[1] != num_channels:
        if tensor.shape[1] != 1:
            raise ValueError(f"images have {tensor.shape[1]} channels, the model expects {num_channels}")
        tensor = tensor.expand(-1, num_channels, -1, -1).contiguous()
    size = processor.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    mean = torch.as_tensor(processor.image_mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(processor.image_std, dtype=torch.float32).reshape(-1, 1, 1)
    if mean.shape[0] != num_channels:
        mean, std = mean.expand(num_channels, 1, 1), std.expand(num_channels, 1, 1)
    return ImageSplit(tensor, torch.as_tensor(labels, dtype=torch.long), (int(height), int(width)), mean, std)
