"""Checkpoints and run status: what `fedhello resume` continues from.

A checkpoint lives in `<run>/checkpoint/`: `round-NNNNNN.safetensors` holds every tensor
(the server's global tensors, the strategy's tensors, each in-process client's own
tensors) and `state.json` holds the rest (the round, the strategy's values, which
clients hold state, the SHA-256 of the tensor file and of the config, and the length and
SHA-256 of every JSONL record file at that round). Both files are written atomically
(temporary file, fsync, rename); `state.json` is written last and is the commit point,
so a crash at any moment leaves the previous complete checkpoint in force. Random
streams are derived from (seed, stream, round), so no generator state is saved. No
pickle anywhere: safetensors and JSON only.

`status.json` says whether a run is `running`, `interrupted`, `failed` or `complete`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedhello.allocation.base import StrategyState
from fedhello.errors import DISK_FULL, ConfigError
from fedhello.federation.server import ServerState
from fedhello.outputs.run_writer import strict_json
from fedhello.tensor_state import TensorState

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
STATUS_FILE = "status.json"
FORMAT = "fedhello-checkpoint"
VERSION = 1
RECORD_FILES = ("metrics.jsonl", "clients.jsonl", "allocations.jsonl", "fisher.jsonl")


# --------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a crash leaves the old file and no temporary one
        raise
    _fsync_dir(path.parent)


def _overwrite_in_place(path: Path, data: bytes) -> None:
    """Rewrite a small existing file inside the blocks it already has: needs no free space."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def disk_errors_as_oserror() -> Iterator[None]:
    """Re-raise safetensors' Rust I/O error for a full disk as the `OSError` every Python write raises for it."""
    try:
        yield
    except SafetensorError as error:
        code = next((code for code in DISK_FULL if f"os error {code})" in str(error)), None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code)) from None


def dumps(value: Any) -> str:
    return json.dumps(strict_json(value), allow_nan=False)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- status


def write_status(run_dir: Path, status: str, round_number: int, rounds: int, detail: str | None = None) -> None:
    payload = {"status": status, "round": round_number, "rounds": rounds}
    if detail:
        payload["detail"] = detail
    data = (dumps(payload) + "\n").encode()
    try:
        atomic_write(run_dir / STATUS_FILE, data)
    except OSError as error:
        # On a full disk the status must still say how the run ended: status.json is far smaller than one block.
        if error.errno not in DISK_FULL or not (run_dir / STATUS_FILE).is_file():
            raise
        _overwrite_in_place(run_dir / STATUS_FILE, data)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's status, or None for a run directory written before status files existed."""
    path = run_dir / STATUS_FILE
    if not path.exists():
        return None
    try:
        status = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return {"status": "unknown", "round": 0, "rounds": 0}
    return status if isinstance(status, dict) else {"status": "unknown", "round": 0, "rounds": 0}


def is_complete(run_dir: Path) -> bool:
    status = read_status(run_dir)
    if status is None:  # older runs: complete once the final adapter and summary exist
        return (run_dir / "adapter.safetensors").exists() and (run_dir / "summary.md").exists()
    return status.get("status") == "complete"


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    round: int
    server: ServerState
    clients: dict[int, TensorState] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def _record_digests(run_dir: Path) -> dict[str, dict[str, Any]]:
    digests = {}
    for name in RECORD_FILES:
        path = run_dir / name
        if path.exists():
            data = path.read_bytes()
            digests[name] = {"bytes": len(data), "sha256": _sha256(data)}
    return digests


def save_checkpoint(
    run_dir: Path, config_text: str, strategy_name: str, server: ServerState, clients: dict[int, TensorState]
) -> Path:
    """Write the checkpoint of `server.round` (the record files must be flushed first)."""
    directory = run_dir / CHECKPOINT_DIR
    directory.mkdir(exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in server.global_tensors.items():
        tensors[f"global/{name}"] = tensor
    for name, tensor in server.strategy.tensors.items():
        tensors[f"strategy/{name}"] = tensor
    for client, state in clients.items():
        for name, tensor in state.items():
            tensors[f"client/{client}/{name}"] = tensor
    data = save_safetensors({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()})
    tensor_file = f"round-{server.round:06d}.safetensors"
    atomic_write(directory / tensor_file, data)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "round": server.round,
        "strategy": strategy_name,
        "config_sha256": _sha256(config_text.encode()),
        "tensors": tensor_file,
        "tensors_sha256": _sha256(data),
        "strategy_values": server.strategy.values,
        "privacy": server.privacy,
        "clients": sorted(clients),
        "records": _record_digests(run_dir),
    }
    atomic_write(directory / STATE_FILE, (json.dumps(manifest, allow_nan=False, indent=1) + "\n").encode())
    for old in directory.glob("round-*.safetensors"):
        if old.name != tensor_file:
            old.unlink(missing_ok=True)
    return directory / STATE_FILE


def _corrupt(run_dir: Path, what: str) -> ConfigError:
    return ConfigError(
        f"checkpoint in {run_dir / CHECKPOINT_DIR} is corrupted or foreign ({what}); it was not loaded. "
        f"Start a new run with `fedhello run --config {run_dir / 'config.yaml'}`"
    )


def _missing(run_dir: Path) -> ConfigError:
    """Why there is nothing to resume from, and what the user can do; resuming never restarts a run by itself."""
    directory = run_dir / CHECKPOINT_DIR
    if not directory.is_dir():
        what = f"{directory} is missing"
    else:
        uncommitted = sorted(path.name for path in directory.glob("round-*.safetensors"))
        what = f"{directory / STATE_FILE} is missing" + (
            f" ({', '.join(uncommitted)} without it is not a complete checkpoint)" if uncommitted else ""
        )
    return ConfigError(
        f"cannot resume {run_dir}: {what}, so no round can be continued exactly; nothing was changed. "
        f"Start it again with `fedhello run --config {run_dir / 'config.yaml'} --out NEW_DIR`"
    )


def load_checkpoint(run_dir: Path, config_text: str, strategy_name: str, expected: TensorState) -> Checkpoint:
    """The last complete checkpoint, checked against the run's config and model.

    `expected` holds the global tensors the model defines; the checkpoint's must have the
    same names, shapes and dtypes. A missing checkpoint, or anything that does not match,
    raises `ConfigError` before anything in the run directory is changed.
    """
    directory = run_dir / CHECKPOINT_DIR
    state_path = directory / STATE_FILE
    if not state_path.is_file():
        raise _missing(run_dir)
    try:
        state = json.loads(state_path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise _corrupt(run_dir, f"{STATE_FILE} is not JSON") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _corrupt(run_dir, f"{STATE_FILE} is not a fedhello checkpoint")
    if state.get("version") != VERSION:
        raise _corrupt(run_dir, f"format version {state.get('version')!r}, this fedhello reads {VERSION}")
    if state.get("config_sha256") != _sha256(config_text.encode()):
        raise _corrupt(run_dir, "it was written for a different config.yaml")
    if state.get("strategy") != strategy_name:
        raise _corrupt(run_dir, f"strategy {state.get('strategy')!r}, the config says {strategy_name!r}")
    tensor_name = str(state.get("tensors", ""))
    tensor_path = directory / tensor_name
    if "/" in tensor_name or not tensor_path.is_file():
        raise _corrupt(run_dir, f"tensor file {tensor_name!r} is missing")
    data = tensor_path.read_bytes()
    if _sha256(data) != state.get("tensors_sha256"):
        raise _corrupt(run_dir, f"{tensor_name} does not match its SHA-256")
    try:
        tensors = load_safetensors(data)
        round_number = int(state["round"])
        clients_with_state = [int(client) for client in state["clients"]]
        records = dict(state["records"])
    except (SafetensorError, KeyError, TypeError, ValueError) as error:
        raise _corrupt(run_dir, f"{type(error).__name__}") from None
    global_tensors = {name.removeprefix("global/"): t for name, t in tensors.items() if name.startswith("global/")}
    if set(global_tensors) != set(expected):
        raise _corrupt(run_dir, "its tensors are not this model's LoRA and head tensors")
    for name, tensor in global_tensors.items():
        if tensor.shape != expected[name].shape or tensor.dtype != expected[name].dtype:
            raise _corrupt(
                run_dir,
                f"{name} is {tuple(tensor.shape)} {tensor.dtype}, the model's is "
                f"{tuple(expected[name].shape)} {expected[name].dtype}",
            )
    strategy_tensors = {
        name.removeprefix("strategy/"): t for name, t in tensors.items() if name.startswith("strategy/")
    }
    clients: dict[int, TensorState] = {client: {} for client in clients_with_state}
    for name, tensor in tensors.items():
        if name.startswith("client/"):
            _, client, tensor_name_ = name.split("/", 2)
            clients.setdefault(int(client), {})[tensor_name_] = tensor
    server = ServerState(
        round_number,
        global_tensors,
        StrategyState(strategy_tensors, dict(state.get("strategy_values") or {})),
        dict(state.get("privacy") or {}),
    )
    return Checkpoint(round_number, server, clients, records)


def truncate_records(run_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    """Cut every record file back to its length at the checkpoint (dropping records written after it)."""
    for name in RECORD_FILES:
        path = run_dir / name
        entry = records.get(name)
        if entry is None:
            path.unlink(missing_ok=True)
            continue
        size = int(entry["bytes"])
        if not path.exists() or path.stat().st_size < size:
            raise ConfigError(
                f"{path} is shorter than at the last checkpoint; the run directory was changed, cannot resume"
            )
        with open(path, "r+b") as handle:
            prefix = handle.read(size)
            if _sha256(prefix) != entry["sha256"]:
                raise ConfigError(
                    f"{path} differs from the last checkpoint; the run directory was changed, cannot resume"
                )
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())
