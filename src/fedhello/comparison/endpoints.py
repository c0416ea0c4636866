"""The metrics a comparison ranks methods by (its endpoints), how it shows them, and which fit a task.

Classification compares accuracy (default) or macro-F1, higher is better; instruction tuning
compares the held-out loss (default: mean loss per answer token on the test pairs, a
low-noise endpoint), perplexity or ROUGE-L, where loss and perplexity are lower-is-better.
Paired differences are always method − reference; the report says which sign is better.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhello.errors import ConfigError
from fedhello.records import LOWER_IS_BETTER
from fedhello.tasks import task_for


@dataclass(frozen=True)
class Endpoint:
    metric: str  # the EvalResult field
    short: str  # in table headers
    name: str  # in sentences
    description: str  # what it is, for the report's introduction
    axis: str  # plot axis label
    scale: float  # 100: shown in percent, differences in points
    digits: int  # decimals in the tables
    paired_digits: int  # decimals of paired differences

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    @property
    def unit(self) -> str:
        return " %" if self.scale == 100 else ""

    @property
    def difference_unit(self) -> str:
        return f"{self.name} points" if self.scale == 100 else self.axis

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"

    def mean_std(self, mean: float, std: float) -> str:
        return f"{mean * self.scale:.{self.digits}f} ± {std * self.scale:.{self.digits}f}"


ENDPOINTS: dict[str, Endpoint] = {
    endpoint.metric: endpoint
    for endpoint in (
        Endpoint("accuracy", "acc", "accuracy", "accuracy", "test accuracy", 100, 1, 2),
        Endpoint("macro_f1", "macro-F1", "macro-F1", "macro-F1", "test macro-F1", 100, 1, 2),
        Endpoint(
            "loss",
            "loss",
            "held-out loss",
            "held-out loss (mean loss per answer token on the test pairs; lower is better)",
            "held-out loss per answer token",
            1,
            3,
            4,
        ),
        Endpoint(
            "perplexity",
            "perplexity",
            "perplexity",
            "perplexity (exp of the held-out loss; lower is better)",
            "held-out perplexity",
            1,
            2,
            3,
        ),
        Endpoint(
            "rouge_l",
            "ROUGE-L",
            "ROUGE-L",
            "ROUGE-L (of the greedy answers to the first evaluation.generate_samples test prompts)",
            "ROUGE-L",
            1,
            3,
            4,
        ),
    )
}


TARGET_FIELD = "comparison field 'target_accuracy'"


def comparison_endpoint(
    task_kind: str,
    requested: str | None,
    target_accuracy: float | None = None,
    target_source: str = TARGET_FIELD,
) -> Endpoint:
    """The endpoint of a comparison of `task_kind` runs: `requested`, or the task's headline metric.

    `target_source` names where a target accuracy came from (the comparison config or `report --target`) for the
    error when the task has no accuracy."""
    task = task_for(task_kind)
    metrics = task.comparison_metrics
    if requested is not None and requested not in metrics:
        raise ConfigError(
            f"comparison field 'endpoint': {task_kind} runs report {', '.join(metrics)}, not {requested!r}"
        )
    if target_accuracy is not None and "accuracy" not in metrics:
        raise ConfigError(
            f"{target_source}: {task_kind} runs report no accuracy; remove it (the endpoints are {', '.join(metrics)})"
        )
    return ENDPOINTS[requested or task.headline_metric]
