"""Image classification: a label per image, AutoModelForImageClassification (ViT) with a new head."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from fedhello.config import ExperimentConfig
from fedhello.data.datasets import ImageClassificationData
from fedhello.data.images import ImageSplit, image_split
from fedhello.models.federated_model import FederatedModel
from fedhello.models.loading import load_with_lora
from fedhello.tasks.classification import ClassificationTask, head_parameter_names


class ImageClassificationTask(ClassificationTask):
    kind = "image_classification"
    description = "a label per image (ViT; the checkpoint's head is replaced by one for the dataset's classes)"
    data_type = ImageClassificationData

    def load_model(self, config: ExperimentConfig, num_classes: int, device: torch.device) -> FederatedModel:
        def load_model(source: str):
            return AutoModelForImageClassification.from_pretrained(
                source, num_labels=num_classes, ignore_mismatched_sizes=True
            )

        model, processor = load_with_lora(config, AutoImageProcessor.from_pretrained, load_model, device)
        return FederatedModel.wrap(model, self, head_parameter_names(model, train_pooler=config.model.train_pooler),
                                   processor)

    def encode(self, federated: FederatedModel, data: ImageClassificationData, split: Literal["train", "test"],
               positions: np.ndarray, config: ExperimentConfig) -> ImageSplit:
        num_channels = federated.model.get_base_model().config.num_channels
        images = getattr(data, f"{split}_images")[positions]
        return image_split(images, getattr(data, f"{split}_labels")[positions], federated.preprocessor, num_channels)
