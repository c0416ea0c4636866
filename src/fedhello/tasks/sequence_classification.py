"""Sequence classification: a label per text, AutoModelForSequenceClassification with a new head."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from fedhello.config import ExperimentConfig
from fedhello.data.datasets import TextClassificationData
from fedhello.data.tokenize import EncodedSplit, encode_texts
from fedhello.models.federated_model import FederatedModel
from fedhello.models.loading import load_with_lora
from fedhello.tasks.classification import ClassificationTask, head_parameter_names


class SequenceClassificationTask(ClassificationTask):
    kind = "sequence_classification"
    description = "a label per text (BERT, RoBERTa, Llama ... with a new classification head)"
    data_type = TextClassificationData

    def load_model(self, config: ExperimentConfig, num_classes: int, device: torch.device) -> FederatedModel:
        def load_model(source: str):
            return AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_classes)

        model, tokenizer = load_with_lora(config, AutoTokenizer.from_pretrained, load_model, device)
        if tokenizer.pad_token_id is None:  # decoder tokenizers often have none; padding is masked anyway
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return FederatedModel.wrap(model, self, head_parameter_names(model, train_pooler=config.model.train_pooler),
                                   tokenizer)

    def encode(self, federated: FederatedModel, data: TextClassificationData, split: Literal["train", "test"],
               positions: np.ndarray, config: ExperimentConfig) -> EncodedSplit:
        texts = getattr(data, f"{split}_texts")
        labels = getattr(data, f"{split}_labels")[positions]
        return encode_texts(federated.preprocessor, [texts[i] for i in positions], labels, config.model.max_length)
