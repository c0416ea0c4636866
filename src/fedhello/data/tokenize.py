"""Tokenise a text dataset once into fixed-length tensors shared by all clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# A token covers at least one character, so cutting texts at this many characters per
# token of max_length never changes the truncated encoding of ordinary text; it only
# spares the tokenizer from reading whole newsgroup posts.
CHARACTERS_PER_TOKEN_BOUND = 12


@dataclass(frozen=True)
class EncodedSplit:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "labels": self.labels[index],
        }


def encode_texts(tokenizer, texts: list[str], labels: np.ndarray, max_length: int) -> EncodedSplit:
    clipped = [text[: max_length * CHARACTERS_PER_TOKEN_BOUND] for text in texts]
    encoded = tokenizer(clipped, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return EncodedSplit(encoded["input_ids"], encoded["attention_mask"], torch.as_tensor(labels, dtype=torch.long))
