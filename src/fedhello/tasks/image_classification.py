"""Image classification: a label per image, AutoModelForImageClassification (ViT) with a new head."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from transformers import AutoImageProcessor, AutoModelForImageClassification

from fedhello.config import ExperimentConfig
from fedhello.data.datasets import ImageClassificationData
from fedhello.data.images import ImageSplit, image_split
from fedhello.models.federated_model import FederatedModel
from fedhello.tasks.classification import ClassificationTask


class ImageClassificationTask(ClassificationTask):
    kind = "image_classification"
    description = "a label per image (ViT; the checkpoint's head is replaced by one for the dataset's classes)"
    data_type = ImageClassificationData

    model_class = AutoModelForImageClassification
    preprocessor_class = AutoImageProcessor
    model_options: ClassVar[dict[str, Any]] = {
        "ignore_mismatched_sizes": True
    }  # the checkpoint's head may have other classes

    def encode(
        self,
        federated: FederatedModel,
        data: ImageClassificationData,
        split: Literal["train", "test"],
        positions: np.ndarray,
        config: ExperimentConfig,
    ) -> ImageSplit:
        num_channels = federated.model.config.num_channels
        images = getattr(data, f"{split}_images")[positions]
        return image_split(images, getattr(data, f"{split}_labels")[positions], federated.preprocessor, num_channels)
