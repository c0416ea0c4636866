"""Test-set evaluation: accuracy, macro-F1, micro-F1 and mean loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from fedhello.data.splits import Split
from fedhello.models.federated_model import FederatedModel
from fedhello.training import Precision, autocast_for


@torch.inference_mode()
def evaluate(
    federated: FederatedModel, data: Split, indices: np.ndarray, batch_size: int, precision: Precision = "auto"
) -> dict[str, float]:
    model = federated.model
    device = federated.device
    model.eval()
    predictions, losses = [], []
    for start in range(0, len(indices), batch_size):
        batch = {key: value.to(device) for key, value in data.batch(indices[start : start + batch_size]).items()}
        labels = batch.pop("labels")
        with autocast_for(device, precision):
            logits = model(**batch).logits.float()
        losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
        predictions.append(logits.argmax(-1).cpu().numpy())
    predicted = np.concatenate(predictions)
    truth = data.labels[torch.as_tensor(indices)].numpy()
    num_classes = int(max(truth.max(initial=-1), predicted.max(initial=-1)) + 1)
    return {
        # Per class label: correct predictions and test samples (per-group accuracy in comparisons).
        "class_correct": np.bincount(truth[predicted == truth], minlength=num_classes).tolist(),
        "class_total": np.bincount(truth, minlength=num_classes).tolist(),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "loss": float(sum(losses) / len(indices)),
        "num_samples": int(len(indices)),
    }
