"""Typed records of a run: what the server and clients report each round.

Every writer (JSONL, CSV, TensorBoard, summaries) and reader goes through these
dataclasses, so the field names live in one place. `to_json` gives the line written to
the run directory; `from_json` reads one back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from typing_extensions import Self

Record = TypeVar("Record")

ClientStatus = Literal["trained", "idle", "dropped"]


def _to_json(record: Any) -> dict[str, Any]:
    """A dict of the record's fields, nested records included, without fields that are None."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if value is None:
            continue
        if dataclasses.is_dataclass(value):
            value = _to_json(value)
        elif isinstance(value, (list, tuple)):
            value = [_to_json(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[item.name] = value
    return out


def _required(item: dataclasses.Field) -> bool:
    return item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING


class JsonRecord:
    def to_json(self) -> dict[str, Any]:
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record of one JSON line; `to_json` leaves out fields that are None, so they come back as None."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return cls(**{item.name: data.get(item.name) for item in fields if item.name in data or _required(item)})


# The metrics a task may report (EvalResult fields), in display order, with their labels.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "micro_f1": "micro-F1",
    "rouge_l": "ROUGE-L",
    "perplexity": "perplexity",
}
# The metrics a task may lead with (`Task.headline_metric`): its own metrics, or the held-out loss every
# evaluation reports (`EvalResult.loss`, the headline of instruction tuning).
HEADLINE_LABELS: dict[str, str] = {**METRIC_LABELS, "loss": "held-out loss"}
LOWER_IS_BETTER: frozenset[str] = frozenset({"perplexity", "loss"})


def better(metric: str, value: float, than: float) -> bool:
    return value < than if metric in LOWER_IS_BETTER else value > than


@dataclass
class EvalResult(JsonRecord):
    """Metrics of one evaluation; the task decides which metrics are set (the others stay None).

    `num_clients` is set for personal-model evaluations.
    """

    split: str
    loss: float
    num_samples: int
    accuracy: float | None = None  # classification
    macro_f1: float | None = None
    micro_f1: float | None = None
    rouge_l: float | None = None  # causal LM: mean ROUGE-L F-measure of greedy answers
    perplexity: float | None = None  # causal LM: exp(mean loss per answer token)
    generated_samples: int | None = None  # causal LM: answers scored with ROUGE-L
    num_clients: int | None = None
    class_correct: list[int] | None = None  # per class label: correct predictions (global evaluations)
    class_total: list[int] | None = None  # per class label: test samples evaluated
    # causal LM, per category (the instruction data's class label): summed answer-token loss and answer tokens,
    # so the held-out loss on any set of categories is sum(class_loss) / sum(class_tokens) over them
    class_loss: list[float] | None = None
    class_tokens: list[int] | None = None

    def value(self, metric: str) -> float | None:
        """The value of a metric named in `HEADLINE_LABELS` (None where this evaluation did not report it)."""
        return getattr(self, metric)

    def metrics(self) -> dict[str, float]:
        """The reported metrics by name, in display order."""
        return {name: getattr(self, name) for name in METRIC_LABELS if getattr(self, name) is not None}


@dataclass
class ClientRecord(JsonRecord):
    """One client's round: what it trained, what it cost, or why it was dropped."""

    round: int
    client: int
    group: int
    layers: list[int]
    status: ClientStatus = "trained"
    rank: int | None = None
    trainable_params: int = 0
    local_steps: int = 0
    num_samples: int = 0
    train_loss: float | None = None
    wall_time_s: float = 0.0
    bytes_down: int = 0
    bytes_up: int = 0
    activation_bytes: int = 0
    state_bytes: int = 0  # gradients + AdamW states of the trained tensors (fp32 states)
    reason: str | None = None
    within_clip: bool | None = None  # privacy.mode client: the update's norm was within clip_norm before clipping


@dataclass
class DroppedClient(JsonRecord):
    client: int
    reason: str


@dataclass
class PrivacyRecord(JsonRecord):
    """A round of differentially private aggregation (`privacy` in metrics.jsonl).

    `epsilon` is ε at `delta` after this round. Per layer (and for the head): how many
    accepted clients contributed, and the noise-to-signal ratio ||noise|| / ||sum of
    clipped updates|| over the layer's tensors (null where no one was asked to train it).
    The ratio is computed from the unnoised sum: an operator's diagnostic outside the
    guarantee, like the training loss.
    """

    epsilon: float
    delta: float
    noise_multiplier: float
    clip_norm: float
    noise_std: float
    layer_contributors: list[int]
    layer_noise_to_signal: list[float | None]
    head_contributors: int = 0
    head_noise_to_signal: float | None = None
    unclipped_fraction: float | None = None  # adaptive clipping: the noised fraction of updates within clip_norm


@dataclass
class RoundRecord(JsonRecord):
    """The server's record of one round (a line of metrics.jsonl)."""

    round: int
    clients: list[int]
    train_loss: float | None
    bytes_down: int
    bytes_up: int
    client_time_s: float
    layer_counts: list[int]
    dropped: list[DroppedClient] = field(default_factory=list)
    eval: EvalResult | None = None
    eval_time_s: float = 0.0
    wall_time_s: float = 0.0
    # "empty": no client's update survived; the model is unchanged (with DP, only noise is added)
    status: Literal["empty"] | None = None
    privacy: PrivacyRecord | None = None  # set when differential privacy is on

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        record = super().from_json(data)
        record.dropped = [DroppedClient.from_json(d) for d in data.get("dropped", [])]
        record.eval = EvalResult.from_json(data["eval"]) if data.get("eval") else None
        record.privacy = PrivacyRecord.from_json(data["privacy"]) if data.get("privacy") else None
        return record


@dataclass
class AssignedLayers(JsonRecord):
    client: int
    group: int
    layers: list[int]
    rank: int | None = None


@dataclass
class CoverageRecord(JsonRecord):
    """What the coverage rule (`allocation.min_trainers_per_layer`) changed in one round's allocation.

    `pruned`: the layers fewer than `min_trainers` clients were to train, taken from all of them;
    `removed` / `refilled`: client-layer assignments taken away / given back; `idle`: clients left
    with no layer, who sit out.
    """

    min_trainers: int
    pruned: list[int]
    removed: int
    refilled: int
    idle: list[int]


@dataclass
class AllocationRecord(JsonRecord):
    """Who trains which layers in one round (a line of allocations.jsonl); `coverage` is set when the rule is on."""

    round: int
    clients: list[AssignedLayers]
    source: str | None = None
    coverage: CoverageRecord | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AllocationRecord:
        return cls(
            data["round"],
            [AssignedLayers.from_json(c) for c in data["clients"]],
            data.get("source"),
            CoverageRecord.from_json(data["coverage"]) if data.get("coverage") else None,
        )


@dataclass
class FisherRecord(JsonRecord):
    """One Fisher refresh: per-layer scores, their tiers and the resulting sampling weights."""

    round: int
    scores: list[float]
    tiers: list[int]
    weights: list[float]
