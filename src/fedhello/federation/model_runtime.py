"""The server's model-side work on one loaded model: global evaluation and Fisher scoring.

Both engines use it: the in-process engine on the model its clients share, a Flower
ServerApp on the model it loads itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedhello.data.splits import Split
from fedhello.fisher import layer_scores, lora_fisher_diagonal
from fedhello.models.federated_model import FederatedModel
from fedhello.records import EvalResult
from fedhello.tasks.base import EvaluationSettings, Objective
from fedhello.tensor_state import TensorState, split_merged_deltas


@dataclass
class GlobalModelRuntime:
    federated: FederatedModel
    test: Split
    proxy: Split | None
    evaluation: EvaluationSettings
    fisher_batch_size: int
    fisher_objective: Objective

    @property
    def num_test_samples(self) -> int:
        return len(self.test)

    def evaluate(self, global_state: TensorState, indices: np.ndarray, split: str) -> EvalResult:
        """The global model's metrics; `merged_delta_key` entries are merged into base weights meanwhile."""
        plain, merged = split_merged_deltas(global_state)
        self.federated.load_state(plain)
        with self.federated.merged_deltas(merged):
            metrics = self.federated.task.evaluate(self.federated, self.test, indices, self.evaluation)
        return EvalResult(split=split, **metrics)

    def score_layers(self, global_state: TensorState) -> np.ndarray:
        """Fisher layer scores of the global model on the server's proxy set."""
        if self.proxy is None or len(self.proxy) == 0:
            raise RuntimeError("Fisher scoring needs a proxy set: set fisher.proxy_size > 0")
        self.federated.load_state(global_state)
        fisher = lora_fisher_diagonal(self.federated, self.proxy, self.fisher_batch_size, self.fisher_objective)
        return layer_scores(fisher, self.federated.layer_map)
