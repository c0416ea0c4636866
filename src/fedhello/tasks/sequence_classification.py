"""Sequence classification: a label per text, AutoModelForSequenceClassification with a new head."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import peft
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fedhello.config import ExperimentConfig
from fedhello.data.datasets import TextClassificationData
from fedhello.data.tokenize import EncodedSplit, encode_texts
from fedhello.models.federated_model import FederatedModel
from fedhello.models.loading import ensure_pad_token
from fedhello.tasks.classification import ClassificationTask


class SequenceClassificationTask(ClassificationTask):
    kind = "sequence_classification"
    description = "a label per text (BERT, RoBERTa, Llama ... with a new classification head)"
    data_type = TextClassificationData

    model_class = AutoModelForSequenceClassification
    preprocessor_class = AutoTokenizer

    def complete_loading(self, model: peft.PeftModel, tokenizer: Any) -> None:
        ensure_pad_token(tokenizer)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id

    def encode(
        self,
        federated: FederatedModel,
        data: TextClassificationData,
        split: Literal["train", "test"],
        positions: np.ndarray,
        config: ExperimentConfig,
    ) -> EncodedSplit:
        texts = getattr(data, f"{split}_texts")
        labels = getattr(data, f"{split}_labels")[positions]
        return encode_texts(federated.preprocessor, [texts[i] for i in positions], labels, config.model.max_length)
