"""What a task kind owns: its model, its inputs, its loss, its metrics and its Fisher objective.

The federation (server, clients, engines, strategies) never asks which task it runs: it
calls these methods on the `Task` that the loaded `FederatedModel` carries. A task kind is
one module in this package (sequence classification, image classification, causal-LM
instruction tuning), registered by name in `fedhello.tasks`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from fedhello.data.splits import Split
from fedhello.precision import Precision

if TYPE_CHECKING:
    from fedhello.config import ExperimentConfig
    from fedhello.models.federated_model import FederatedModel

Objective = Literal["log_likelihood", "logit"]


@dataclass(frozen=True)
class EvaluationSettings:
    batch_size: int
    precision: Precision = "auto"
    generate_samples: int = 0  # generative tasks: held-out samples whose greedy generations are scored
    max_new_tokens: int = 48

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> EvaluationSettings:
        evaluation = config.evaluation
        return cls(evaluation.batch_size, config.precision, evaluation.generate_samples, evaluation.max_new_tokens)


class Task(ABC):
    """One task kind. Instances are stateless; the registry holds one of each."""

    kind: ClassVar[str]
    description: ClassVar[str]
    data_type: ClassVar[type]  # the dataset class (data/datasets.py, data/instructions.py) it reads
    # The EvalResult fields a comparison tabulates; the first is the task's headline metric (`headline_metric`).
    comparison_metrics: ClassVar[tuple[str, ...]]

    @property
    def headline_metric(self) -> str:
        """The metric a run leads with: its summary's best round, progress line and plots, and `fedhello compare`'s
        default endpoint (`LOWER_IS_BETTER` in `fedhello.records` says which way is better)."""
        return self.comparison_metrics[0]

    @abstractmethod
    def load_model(self, config: ExperimentConfig, num_classes: int, device: torch.device) -> FederatedModel:
        """The frozen base model with LoRA injected, wrapped with its head names and preprocessor.

        `num_classes` sizes a classification head (tasks without one ignore it).
        """

    @abstractmethod
    def encode(
        self,
        federated: FederatedModel,
        data: Any,
        split: Literal["train", "test"],
        positions: np.ndarray,
        config: ExperimentConfig,
    ) -> Split:
        """Model inputs for the samples at `positions` of the dataset's train or test split."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The mean training loss of a batch (Hugging Face models compute it from `labels`)."""
        return model(**batch).loss

    @abstractmethod
    def evaluate(
        self, federated: FederatedModel, data: Split, indices: np.ndarray, settings: EvaluationSettings
    ) -> dict[str, Any]:
        """Metrics of the loaded model on the samples at `indices` (EvalResult fields)."""

    @abstractmethod
    def sample_objective(self, logits: torch.Tensor, labels: torch.Tensor, objective: Objective) -> torch.Tensor:
        """One sample's scalar whose squared gradient is its Fisher contribution.

        `logits` and `labels` are one sample's model output and `labels` entry (no batch
        axis). It runs under `torch.func.vmap`, so it must not branch on tensor values.
        """
