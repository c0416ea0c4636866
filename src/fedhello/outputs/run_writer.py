"""Run-directory writer: JSONL logs, ``metrics.csv`` and TensorBoard scalars.

It takes the typed records of `fedhello.records` and writes their JSON form; readers get
the same dicts back with `read_jsonl` (or the records with each record's `from_json`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from fedhello.errors import ConfigError
from fedhello.records import METRIC_LABELS, AllocationRecord, ClientRecord, FisherRecord, JsonRecord, RoundRecord

METRICS_JSONL = "metrics.jsonl"
CLIENTS_JSONL = "clients.jsonl"
ALLOCATIONS_JSONL = "allocations.jsonl"
FISHER_JSONL = "fisher.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"

METRICS_CSV_COLUMNS: tuple[str, ...] = (
    "round",
    "train_loss",
    "eval_split",
    "eval_accuracy",
    "eval_macro_f1",
    "eval_micro_f1",
    "eval_rouge_l",
    "eval_perplexity",
    "eval_loss",
    "num_clients",
    "clients",
    "dropped",
    "bytes_down",
    "bytes_up",
    "eval_time_s",
    "wall_time_s",
    "epsilon",
)

# TensorBoard tag -> key of the round record.
_ROUND_SCALARS: dict[str, str] = {
    "train/loss": "train_loss",
    "comm/bytes_down": "bytes_down",
    "comm/bytes_up": "bytes_up",
    "time/round_s": "wall_time_s",
    "time/eval_s": "eval_time_s",
}
_EVAL_SCALARS: tuple[str, ...] = (*METRIC_LABELS, "loss")


def strict_json(value: Any) -> Any:
    """`value` with every NaN/Inf float replaced by None: metrics files are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return strict_json(value.tolist())
    return value


def _json_default(obj: Any) -> Any:
    """Serialise numpy/torch scalars and arrays, which the simulator may hand over."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def read_jsonl(path: Path | str) -> list[dict]:
    """Read a JSON-lines file into a list of dicts; ``[]`` if the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    raise ConfigError(
                        f"{path} line {number} is not a JSON record (truncated or overwritten?); "
                        "if the run was interrupted, `fedhello resume` cuts it back to the last checkpoint"
                    )
                records.append(record)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text (binary or corrupted); it is not a fedhello record file") from None
    return records


def metrics_csv_row(record: dict) -> dict[str, Any]:
    """Flatten one round record into a ``metrics.csv`` row (``""`` for missing values)."""
    ev = record.get("eval") or {}
    clients = record.get("clients") or []
    row = {
        "round": record.get("round"),
        "train_loss": record.get("train_loss"),
        "eval_split": ev.get("split"),
        **{f"eval_{name}": ev.get(name) for name in METRIC_LABELS},
        "eval_loss": ev.get("loss"),
        "num_clients": len(clients),
        "clients": " ".join(str(c) for c in clients),
        "dropped": " ".join(str(d["client"]) for d in record.get("dropped") or []),
        "bytes_down": record.get("bytes_down"),
        "bytes_up": record.get("bytes_up"),
        "eval_time_s": record.get("eval_time_s"),
        "wall_time_s": record.get("wall_time_s"),
        "epsilon": (record.get("privacy") or {}).get("epsilon"),
    }
    return {k: "" if v is None else v for k, v in row.items()}


class RunWriter:
    """Writes everything a run logs into ``out_dir``.

    JSONL files are created on first write and truncated if they already exist, so a
    run directory always describes a single run (and agrees with ``metrics.csv``). With
    `resume_after`, the files (already cut back to that round's checkpoint) are appended
    to instead, and TensorBoard drops its events after that round. Every line is strict
    JSON: NaN and infinities are written as null.
    """

    def __init__(self, out_dir: Path | str, *, tensorboard: bool = True, resume_after: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rounds: list[dict] = read_jsonl(self.out_dir / METRICS_JSONL) if resume_after is not None else []
        self._mode = "a" if resume_after is not None else "w"
        self._files: dict[str, IO[str]] = {}
        self._tb = None
        self._closed = False
        if tensorboard:
            # Imported lazily: pulling in torch's TensorBoard writer is slow.
            from torch.utils.tensorboard import SummaryWriter

            purge = {"purge_step": resume_after + 1} if resume_after is not None else {}
            self._tb = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_DIR), **purge)

    def _append(self, name: str, record: dict | JsonRecord) -> None:
        if self._closed:
            raise RuntimeError("RunWriter is closed")
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = (self.out_dir / name).open(self._mode, encoding="utf-8")
        if isinstance(record, JsonRecord):
            record = record.to_json()
        f.write(json.dumps(strict_json(record), default=_json_default, allow_nan=False) + "\n")
        f.flush()

    def sync(self) -> None:
        """Flush every record file to disk (before a checkpoint records their lengths)."""
        for f in self._files.values():
            f.flush()
            os.fsync(f.fileno())

    def log_round(self, record: RoundRecord | dict) -> None:
        """Log one round record to ``metrics.jsonl``, TensorBoard and memory."""
        if isinstance(record, RoundRecord):
            record = record.to_json()
        self._append(METRICS_JSONL, record)
        self.rounds.append(record)
        if self._tb is None:
            return
        step = int(record["round"])
        for tag, key in _ROUND_SCALARS.items():
            if record.get(key) is not None:
                self._tb.add_scalar(tag, float(record[key]), step)
        if record.get("privacy"):
            self._tb.add_scalar("privacy/epsilon", float(record["privacy"]["epsilon"]), step)
        ev = record.get("eval") or {}
        for key in _EVAL_SCALARS:
            if ev.get(key) is not None:
                self._tb.add_scalar(f"eval/{key}", float(ev[key]), step)
        self._tb.flush()

    def log_clients(self, records: list[ClientRecord] | list[dict]) -> None:
        """Log per-client records of one round to ``clients.jsonl`` (one line each)."""
        for record in records:
            self._append(CLIENTS_JSONL, record)

    def log_allocation(self, record: AllocationRecord | dict) -> None:
        """Log one round's layer allocation to ``allocations.jsonl``."""
        self._append(ALLOCATIONS_JSONL, record)

    def log_fisher(self, record: FisherRecord | dict) -> None:
        """Log one Fisher refresh (scores, tiers, weights) to ``fisher.jsonl``."""
        self._append(FISHER_JSONL, record)

    def write_metrics_csv(self) -> Path:
        """Write ``metrics.csv`` from the round records logged so far."""
        path = self.out_dir / METRICS_CSV
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=METRICS_CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(metrics_csv_row(r) for r in self.rounds)
        return path

    def close(self, *, write_csv: bool = True) -> None:
        """Write ``metrics.csv`` (unless told not to) and close all files; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if write_csv:
            self.write_metrics_csv()
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # After a write failed (a full disk) metrics.csv keeps its last complete version; it is derived from
        # metrics.jsonl and rewritten when the run continues.
        self.close(write_csv=not isinstance(exc, OSError))
