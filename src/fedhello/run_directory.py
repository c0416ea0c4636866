"""The run directory's one owner: its file names, claiming it, its config, info, status and records.

Every engine writes the same directory through this class, and every reader (reports,
comparisons, resume) reads it back through it, as typed records. Claiming refuses a
directory that is a file, unwritable, another run, or a non-empty foreign folder, so a
bad `--out` leaves nothing half-written.

    config.yaml        the config the run was started with (checkpoints are bound to it)
    run_info.json      resolved facts: layers, groups and budgets, device, engine
    status.json        running / interrupted / failed / complete (`fedhello.checkpoint`)
    partition.csv      each client's group, budget and class counts
    costs.json         the cost model, when one was measured
    *.jsonl            the records (`fedhello.records`), metrics.csv, tensorboard/
    checkpoint/        the last complete checkpoint
    adapter.safetensors, adapter/   the final adapter (also in PEFT's format)
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from fedhello.allocation.groups import CapabilityGroups
from fedhello.checkpoint import CHECKPOINT_DIR, STATE_FILE, read_status, write_status
from fedhello.config import ExperimentConfig, config_to_yaml, load_config
from fedhello.data.partition import partition_summary
from fedhello.errors import ConfigError
from fedhello.output_paths import check_creatable
from fedhello.outputs.run_writer import (
    ALLOCATIONS_JSONL,
    CLIENTS_JSONL,
    FISHER_JSONL,
    METRICS_JSONL,
    read_jsonl,
)
from fedhello.preparation import FederatedTask
from fedhello.records import AllocationRecord, ClientRecord, FisherRecord, JsonRecord, RoundRecord
from fedhello.resources.cost_model import CostModel
from fedhello.resources.probe import COST_FILE
from fedhello.run_lock import LOCK_FILE

CONFIG_FILE = "config.yaml"
INFO_FILE = "run_info.json"
PARTITION_FILE = "partition.csv"
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_DIR = "adapter"
SUMMARY_FILE = "summary.md"
# What may already be in a directory a run claims: a comparison cell's label, Flower's node homes, its lock.
PRE_EXISTING = {"cell.json", "flower", LOCK_FILE}

Record = TypeVar("Record", bound=JsonRecord)
# The fields every line of a record file holds (fields that may be None are left out of a line).
RECORD_KEYS: dict[type, tuple[str, ...]] = {
    RoundRecord: ("round", "clients"),
    ClientRecord: ("round", "client", "group", "layers"),
    AllocationRecord: ("round", "clients"),
    FisherRecord: ("round", "scores"),
}


@dataclass
class RunInfo(JsonRecord):
    """Facts resolved at the start of a run that its config alone does not say."""

    num_layers: int
    group_budgets: list[int]
    device: str
    engine: str
    group_memory_bytes: list[int | None] | None = None
    client_groups: list[int] | None = None


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.name}-{config.allocation.strategy}"


def check_run_dir(path: Path) -> None:
    """Refuse a run directory that is a file, unwritable, another run, or a non-empty foreign folder."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config field 'output.dir': {path} is a file, not a directory; choose another --out")
    if path.is_dir():
        entries = {entry.name for entry in path.iterdir()}
        if METRICS_JSONL in entries or CONFIG_FILE in entries:
            raise ConfigError(
                f"config field 'output.dir': {path} already holds a run; choose another --out "
                f"(or continue an interrupted one with `fedhello resume {path}`)"
            )
        if entries - PRE_EXISTING:
            raise ConfigError(
                f"config field 'output.dir': {path} is not empty and not a fedhello run directory; "
                "choose a new or empty --out"
            )
    check_creatable(path, "config field 'output.dir'")


class RunDirectory:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ claiming and the config

    @classmethod
    def claim(cls, path: Path, config: ExperimentConfig) -> RunDirectory:
        """Create the run directory with its config, marked as a running run at round 0."""
        check_run_dir(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"config field 'output.dir': cannot create {path} ({error.strerror})") from None
        run_dir = cls(path)
        write_status(path, "running", 0, config.federation.rounds)
        (path / CONFIG_FILE).write_text(config_to_yaml(config))
        return run_dir

    @classmethod
    def existing(cls, path: Path) -> RunDirectory:
        """A run directory that must already hold a run (resume, report)."""
        if not path.is_dir() or not (path / CONFIG_FILE).is_file():
            raise ConfigError(f"{path} is not a fedhello run directory (no {CONFIG_FILE})")
        return cls(path)

    def config_text(self) -> str:
        return (self.path / CONFIG_FILE).read_text()

    def config(self) -> ExperimentConfig:
        return load_config(path=self.path / CONFIG_FILE)

    # ------------------------------------------------------------------ status

    def status(self) -> dict | None:
        return read_status(self.path)

    def set_status(self, status: str, round_number: int, rounds: int, detail: str | None = None) -> None:
        write_status(self.path, status, round_number, rounds, detail)

    def checkpointed_round(self) -> int:
        """The round of the last complete checkpoint (0 if none was written)."""
        state = self.path / CHECKPOINT_DIR / STATE_FILE
        try:
            return int(json.loads(state.read_text())["round"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    # ------------------------------------------------------------------ what a run resolved at its start

    def write_start(self, task: FederatedTask, groups: CapabilityGroups, engine: str) -> None:
        """run_info.json, partition.csv and costs.json: what the run resolved before its first round."""
        self.write_partition(task, groups)
        if task.costs is not None:
            task.costs.save(self.path / COST_FILE)
        info = RunInfo(
            num_layers=task.federated.layer_map.num_layers,
            group_budgets=groups.budgets,
            device=str(task.federated.device),
            engine=engine,
            group_memory_bytes=groups.memory,
            client_groups=[int(group) for group in groups.client_groups],
        )
        (self.path / INFO_FILE).write_text(json.dumps(info.to_json()))

    def info(self) -> RunInfo:
        try:
            return RunInfo.from_json(json.loads((self.path / INFO_FILE).read_text()))
        except (ValueError, TypeError, UnicodeDecodeError):
            raise ConfigError(f"{self.path / INFO_FILE} is not a run's info record (changed or corrupted)") from None

    def recorded_groups(self) -> CapabilityGroups:
        """The capability groups the run started with (node-declared ones included): a resume keeps them."""
        info = self.info()
        if info.client_groups is None:
            raise ConfigError(f"{self.path / INFO_FILE} predates recorded client groups; this run cannot be resumed")
        return CapabilityGroups(
            np.asarray(info.client_groups),
            info.group_budgets,
            info.group_memory_bytes or [None] * len(info.group_budgets),
        )

    def has_info(self) -> bool:
        return (self.path / INFO_FILE).is_file()

    def costs(self) -> CostModel | None:
        path = self.path / COST_FILE
        return CostModel.load(path) if path.is_file() else None

    def write_partition(self, task: FederatedTask, groups: CapabilityGroups) -> None:
        summary = partition_summary(task.train.classes.numpy(), task.client_indices, len(task.label_names))
        with (self.path / PARTITION_FILE).open("w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["client", "group", "layer_budget", "num_samples", "num_classes", *task.label_names]
            writer.writerow(header)
            for row in summary:
                group = int(groups.client_groups[row["client"]])
                writer.writerow(
                    [
                        row["client"],
                        group,
                        groups.budgets[group],
                        row["num_samples"],
                        row["num_classes"],
                        *row["class_counts"],
                    ]
                )

    def partition(self) -> list[dict]:
        """partition.csv's rows: client, its capability group, number of samples and classes, class counts."""
        with (self.path / PARTITION_FILE).open(newline="") as handle:
            rows = list(csv.reader(handle))
        return [
            {
                "client": int(row[0]),
                "group": int(row[1]),
                "num_samples": int(row[3]),
                "num_classes": int(row[4]),
                "class_counts": [int(count) for count in row[5:]],
            }
            for row in rows[1:]
        ]

    # ------------------------------------------------------------------ records, read back typed

    def _records(self, name: str, kind: type[Record]) -> list[Record]:
        """The file's records; a line that is not one (a foreign or damaged file) is a one-line error."""
        path = self.path / name
        records = []
        for number, line in enumerate(read_jsonl(path), start=1):
            missing = [key for key in RECORD_KEYS[kind] if not isinstance(line, dict) or key not in line]
            if missing:
                raise ConfigError(
                    f"{path} line {number} is not a {kind.__name__} (it lacks {', '.join(missing)}); "
                    f"nothing was rewritten: restore the run's {name}"
                )
            records.append(kind.from_json(line))
        return records

    def rounds(self) -> list[RoundRecord]:
        return self._records(METRICS_JSONL, RoundRecord)

    def clients(self) -> list[ClientRecord]:
        return self._records(CLIENTS_JSONL, ClientRecord)

    def allocations(self) -> list[AllocationRecord]:
        return self._records(ALLOCATIONS_JSONL, AllocationRecord)

    def fisher(self) -> list[FisherRecord]:
        return self._records(FISHER_JSONL, FisherRecord)
