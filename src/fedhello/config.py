"""Experiment configuration: schema, presets, YAML files and `--set` overrides.

The schema's defaults are the default offline experiment. A preset, a YAML file and
command-line overrides are applied on top, in that order. Every problem becomes a
`ConfigError` whose message names the field and what is allowed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import json
import math
import re
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fedhello.errors import ConfigError, pydantic_location, pydantic_message
from fedhello.resources.memory_units import parse_memory

Weighting = Literal["samples", "uniform"]  # how clients' updates are weighted in aggregation


class NoBooleanNumbers(BaseModel):
    """A schema that refuses a boolean given for a number or a name (config sections, strategy parameters)."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads true as 1: `federation.rounds=true` would run one round instead of being refused."""
        items = value if isinstance(value, list) else [value]
        annotation = str(cls.model_fields[info.field_name or ""].annotation)
        if any(isinstance(item, bool) for item in items) and "bool" not in annotation and "Any" not in annotation:
            expected = "a number" if "int" in annotation or "float" in annotation else "a name"
            raise ValueError(
                f"got a boolean where {expected} belongs (YAML reads true/false/yes/no/on/off as booleans; "
                "quote a word you mean literally)"
            )
        return value


class _Section(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True, allow_inf_nan=False)


class ModelConfig(_Section):
    name: str = Field(
        "minilm-l6", description="offline alias (see `fedhello datasets`), a local folder, or a Hugging Face hub id"
    )
    task: Literal["sequence_classification", "image_classification", "causal_lm"] = Field(
        "sequence_classification",
        description="task kind (see `fedhello tasks`); must fit the dataset (texts, images or instruction pairs)",
    )
    max_length: int = Field(
        64, ge=8, le=8192, description="tokens per example (truncation; causal_lm: prompt + answer)"
    )
    system_prompt: str | None = Field(
        None,
        description="causal_lm: the system message of the chat template (null: the template's default; '' for the "
        "shortest; SmolLM2's default costs 21 tokens per sample, '' costs 5)",
    )
    classifier: Literal["linear", "cosine"] = Field(
        "linear",
        description="classification head: linear (the checkpoint's); cosine: logits = cosine_scale x cos(features, "
        "class weight), a scale-free head; with training.head=frozen it is a fixed random classifier, so the LoRA "
        "layers carry all learning and no client can bias it towards its own classes",
    )
    cosine_scale: float = Field(
        16.0, gt=0, le=1000, description="classifier=cosine: the logit scale (inverse temperature)"
    )
    train_pooler: bool = Field(
        True,
        description="train the pooler with the classifier; BERT-style sentence-embedding checkpoints never "
        "trained their CLS pooler for classification, and without it the head alone barely learns",
    )


MAX_LORA_ALPHA = 1e4


class LoraConfig(_Section):
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: Literal["auto"] | list[str] = Field(
        "auto", description="module names, or auto-detected per architecture"
    )

    @field_validator("alpha")
    @classmethod
    def _alpha_in_range(cls, value: float) -> float:
        if value > MAX_LORA_ALPHA:
            raise ValueError(
                f"must be at most {MAX_LORA_ALPHA:g}: the update is scaled by alpha / rank, and larger scales "
                "overflow training (usual values: 8 to 64)"
            )
        return value

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or any(not name.strip() for name in value)):
            raise ValueError(
                "needs at least one module name (e.g. [query, value]), or 'auto'; empty names are not names"
            )
        return value


class DataConfig(_Section):
    dataset: str = Field("20newsgroups", description="registered dataset name (see `fedhello datasets`)")
    max_train_samples: int | None = Field(None, ge=1, description="cap on training samples (seeded subsample)")
    max_test_samples: int | None = Field(
        None, ge=1, description="cap on test samples (seeded subsample; for quick checks)"
    )
    labels: list[str] | None = Field(
        None,
        description="the label set (class or category names, in head order) every node's data is checked "
        "against; null: the dataset's own label names. Set it for a deployment whose nodes train on "
        "their own files, so no node needs the dataset",
    )

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None and (not labels or len(set(labels)) != len(labels)):
            raise ValueError("must be a non-empty list of distinct label names")
        return labels


class PartitionConfig(_Section):
    scheme: Literal["iid", "pathological", "dirichlet"] = Field(
        "pathological", description="how training data is split among clients"
    )
    classes_per_client: int = Field(4, ge=1, description="pathological: classes per client")
    min_per_client: int = Field(
        10, ge=0, description="pathological: samples per client and class before the Dirichlet(1) split"
    )
    alpha: float = Field(0.5, gt=0, description="dirichlet: label-skew concentration")


class FederationConfig(_Section):
    num_clients: int = Field(20, ge=1, description="K, clients holding data")
    clients_per_round: int = Field(5, ge=1, description="m, clients sampled per round")
    rounds: int = Field(20, ge=1, description="communication rounds")
    max_update_bytes: int | None = Field(
        None, ge=1, description="reject a client update larger than this (null: the bytes the client was sent)"
    )

    @model_validator(mode="after")
    def _sample_fits(self) -> FederationConfig:
        if self.clients_per_round > self.num_clients:
            raise ValueError(
                f"clients_per_round ({self.clients_per_round}) must be at most num_clients ({self.num_clients})"
            )
        return self


class TrainingConfig(_Section):
    lr: float = Field(3e-3, gt=0, le=10, description="AdamW learning rate (fresh optimiser every round)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch_size: int = Field(16, ge=1, description="local mini-batch size")
    local_epochs: int = Field(1, ge=1, description="passes over the client's data per round")
    max_local_steps: int | None = Field(
        5, ge=1, description="stop local training after this many steps (null: whole epochs)"
    )
    max_grad_norm: float | None = Field(None, gt=0, description="clip the gradient norm (null: no clipping)")
    head: Literal["aggregate", "frozen", "local", "reset"] = Field(
        "aggregate",
        description="aggregate: FedAvg the head over all participants; frozen: never train it; "
        "local: each client keeps its own trained head across rounds (a personal head; not the reference); "
        "reset: every client trains the never-updated initial head each round and throws it away (the reference "
        "code's behaviour)",
    )
    weighting: Weighting = Field("samples", description="aggregation weights among a tensor's trainers")


class GroupsConfig(_Section):
    ratio: str | list[float] = Field(
        "1:1:1", description="client share per capability group, e.g. '6:3:1' or [0.6, 0.3, 0.1]"
    )
    budgets: list[int | float | str] = Field(
        [0.5, 0.75, 1.0],
        description="budget per group: an integer number of layers, a fraction of L in (0, 1], or peak training "
        "memory above the frozen model such as '350MiB' (KiB/MiB/GiB binary, kB/MB/GB decimal); groups may mix them",
    )
    assignment: Literal["random", "index"] = Field(
        "random", description="random: seeded shuffle; index: by client id (reference)"
    )

    @field_validator("ratio", mode="before")
    @classmethod
    def _parse_ratio(cls, value: Any) -> list[float]:
        if isinstance(value, str):
            try:
                value = [float(part) for part in value.split(":")]
            except ValueError:
                raise ValueError(f"ratio {value!r} must look like '6:3:1'") from None
        if not isinstance(value, list) or not all(
            isinstance(part, (int, float)) and not isinstance(part, bool) for part in value
        ):
            raise ValueError(f"ratio {value!r} must look like '6:3:1' or [0.6, 0.3, 0.1]")
        if not value or any(not math.isfinite(part) or part <= 0 for part in value):
            raise ValueError(f"ratio {value!r} needs one positive, finite share per group, e.g. '6:3:1'")
        return [float(part) for part in value]

    @field_validator("budgets")
    @classmethod
    def _check_budgets(cls, value: list[int | float | str]) -> list[int | float | str]:
        for budget in value:
            if isinstance(budget, str):
                parse_memory(budget)
            if isinstance(budget, float) and not 0 < budget <= 1:
                raise ValueError(f"fractional budget {budget} must be in (0, 1]; use an integer for a layer count")
            if isinstance(budget, int) and budget < 1:
                raise ValueError(f"layer budget {budget} must be at least 1")
        return value

    @model_validator(mode="after")
    def _one_budget_per_group(self) -> GroupsConfig:
        if len(self.ratio) != len(self.budgets):
            raise ValueError(f"ratio has {len(self.ratio)} groups but budgets has {len(self.budgets)}")
        return self


class AllocationConfig(_Section):
    strategy: str = Field("fedhello", description="registered allocation strategy (see `fedhello strategies`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters")
    plugins: list[str] = Field(
        default_factory=list, description="modules to import first; they may register strategies"
    )
    min_trainers_per_layer: int = Field(
        1,
        ge=1,
        description="coverage rule: each round, a layer fewer than this many of the round's clients would train is "
        "trained by none, and those clients get layers at least this many train within their budget instead "
        "(1: off; layer-set strategies only, at most federation.clients_per_round)",
    )


class FisherConfig(_Section):
    proxy_size: int = Field(100, ge=0, description="server proxy samples, removed from the clients' data")
    batch_size: int = Field(16, ge=1, description="samples per vmap chunk of per-sample gradients")
    objective: Literal["log_likelihood", "logit"] = Field(
        "log_likelihood", description="differentiate log p(y|x) (Fisher) or the raw true-class logit (reference code)"
    )


class EvaluationConfig(_Section):
    every: int = Field(5, ge=1, description="evaluate every N rounds (and after the last round)")
    subset_size: int | None = Field(
        300,
        ge=1,
        description="fixed test subset used during training, for the learning curve (null: whole test set); the "
        "final accuracy comes from final_size",
    )
    final_size: int | None = Field(
        2000,
        ge=1,
        description="test samples evaluated after the last round: a seeded random subset (standard error about "
        "1.1 points at 60% accuracy for 2,000), or null for the whole test set",
    )
    batch_size: int = Field(64, ge=1, description="evaluation batch size")
    generate_samples: int = Field(
        32,
        ge=0,
        description="causal_lm: evaluated samples whose greedy answers are scored with ROUGE-L "
        "(0: none; the headline, the held-out loss, needs none)",
    )
    max_new_tokens: int = Field(48, ge=1, le=4096, description="causal_lm: longest greedy answer, in tokens")


class FlowerConfig(_Section):
    round_timeout_s: float = Field(
        600.0,
        gt=0,
        le=86400,
        description="Flower engines: a node that has not replied by then is dropped from the round",
    )
    connect_timeout_s: float = Field(
        120.0,
        gt=0,
        le=86400,
        description="Flower engines: how long the ServerApp waits for one node per client to connect",
    )


FaultKind = Literal["raise", "nan", "inf", "extra_tensor", "wrong_shape", "wrong_dtype", "oversize", "diverge"]


class FaultConfig(_Section):
    """Fault injection (tests, demos): chosen clients misbehave in one way in chosen rounds."""

    clients: list[int] = Field(min_length=1, description="client ids that misbehave")
    kind: FaultKind = Field(
        description="raise / nan / inf / extra_tensor / wrong_shape / wrong_dtype / oversize / diverge"
    )
    rounds: list[int] | None = Field(None, description="rounds in which they misbehave (null: every round)")


class CheckpointConfig(_Section):
    every: int = Field(
        1, ge=1, description="write a checkpoint (for `fedhello resume`) every N rounds and after the last"
    )


class OutputConfig(_Section):
    dir: str | None = Field(None, description="run directory (default: runs/<timestamp>-<name>-<strategy>)")
    tensorboard: bool = Field(True, description="write TensorBoard events")
    plots: bool = Field(True, description="write PNG plots")
    progress: bool = Field(True, description="show a progress bar")


MAX_NOISE_MULTIPLIER = 100.0  # noise std above 100 x clip_norm drowns any update; target_epsilon searches below it


class PrivacyConfig(_Section):
    """User-level central differential privacy (DP-FedAvg); see the README's Privacy section."""

    mode: Literal["off", "client", "server"] = Field(
        "off",
        description="off; client: each client clips its whole update before replying (the server never sees an "
        "unclipped update); server: the server clips each update before aggregating. Either way the server adds "
        "the noise",
    )
    clip_norm: float = Field(
        1.0,
        gt=0,
        description="L2 bound on a client's whole update (every tensor it sends); the start value when adaptive",
    )
    noise_multiplier: float | None = Field(
        None,
        gt=0,
        le=MAX_NOISE_MULTIPLIER,
        description="noise std per coordinate of each tensor's sum = noise_multiplier x clip_norm",
    )
    target_epsilon: float | None = Field(
        None,
        gt=0,
        description="instead of noise_multiplier: the smallest noise reaching this ε at delta after all rounds",
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="δ of the reported (ε, δ); must be below 1 / federation.num_clients"
    )
    adaptive: bool = Field(
        False, description="adaptive clipping (Andrew et al. 2021): clip_norm follows a quantile of update norms"
    )
    target_quantile: float = Field(0.5, ge=0, le=1, description="adaptive: the fraction of updates left unclipped")
    clip_learning_rate: float = Field(0.2, gt=0, description="adaptive: geometric step of the clip norm per round")
    clipped_count_stddev: float | None = Field(
        None, gt=0, description="adaptive: noise std of the unclipped-update count (null: clients_per_round / 20)"
    )

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        if not self.enabled:
            return self
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(f"mode {self.mode} needs exactly one of noise_multiplier and target_epsilon")
        return self


class ExperimentConfig(_Section):
    name: str = Field(
        "default",
        max_length=120,
        description="run name, used in the default run directory (letters, digits, _ . + -; no path separators)",
    )
    seed: int = Field(0, ge=0, description="the one seed every random stream derives from")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="autocast of training and evaluation: auto = bf16 on CUDA, fp32 on CPU (CPUs without native "
        "bf16, such as AVX2-only ones, run bf16 6-10x slower; see docs/benchmarks.md)",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    groups: GroupsConfig = Field(default_factory=GroupsConfig)
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    fisher: FisherConfig = Field(default_factory=FisherConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    faults: list[FaultConfig] = Field(
        default_factory=list, description="fault injection: clients that misbehave on purpose"
    )
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", value):
            raise ValueError(
                f"run name {value!r} may hold only letters, digits, _ . + - and must not start with '.' "
                "(it names a folder inside runs/)"
            )
        return value

    @model_validator(mode="after")
    def _faulty_clients_exist(self) -> ExperimentConfig:
        for index, fault in enumerate(self.faults):
            bad = [client for client in fault.clients if not 0 <= client < self.federation.num_clients]
            if bad:
                raise ValueError(f"faults[{index}]: client {bad[0]} is not in 0..{self.federation.num_clients - 1}")
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> ExperimentConfig:
        if self.privacy.enabled:
            from fedhello.privacy.validation import check_privacy_config

            check_privacy_config(self)
        return self


# --------------------------------------------------------------------------- loading

PRESET_PACKAGE = "fedhello.presets"
COMPARISON_PRESET_PACKAGE = "fedhello.presets.comparisons"


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1 base-60 numbers: `ratio: 6:3:1` stays a string, not 21781."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _NUMBER_TAGS[0],
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_YamlLoader.add_implicit_resolver(
    _NUMBER_TAGS[1],
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def preset_names(package: str = PRESET_PACKAGE) -> list[str]:
    """Shipped presets of one kind: experiment presets, or (COMPARISON_PRESET_PACKAGE) comparison grids."""
    files = importlib.resources.files(package)
    return sorted(entry.name[: -len(".yaml")] for entry in files.iterdir() if entry.name.endswith(".yaml"))


def preset_text(name: str, package: str = PRESET_PACKAGE) -> str:
    names = preset_names(package)
    if name not in names:
        kind = "comparison preset" if package == COMPARISON_PRESET_PACKAGE else "preset"
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(names)}")
    return (importlib.resources.files(package) / f"{name}.yaml").read_text()


def read_preset(name: str, package: str = PRESET_PACKAGE) -> dict[str, Any]:
    return parse_yaml(preset_text(name, package), f"preset {name}")


def preset_description(name: str, package: str = PRESET_PACKAGE) -> str:
    """The preset file's first comment line."""
    first = next(iter(preset_text(name, package).splitlines()), "")
    return first.lstrip("# ").strip() if first.startswith("#") else ""


def parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "params":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def merge_layer(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge one config layer; switching the strategy drops the previous strategy's params,
    which belong to that strategy only (unless the same layer gives new ones)."""
    merged = deep_merge(base, update)
    new_allocation = update.get("allocation")
    old_allocation = base.get("allocation")
    if not isinstance(old_allocation, dict):
        old_allocation = {}
    if isinstance(new_allocation, dict) and "strategy" in new_allocation and "params" not in new_allocation:
        previous = old_allocation.get("strategy", AllocationConfig.model_fields["strategy"].default)
        if new_allocation["strategy"] != previous:
            merged["allocation"] = {**merged["allocation"], "params": {}}
    return merged


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Map every field path ('federation.rounds') to itself and unique leaf names ('rounds') to their path."""
    paths: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for key, value in _leaf_paths(annotation, f"{path}.").items():
                paths.setdefault(key, []).append(value)
        else:
            paths.setdefault(path, []).append(path)
            if name != path:
                paths.setdefault(name, []).append(path)
    # A full path names itself even where it is also another field's leaf name ('name' vs 'model.name').
    return {key: key if key in values else "|".join(values) for key, values in paths.items()}


def parse_override(
    assignment: str, example: str = "section.field=value, e.g. federation.rounds=20"
) -> tuple[list[str], Any]:
    """Split one `key=value` override into the key's parts and the value parsed as YAML ('20', '[1, 2]', 'null')."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} must look like {example}")
    try:
        value = _load_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {key!r}: value {raw!r} is not valid YAML") from None
    return key.split("."), value


def nested(parts: list[str], value: Any) -> dict[str, Any]:
    """{'a': {'b': value}} from ['a', 'b']."""
    update: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        update = {part: update}
    return update


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one `key=value` override; short keys ('rounds') resolve to their unique full path."""
    parts, value = parse_override(assignment)
    key = ".".join(parts)
    if key.startswith("allocation.params."):
        section = data.get("allocation", {})
        params = section.get("params") if isinstance(section, dict) else None
        if not isinstance(section, dict) or not isinstance(params, (dict, type(None))):
            where, given = ("allocation", section) if not isinstance(section, dict) else ("allocation.params", params)
            raise ConfigError(f"config field '{where}': Input should be a mapping (got {given!r})")
        return merge_layer(data, {"allocation": {"params": {**(params or {}), parts[-1]: value}}})
    resolved = _leaf_paths(ExperimentConfig).get(key)
    if resolved is None:
        hint = did_you_mean(key, _leaf_paths(ExperimentConfig))
        raise ConfigError(f"override {key!r}: no such config field{hint} (see `fedhello config`)")
    if "|" in resolved:
        raise ConfigError(f"override {key!r} is ambiguous; write one of: {', '.join(resolved.split('|'))}")
    return merge_layer(data, nested(resolved.split("."), value))


def did_you_mean(given: str, valid) -> str:
    """'; did you mean 'x'?' for the closest valid name, or ''."""
    close = difflib.get_close_matches(given, [str(name) for name in valid], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = pydantic_location(error)
    if error["type"] == "extra_forbidden":
        parent = location.rsplit(".", 1)[0] if "." in location else ""
        section: type[BaseModel] = ExperimentConfig
        for part in parent.split(".") if parent else []:
            if part.isdigit():
                continue
            section = section.model_fields[part].annotation  # type: ignore[assignment]
            if get_origin(section) is list:
                section = get_args(section)[0]
        allowed = ", ".join(section.model_fields)
        suggestion = did_you_mean(location.rsplit(".", 1)[-1], section.model_fields)
        return f"unknown config field '{location}'{suggestion}; allowed here: {allowed}"
    message = pydantic_message(error)
    given = error.get("input")
    shown = "" if isinstance(given, (dict, list)) or given is None else f" (got {given!r})"
    where = f"config field '{location}'" if location else "config"
    return f"{where}: {message}{shown}"


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    """Validate the schema; the strategy and its params are checked where strategies are built
    (`fedhello.allocation.registry.strategy_from_config`)."""
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_error(exc)) from None
    return config


def load_config(
    preset: str | None = None, path: Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    data: dict[str, Any] = read_preset(preset) if preset else {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
        data = merge_layer(data, parse_yaml(text, f"config file {path}"))
    for assignment in overrides or []:
        data = apply_override(data, assignment)
    return build_config(data)


def config_to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " / ".join(str(value) for value in get_args(annotation))
    if get_origin(annotation) in (Union, UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)) if get_origin(annotation) is None else str(annotation)


def config_reference() -> str:
    """The config schema as a Markdown table: field path, type, default, meaning."""
    lines = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for section_name, section_field in ExperimentConfig.model_fields.items():
        annotation = section_field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields = [(f"{section_name}.{name}", field) for name, field in annotation.model_fields.items()]
        else:
            fields = [(section_name, section_field)]
        for path, field in fields:
            default = field.get_default(call_default_factory=True)
            kind = _type_name(field.annotation).replace("|", "\\|")
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{path}` | {kind} | `{json.dumps(default)}` | {meaning} |")
    return "\n".join(lines)
