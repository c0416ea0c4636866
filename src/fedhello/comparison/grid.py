"""`fedhello compare`: run a grid of experiments from one base config, resumably.

Each cell (method, partition, capability ratio, seed) is one ordinary run in
`<out>/runs/<cell id>/`, with its `cell.json`. A cell whose run is marked complete
(`status.json`) is skipped; an interrupted one is resumed from its last checkpoint
(or started again if it never wrote one). A cell whose stored `config.yaml` differs
from the grid's is refused: its results would be reported under the wrong label.

With `workers` > 1 the cells run in that many processes, one torch thread each: on a
small CPU, independent single-threaded runs use the cores better than one run with
several threads (a small model's operators do not parallelise well), and every cell's
numbers are the same either way.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from fedhello.allocation.registry import strategy_from_config
from fedhello.comparison.endpoints import ENDPOINTS, comparison_endpoint
from fedhello.comparison.methods import BUILTIN_METHODS, CENTRALIZED, centralized_overrides, known_methods
from fedhello.config import (
    COMPARISON_PRESET_PACKAGE,
    ExperimentConfig,
    NoBooleanNumbers,
    build_config,
    deep_merge,
    merge_layer,
    nested,
    parse_override,
    parse_yaml,
    read_preset,
)
from fedhello.errors import ConfigError, pydantic_location, pydantic_message
from fedhello.output_paths import check_creatable
from fedhello.run_lock import LOCK_FILE, run_lock


class MethodSpec(NoBooleanNumbers):
    """A named method: a built-in name, or a name with its own config changes."""

    model_config = ConfigDict(extra="forbid")
    name: str
    config: dict[str, Any] = Field(default_factory=dict, description="config sections merged over the base")


class PartitionSpec(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid")
    name: str
    scheme: str = "pathological"
    classes_per_client: int | None = None
    min_per_client: int | None = None
    alpha: float | None = None


class ComparisonConfig(NoBooleanNumbers):
    model_config = ConfigDict(extra="forbid")
    name: str = "comparison"
    base_preset: str | None = Field(None, description="experiment preset the base starts from")
    base: dict[str, Any] = Field(default_factory=dict, description="experiment config sections over the preset")
    methods: list[str | MethodSpec] = Field(min_length=1)
    partitions: list[PartitionSpec] = Field(default_factory=lambda: [PartitionSpec(name="base")])
    ratios: list[str] = Field(default_factory=list, description="capability ratios (empty: the base config's)")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    target_accuracy: float | None = Field(None, gt=0, le=1, description="report rounds to reach this accuracy")
    reference_method: str | None = Field(
        None, description="report every method's mean paired difference (same seeds) to this method, with a 95% CI"
    )
    endpoint: str | None = Field(
        None,
        description="the metric paired differences, per-group table and plots use (null: the task's default, "
        "accuracy for classification, held-out loss for causal_lm)",
    )

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
        return endpoint

    @field_validator("methods")
    @classmethod
    def _known(cls, methods: list[str | MethodSpec]) -> list[str | MethodSpec]:
        for method in methods:
            if isinstance(method, str) and method not in known_methods():
                raise ValueError(f"unknown method {method!r}; built-in: {', '.join(known_methods())}")
        return methods

    @model_validator(mode="after")
    def _reference_is_a_method(self) -> ComparisonConfig:
        names = [m if isinstance(m, str) else m.name for m in self.methods]
        if self.reference_method is not None and self.reference_method not in names:
            raise ValueError(
                f"reference_method {self.reference_method!r} is not one of the methods ({', '.join(names)})"
            )
        return self


CELL_FILE = "cell.json"


@dataclass(frozen=True)
class Cell:
    method: str
    partition: str
    ratio: str | None
    seed: int

    @property
    def cell_id(self) -> str:
        ratio = f"__roc{self.ratio.replace(':', '-')}" if self.ratio else ""
        return f"{self.method}__{self.partition}{ratio}__seed{self.seed}"

    def write(self, run_dir: Path) -> None:
        (run_dir / CELL_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, run_dir: Path) -> Cell:
        """The cell a comparison run directory holds, from its `cell.json`, validated."""
        path = run_dir / CELL_FILE
        try:
            return _CELL_RECORD.validate_json(path.read_bytes())
        except ValidationError as exc:
            error = exc.errors()[0]
            location = pydantic_location(error)
            field = f" field '{location}':" if location else ""
            raise ConfigError(
                f"{path}:{field} {pydantic_message(error)}; not a fedhello comparison cell record"
            ) from None


_CELL_RECORD = TypeAdapter(Cell)


def load_comparison(preset: str | None, path: Path | None, overrides: list[str]) -> ComparisonConfig:
    data: dict[str, Any] = read_preset(preset, COMPARISON_PRESET_PACKAGE) if preset is not None else {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"comparison file {str(path)!r} cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"comparison file {str(path)!r} is not UTF-8 text (a YAML file is)") from None
        data = deep_merge(data, parse_yaml(text, f"comparison file {path}"))
    for assignment in overrides:
        parts, value = parse_override(assignment, "field=value, e.g. seeds=[0] or base.federation.rounds=4")
        data = deep_merge(data, nested(parts, value))
    if not data:
        if path is not None:
            raise ConfigError(
                f"comparison file {path} is empty; it needs at least `methods:` (see `fedhello presets` for examples)"
            )
        raise ConfigError("compare needs --preset or --config (see `fedhello presets`)")
    try:
        return ComparisonConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ConfigError(f"comparison field '{pydantic_location(error)}': {pydantic_message(error)}") from None


def cells(comparison: ComparisonConfig) -> list[Cell]:
    names = [method if isinstance(method, str) else method.name for method in comparison.methods]
    return [
        Cell(method, partition.name, ratio, seed)
        for partition in comparison.partitions
        for ratio in (comparison.ratios or (None,))
        for method in names
        for seed in comparison.seeds
    ]


def cell_config(comparison: ComparisonConfig, cell: Cell) -> ExperimentConfig:
    """The experiment config of one cell: preset, base, method, partition, ratio, seed."""
    data = read_preset(comparison.base_preset) if comparison.base_preset else {}
    data = merge_layer(data, comparison.base)
    method = next(m for m in comparison.methods if (m if isinstance(m, str) else m.name) == cell.method)
    if isinstance(method, MethodSpec):
        data = merge_layer(data, method.config)
    elif method == CENTRALIZED:
        data = merge_layer(data, centralized_overrides(data))
    else:
        data = merge_layer(data, BUILTIN_METHODS[method])
    partition = next(p for p in comparison.partitions if p.name == cell.partition)
    if partition.name != "base" and cell.method != CENTRALIZED:
        fields = partition.model_dump(exclude={"name"}, exclude_none=True)
        data = deep_merge(data, {"partition": fields})
    if cell.ratio is not None:
        data = deep_merge(data, {"groups": {"ratio": cell.ratio}})
    data = deep_merge(data, {"seed": cell.seed, "name": cell.cell_id})
    try:
        config = build_config(data)
        strategy_from_config(config)
        return config
    except ConfigError as error:
        raise ConfigError(f"comparison cell {cell.cell_id}: {error}") from None


def check_comparison_dir(out_dir: Path) -> None:
    """Refuse a --out that is a file, or a non-empty folder that is not a comparison directory."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"compare --out {out_dir} is a file, not a directory; choose another --out")
    if out_dir.is_dir():
        foreign = {entry.name for entry in out_dir.iterdir()} - {"comparison.yaml", "runs", LOCK_FILE}
        if not (out_dir / "comparison.yaml").is_file() and foreign:
            raise ConfigError(
                f"compare --out {out_dir} is not empty and not a comparison directory (no comparison.yaml); "
                "choose a new or empty --out"
            )
    check_creatable(out_dir, "compare --out")


def is_complete(run_dir: Path) -> bool:
    from fedhello.checkpoint import is_complete as run_is_complete

    return (run_dir / CELL_FILE).exists() and run_is_complete(run_dir)


def check_stored_config(run_dir: Path, config: ExperimentConfig, cell: Cell) -> None:
    """Refuse a cell directory that was run with another config than the grid's."""
    stored = run_dir / "config.yaml"

    def comparable(data: dict[str, Any]) -> dict[str, Any]:
        data["output"].pop("progress", None)  # --quiet does not change results
        return data

    if not stored.exists():
        return
    try:  # validated, so a field added later with its default compares equal to its absence
        recorded: dict[str, Any] | None = build_config(yaml.safe_load(stored.read_text())).model_dump(mode="json")
    except (ConfigError, yaml.YAMLError):
        recorded = None
    if recorded is None or comparable(recorded) != comparable(config.model_dump(mode="json")):
        raise ConfigError(
            f"comparison cell {cell.cell_id}: {run_dir} was run with a different config than this grid's; "
            "remove that directory to rerun it, or choose another --out"
        )


def _run_cell(config: ExperimentConfig, run_dir: Path, resume: bool) -> None:
    from fedhello.runner import resume_experiment, run_experiment

    if resume:
        resume_experiment(run_dir)
    else:
        run_experiment(config, run_dir)


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _run_in_workers(jobs: list[tuple[str, ExperimentConfig, Path, bool]], workers: int) -> None:
    """Run the cells in `workers` processes; the first failure cancels the cells not yet started."""
    context = multiprocessing.get_context("spawn")  # no forked torch state
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_torch_thread) as pool:
        futures = {pool.submit(_run_cell, config, run_dir, resume): label for label, config, run_dir, resume in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                error = future.exception()
                if error is not None:
                    pool.shutdown(cancel_futures=True)
                    raise error
                print(f"{futures[future]}: done", flush=True)


def run_comparison(comparison: ComparisonConfig, out_dir: Path, progress: bool = True, workers: int = 1) -> list[Path]:
    """Run every incomplete cell (in `workers` processes); return all cell run directories (in grid order)."""
    grid = cells(comparison)
    configs = [cell_config(comparison, cell) for cell in grid]  # reject bad cells before running any
    for task_kind in dict.fromkeys(config.model.task for config in configs):
        comparison_endpoint(task_kind, comparison.endpoint, comparison.target_accuracy)
    check_comparison_dir(out_dir)
    for cell, config in zip(grid, configs, strict=True):
        config.output.progress = progress and workers == 1  # bars of parallel cells would interleave
        check_stored_config(out_dir / "runs" / cell.cell_id, config, cell)
    with run_lock(out_dir):
        (out_dir / "comparison.yaml").write_text(yaml.safe_dump(comparison.model_dump(mode="json"), sort_keys=False))
        return _run_cells(grid, configs, out_dir, workers)


def _run_cells(grid: list[Cell], configs: list[ExperimentConfig], out_dir: Path, workers: int) -> list[Path]:
    run_dirs, jobs = [], []
    for index, (cell, config) in enumerate(zip(grid, configs, strict=True), start=1):
        run_dir = out_dir / "runs" / cell.cell_id
        run_dirs.append(run_dir)
        label = f"[{index}/{len(grid)}] {cell.cell_id}"
        if is_complete(run_dir):
            print(f"{label}: complete, skipped", flush=True)
            continue
        resume = (run_dir / "checkpoint" / "state.json").exists()
        if not resume:
            if run_dir.exists():
                # Nothing was checkpointed: the cell's records, if any, are rebuilt exactly by running it again.
                print(f"{label}: no checkpoint, restarting the cell", flush=True)
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            cell.write(run_dir)
        if workers == 1:
            print(f"{label}{': resuming' if resume else ''}", flush=True)
            _run_cell(config, run_dir, resume)
        else:
            jobs.append((label, config, run_dir, resume))
    if jobs:
        print(f"{len(jobs)} cells in {workers} worker processes (one torch thread each)", flush=True)
        _run_in_workers(jobs, workers)
    return run_dirs
