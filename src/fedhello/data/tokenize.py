"""Tokenise a text dataset once into fixed-length tensors shared by all clients.

Encodings are cached per process (per tokenizer, length and text), so the runs of a
comparison grid, which load the same texts cell after cell, tokenise each text once.
"""

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

    @property
    def classes(self) -> torch.Tensor:
        return self.labels

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": self.attention_mask[index],
            "labels": self.labels[index],
        }


_ENCODINGS: dict[tuple[str, int], dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


def _tokenizer_key(tokenizer) -> str:
    return f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"


def encode_texts(tokenizer, texts: list[str], labels: np.ndarray, max_length: int) -> EncodedSplit:
    clipped = [text[: max_length * CHARACTERS_PER_TOKEN_BOUND] for text in texts]
    cache = _ENCODINGS.setdefault((_tokenizer_key(tokenizer), max_length), {})
    missing = [text for text in dict.fromkeys(clipped) if text not in cache]
    if missing:
        encoded = tokenizer(missing, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        cache.update(zip(missing, zip(encoded["input_ids"], encoded["attention_mask"], strict=True), strict=True))
    if not clipped:
        empty = torch.zeros(0, max_length, dtype=torch.long)
        return EncodedSplit(empty, empty.clone(), torch.as_tensor(labels, dtype=torch.long))
    return EncodedSplit(
        torch.stack([cache[text][0] for text in clipped]),
        torch.stack([cache[text][1] for text in clipped]),
        torch.as_tensor(labels, dtype=torch.long),
    )
