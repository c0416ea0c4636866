"""Text encoding: fixed-length tensors identical to the tokenizer's own output, each text tokenised once per process."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoTokenizer

from fedhello.data.tokenize import encode_texts
from fedhello.models.sources import resolve_model_source


class CountingTokenizer:
    """The real MiniLM tokenizer, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        self.inner = AutoTokenizer.from_pretrained(resolve_model_source("minilm-l6"))
        self.name_or_path = self.inner.name_or_path
        self.texts_encoded = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, texts, **kwargs):
        self.texts_encoded += len(texts)
        return self.inner(texts, **kwargs)


def test_encodings_equal_the_tokenizer_and_are_cached():
    tokenizer = CountingTokenizer()
    texts = ["the first post about hockey", "a second one on space", "the first post about hockey", "graphics cards"]
    first = encode_texts(tokenizer, texts, np.array([0, 1, 0, 2]), max_length=16)
    expected = tokenizer.inner(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")
    assert torch.equal(first.input_ids, expected["input_ids"])
    assert torch.equal(first.attention_mask, expected["attention_mask"])
    assert first.labels.tolist() == [0, 1, 0, 2]
    assert tokenizer.texts_encoded == 3  # the repeated text once

    again = encode_texts(tokenizer, [*texts[::-1], "a new text"], np.arange(5), max_length=16)
    assert tokenizer.texts_encoded == 4  # only the new text
    assert torch.equal(again.input_ids[:4], first.input_ids.flip(0))
    other_length = encode_texts(tokenizer, texts[:1], np.array([0]), max_length=8)
    assert other_length.input_ids.shape == (1, 8) and tokenizer.texts_encoded == 5
