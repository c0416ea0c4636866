"""What sequence and image classification share: the head, the metrics, the Fisher objective."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import peft
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from fedhello.config import ExperimentConfig
from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.models.loading import load_with_lora
from fedhello.precision import autocast_for
from fedhello.tasks.base import EvaluationSettings, Objective, Task

HEAD_MODULE_NAMES = ("classifier", "score")


class CosineClassifier(nn.Linear):
    """A linear head that scores the cosine between features and class weights, times a fixed scale.

    Logits stay in [-scale, scale] whatever the feature norm, so a frozen random head of this kind
    learns as fast as the features can turn towards it (a plain random head of std 0.02 starts with
    logits near zero); it subclasses nn.Linear so its parameters keep the names and shapes of the head
    it replaces.
    """

    def __init__(self, linear: nn.Linear, scale: float) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")  # no throwaway weight
        self.weight = linear.weight
        self.scale = scale

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(features, dim=-1) @ F.normalize(self.weight, dim=-1).T


def use_cosine_classifier(model: nn.Module, scale: float) -> None:
    """Replace every linear task head (classifier/score) of `model` by a CosineClassifier on the same weights."""
    for name, module in list(model.named_modules()):
        parent_name, _, leaf = name.rpartition(".")
        if leaf in HEAD_MODULE_NAMES and isinstance(module, nn.Linear):
            setattr(model.get_submodule(parent_name), leaf, CosineClassifier(module, scale))


def head_parameter_names(model: nn.Module, *, train_pooler: bool) -> tuple[str, ...]:
    """Parameters of the task head (classifier/score) and, optionally, the backbone's pooler."""
    head_modules: list[nn.Module] = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in HEAD_MODULE_NAMES or (train_pooler and leaf == "pooler"):
            head_modules.append(module)
    head_ids = {id(parameter) for module in head_modules for parameter in module.parameters()}
    return tuple(name for name, parameter in model.named_parameters() if id(parameter) in head_ids)


class ClassificationTask(Task):
    """A label per sample: cross-entropy, accuracy / macro-F1 / micro-F1, Fisher of log p(y | x)."""

    comparison_metrics = ("accuracy", "macro_f1")
    model_class: ClassVar[Any]  # a transformers Auto class with a classification head
    preprocessor_class: ClassVar[Any]
    model_options: ClassVar[dict[str, Any]] = {}

    def load_model(self, config: ExperimentConfig, num_classes: int, device: torch.device) -> FederatedModel:
        def load_model(source: str):
            model = self.model_class.from_pretrained(source, num_labels=num_classes, **self.model_options)
            if config.model.classifier == "cosine":
                use_cosine_classifier(model, config.model.cosine_scale)
            return model

        model, preprocessor = load_with_lora(config, self.preprocessor_class.from_pretrained, load_model, device)
        self.complete_loading(model, preprocessor)
        return FederatedModel.wrap(
            model, self, head_parameter_names(model, train_pooler=config.model.train_pooler), preprocessor
        )

    def complete_loading(self, model: peft.PeftModel, preprocessor: Any) -> None:
        """Adjust a freshly loaded model and preprocessor to each other (nothing by default)."""

    def evaluate(
        self, federated: FederatedModel, data: Split, indices: np.ndarray, settings: EvaluationSettings
    ) -> dict[str, Any]:
        return classification_metrics(federated, data, indices, settings)

    def sample_objective(self, logits: torch.Tensor, labels: torch.Tensor, objective: Objective) -> torch.Tensor:
        scores = torch.log_softmax(logits, -1) if objective == "log_likelihood" else logits
        return scores.gather(0, labels[None])[0]


@torch.inference_mode()
def classification_metrics(
    federated: FederatedModel, data: Split, indices: np.ndarray, settings: EvaluationSettings
) -> dict[str, Any]:
    model = federated.model
    device = federated.device
    model.eval()
    predictions, losses = [], []
    for start in range(0, len(indices), settings.batch_size):
        batch = {
            key: value.to(device) for key, value in data.batch(indices[start : start + settings.batch_size]).items()
        }
        labels = batch.pop("labels")
        with autocast_for(device, settings.precision):
            logits = model(**batch).logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
        predictions.append(logits.argmax(-1).cpu().numpy())
    predicted = np.concatenate(predictions)
    truth = data.classes[torch.as_tensor(indices)].numpy()
    num_classes = int(max(truth.max(initial=-1), predicted.max(initial=-1)) + 1)
    return {
        # Per class label: correct predictions and test samples (per-group accuracy in comparisons).
        "class_correct": np.bincount(truth[predicted == truth], minlength=num_classes).tolist(),
        "class_total": np.bincount(truth, minlength=num_classes).tolist(),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "loss": float(sum(losses) / len(indices)),
        "num_samples": len(indices),
    }
