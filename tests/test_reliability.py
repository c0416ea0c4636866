"""Reliability: exact resume after SIGKILL, faulty clients survived, bad input refused.

Runs use a tiny random-init ViT on the offline `digits` dataset (seconds each). A killed
run is a subprocess that SIGKILLs itself at a chosen point (mid-round, mid-checkpoint
write, right after a checkpoint) through a test-only wrapper; it is resumed in this
process and compared with an uninterrupted run: same records (all but *time_s fields)
and bit-identical tensors.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from fedhello import cli
from fedhello.checkpoint import CHECKPOINT_DIR, read_status
from fedhello.config import load_config
from fedhello.outputs.run_writer import read_jsonl
from fedhello.run_lock import LOCK_FILE, run_lock
from fedhello.runner import run_experiment

RECORD_FILES = ("metrics.jsonl", "clients.jsonl", "allocations.jsonl", "fisher.jsonl")


def tiny_config_data(folder: Path, **sections) -> dict:
    data = {
        "model": {"name": str(folder), "task": "image_classification"},
        "data": {"dataset": "digits", "max_train_samples": 300, "max_test_samples": 60},
        "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 4},
        "partition": {"scheme": "iid"},
        "fisher": {"proxy_size": 24},
        "training": {"lr": 0.02, "max_local_steps": 2, "head": "local"},
        "allocation": {"strategy": "fedhello", "params": {"fim_start": 2, "fim_every": 2}},
        "evaluation": {"every": 2, "subset_size": None},
        "checkpoint": {"every": 2},
        "output": {"progress": False, "tensorboard": False, "plots": False},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return data


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def strict_records(path: Path) -> list[dict]:
    """Parse a JSONL file refusing bare NaN/Infinity; drop wall-time fields."""

    def refuse(token: str):
        raise AssertionError(f"{path.name} holds a bare {token}")

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("time_s")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(json.loads(line, parse_constant=refuse)) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference(tiny_vit_folder, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted run of the tiny config (one torch thread, like the killed subprocesses)."""
    base = tmp_path_factory.mktemp("reference")
    config_path = write_config(base / "config.yaml", tiny_config_data(tiny_vit_folder))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_experiment(load_config(path=config_path), base / "run")
    finally:
        torch.set_num_threads(previous)
    return config_path, base / "run"


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    point, at = sys.argv[1], int(sys.argv[2])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    import fedhello.checkpoint as checkpoint

    from fedhello.federation.client import Client

    if point == "mid-round":  # the second client of round `at` never returns
        fit, calls = Client.fit, []
        def killing_fit(self, instruction, runtime):
            if instruction.round == at:
                calls.append(1)
                if len(calls) == 2:
                    die()
            return fit(self, instruction, runtime)
        Client.fit = killing_fit
    elif point == "mid-checkpoint":  # dies with half of round `at`'s state.json in the temporary file
        write = checkpoint.atomic_write
        def killing_write(path, data):
            if path.name == "state.json" and f'"round": {at},'.encode() in data:
                tmp = path.with_name("." + path.name + ".tmp")
                tmp.write_bytes(data[: len(data) // 2])
                die()
            return write(path, data)
        checkpoint.atomic_write = killing_write
    elif point == "hold":  # the first client of round `at` signals through a marker file, then hangs
        fit = Client.fit
        def holding_fit(self, instruction, runtime):
            if instruction.round == at:
                open(os.environ["HOLD_MARKER"], "w").close()
                signal.pause()
            return fit(self, instruction, runtime)
        Client.fit = holding_fit
    elif point == "after-checkpoint":  # dies right after round `at`'s checkpoint is complete
        save = checkpoint.save_checkpoint
        def killing_save(run_dir, config_text, name, server, clients):
            result = save(run_dir, config_text, name, server, clients)
            if server.round == at:
                die()
            return result
        checkpoint.save_checkpoint = killing_save
    from fedhello.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def assert_same_run(run: Path, reference_run: Path) -> None:
    for name in RECORD_FILES:
        assert strict_records(run / name) == strict_records(reference_run / name), name
    assert (run / "adapter.safetensors").read_bytes() == (reference_run / "adapter.safetensors").read_bytes()
    assert read_status(run)["status"] == "complete"


@pytest.mark.parametrize(
    ("point", "at"),
    [
        # Each kill point is a subprocess run plus its resume; the fast tier keeps one of them.
        pytest.param("mid-round", 4, marks=pytest.mark.slow),
        pytest.param("mid-checkpoint", 4, marks=pytest.mark.slow),
        ("after-checkpoint", 2),
    ],
)
def test_sigkilled_run_resumes_to_the_uninterrupted_result(reference, tmp_path, point, at, one_torch_thread) -> None:
    config_path, reference_run = reference
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(script), point, str(at), "run", "--config", str(config_path), "--out", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -9, result.stderr[-2000:]
    assert read_status(run)["status"] == "running"
    assert not (run / "adapter.safetensors").exists()
    if point == "mid-round":  # round 3's records were written after the round-2 checkpoint: resume cuts them
        assert len(read_jsonl(run / "metrics.jsonl")) == 3
    assert cli.main(["report", str(run)]) == 0
    assert "INCOMPLETE" in (run / "summary.md").read_text()

    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)


def interrupt_in_round(monkeypatch, round_number: int) -> Callable[[], None]:
    """Make local training raise KeyboardInterrupt (Ctrl-C) in round `round_number`; returns what undoes it."""
    from fedhello.federation.client import Client

    fit = Client.fit

    def interrupted_fit(self, instruction, runtime):
        if instruction.round == round_number:
            raise KeyboardInterrupt
        return fit(self, instruction, runtime)

    monkeypatch.setattr(Client, "fit", interrupted_fit)
    return lambda: monkeypatch.setattr(Client, "fit", fit)


def test_ctrl_c_stops_cleanly_with_a_resume_line(reference, tmp_path, monkeypatch, capsys, one_torch_thread) -> None:
    config_path, reference_run = reference
    undo = interrupt_in_round(monkeypatch, 3)
    run = tmp_path / "run"
    assert cli.main(["run", "--config", str(config_path), "--out", str(run)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"fedhello resume {run}" in err[0] and "round 2 of 4" in err[0], err
    assert read_status(run)["status"] == "interrupted"
    undo()
    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)


# --------------------------------------------------------------------------- one writer per run directory


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else "the process ended"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_a_second_writer_is_refused_until_the_first_is_killed(reference, tmp_path, capsys, one_torch_thread) -> None:
    config_path, reference_run = reference
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run, marker = tmp_path / "run", tmp_path / "holding"
    first = subprocess.Popen(
        [sys.executable, str(script), "hold", "3", "run", "--config", str(config_path), "--out", str(run)],
        env={**os.environ, "HOLD_MARKER": str(marker)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(marker, first)
        before = _snapshot(run)
        for argv, expected in (
            (["resume", str(run)], f"being written by another fedhello process (PID {first.pid})"),
            (["run", "--config", str(config_path), "--out", str(run)], "already holds a run"),
        ):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and expected in err[0], err
        assert _snapshot(run) == before
    finally:
        first.kill()
        first.wait(timeout=60)
    assert first.returncode == -9
    # The kernel dropped the dead writer's lock: a new writer takes it and finishes the run exactly.
    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)


HOLDER = textwrap.dedent(
    """
    import pathlib, signal, sys
    from fedhello.run_lock import run_lock
    with run_lock(pathlib.Path(sys.argv[1])):
        print("held", flush=True)
        signal.pause()
    """
)


def test_two_compares_on_one_grid_the_second_is_refused(tmp_path, capsys) -> None:
    grid = tmp_path / "grid"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            str(grid),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        comparison = tmp_path / "grid.yaml"
        comparison.write_text(yaml.safe_dump({"name": "t", "methods": ["gd-uniform"], "seeds": [0]}))
        assert cli.main(["compare", "--config", str(comparison), "--out", str(grid), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"(PID {holder.pid})" in err[0], err
        assert sorted(path.name for path in grid.iterdir()) == [LOCK_FILE]
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with run_lock(grid):  # SIGKILL released it
        pass


# --------------------------------------------------------------------------- a full disk


class FullDisk:
    """`open` for files under `root` whose writes fail with ENOSPC once `budget` bytes were written (None: never).

    Only Python-level writes count; rewriting a file inside the blocks it already has (os.pwrite) needs no free
    space on a real disk either, and is not intercepted.
    """

    def __init__(self, root: Path, budget: int | None) -> None:
        self.root, self.budget, self.written = root.resolve(), budget, 0
        self.real_open = builtins.open

    def open(self, file, mode="r", *args, **kwargs):
        handle = self.real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        if writing and isinstance(file, (str, Path)) and Path(file).resolve().is_relative_to(self.root):
            return _CountingFile(handle, self)
        return handle

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(builtins, "open", self.open)
        monkeypatch.setattr(io, "open", self.open)


class _CountingFile:
    def __init__(self, handle, disk: FullDisk) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data):
        room = None if self._disk.budget is None else self._disk.budget - self._disk.written
        if room is not None and len(data) > room:
            self._handle.write(data[: max(room, 0)])
            self._handle.flush()
            self._disk.written += max(room, 0)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.written += len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


@pytest.fixture(scope="module")
def bytes_written(reference, tmp_path_factory) -> int:
    """What one uninterrupted run of the tiny config writes through Python files."""
    config_path, _ = reference
    run = tmp_path_factory.mktemp("counted") / "run"
    disk = FullDisk(run.parent, None)
    with pytest.MonkeyPatch.context() as patch:
        disk.install(patch)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert cli.main(["run", "--config", str(config_path), "--out", str(run)]) == 0
        finally:
            torch.set_num_threads(previous)
    return disk.written


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_a_full_disk_fails_the_run_cleanly_and_resume_finishes_it(
    reference, bytes_written, tmp_path, monkeypatch, capsys, fraction, one_torch_thread
) -> None:
    config_path, reference_run = reference
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        FullDisk(tmp_path, int(fraction * bytes_written)).install(patch)
        code = cli.main(["run", "--config", str(config_path), "--out", str(run)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and f"fedhello resume {run}" in lines[0], lines
    assert "Traceback" not in captured.err + captured.out
    status = read_status(run)
    state = json.loads((run / CHECKPOINT_DIR / "state.json").read_text())
    assert status["status"] == "failed" and status["round"] == state["round"]
    tensors = (run / CHECKPOINT_DIR / state["tensors"]).read_bytes()
    assert hashlib.sha256(tensors).hexdigest() == state["tensors_sha256"]  # the last checkpoint is intact
    assert not [path.name for path in run.rglob("*.tmp")]
    assert not (run / "adapter.safetensors").exists()

    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)


def test_a_full_disk_while_saving_the_final_adapter_leaves_the_run_resumable(
    reference, tmp_path, monkeypatch, capsys, one_torch_thread
) -> None:
    """safetensors reports a full disk as its own Rust I/O error; the run still ends `failed` with one line."""
    config_path, reference_run = reference
    run = tmp_path / "run"

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with monkeypatch.context() as patch:
        patch.setattr("fedhello.lifecycle.save_peft_adapter", disk_full)
        assert cli.main(["run", "--config", str(config_path), "--out", str(run)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and f"fedhello resume {run}" in lines[0], lines
    assert read_status(run) == {
        "status": "failed",
        "round": 4,
        "rounds": 4,
        "detail": "OSError: [Errno 28] No space left on device",
    }
    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)


FAULT_KINDS = ["raise", "nan", "inf", "extra_tensor", "wrong_shape", "wrong_dtype", "oversize", "diverge"]
REASONS = {
    "raise": "training failed: InjectedFault",
    "nan": "non-finite values",
    "inf": "non-finite values",
    "extra_tensor": "not allocated",
    "wrong_shape": "expected",
    "wrong_dtype": "torch.float64",
    "oversize": "over the cap",
    "diverge": "training diverged",
}


def test_faulty_clients_are_excluded_and_an_empty_round_keeps_the_model(
    tiny_vit_folder, tmp_path, one_torch_thread
) -> None:
    # 8 clients, all sampled: round 1 clients 0-3 and round 2 clients 4-7 misbehave (50%, each
    # kind once), round 3 every client fails (an empty round), round 4 is clean.
    faults = [{"clients": [index], "kind": kind, "rounds": [1 + index // 4]} for index, kind in enumerate(FAULT_KINDS)]
    faults.append({"clients": list(range(8)), "kind": "raise", "rounds": [3]})
    data = tiny_config_data(
        tiny_vit_folder,
        federation={"num_clients": 8, "clients_per_round": 8, "rounds": 4},
        training={"head": "aggregate"},
        faults=faults,
        checkpoint={"every": 1},
    )
    data["allocation"] = {"strategy": "gd", "params": {}}
    run = tmp_path / "run"
    with pytest.warns(UserWarning):
        outcome = run_experiment(load_config(path=write_config(tmp_path / "c.yaml", data)), run)
    rounds = strict_records(run / "metrics.jsonl")
    clients = strict_records(run / "clients.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    for round_number, faulty in ((1, range(4)), (2, range(4, 8))):
        dropped = {d["client"]: d["reason"] for d in rounds[round_number - 1]["dropped"]}
        assert set(dropped) == set(faulty)
        for client in faulty:
            assert REASONS[FAULT_KINDS[client]] in dropped[client], dropped[client]
        statuses = {c["client"]: c for c in clients if c["round"] == round_number}
        assert {c for c, r in statuses.items() if r["status"] == "dropped"} == set(faulty)
        assert all(REASONS[FAULT_KINDS[c]] in statuses[c]["reason"] for c in faulty)
        assert rounds[round_number - 1].get("train_loss") is not None
    assert rounds[2]["status"] == "empty" and rounds[2].get("train_loss") is None and len(rounds[2]["dropped"]) == 8
    assert "status" not in rounds[3]
    assert all(torch.isfinite(t).all() for t in outcome.global_state.values())
    assert all(torch.isfinite(t).all() for t in load_file(run / "adapter.safetensors").values())


def test_empty_round_leaves_the_global_model_unchanged(tiny_vit_folder, tmp_path, one_torch_thread) -> None:
    data = tiny_config_data(
        tiny_vit_folder,
        federation={"rounds": 2},
        training={"head": "aggregate"},
        checkpoint={"every": 1},
        faults=[{"clients": list(range(6)), "kind": "nan", "rounds": [2]}],
    )
    run = tmp_path / "run"
    run_experiment(load_config(path=write_config(tmp_path / "c.yaml", data)), run)
    after_round_2 = load_file(run / "adapter.safetensors")
    assert strict_records(run / "metrics.jsonl")[1]["status"] == "empty"
    # The same run stopped after round 1 has the same model.
    data["federation"]["rounds"] = 1
    data["faults"] = []
    run_experiment(load_config(path=write_config(tmp_path / "c1.yaml", data)), tmp_path / "run1")
    after_round_1 = load_file(tmp_path / "run1" / "adapter.safetensors")
    assert all(torch.equal(after_round_1[name], after_round_2[name]) for name in after_round_1)


# --------------------------------------------------------------------------- bad input


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's bytes and mtime, but the lock file's: taking the lock records the taker's PID in it."""
    return {
        str(path.relative_to(root)): (path.stat().st_mtime_ns, path.read_bytes() if path.is_file() else b"")
        for path in sorted(root.rglob("*"))
        if path.name != LOCK_FILE
    }


def _corrupt_tensors(run: Path) -> None:
    (tensors,) = (run / "checkpoint").glob("round-*.safetensors")
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))


def _truncate_tensors(run: Path) -> None:
    (tensors,) = (run / "checkpoint").glob("round-*.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:100])


def _foreign_state(run: Path) -> None:
    path = run / "checkpoint" / "state.json"
    state = json.loads(path.read_text())
    state["config_sha256"] = "0" * 64
    path.write_text(json.dumps(state))


def _garbage_state(run: Path) -> None:
    (run / "checkpoint" / "state.json").write_bytes(b"\x00\x01garbage")


def _not_a_checkpoint(run: Path) -> None:
    (run / "checkpoint" / "state.json").write_text('{"format": "something-else"}')


def _truncated_metrics(run: Path) -> None:
    path = run / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:-40])


def _binary_metrics(run: Path) -> None:
    (run / "metrics.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")


def _interrupted(run: Path) -> None:
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "status": "interrupted"}))


def _no_checkpoint(run: Path) -> None:
    _interrupted(run)
    shutil.rmtree(run / "checkpoint")


def _no_checkpoint_state(run: Path) -> None:
    _interrupted(run)
    (run / "checkpoint" / "state.json").unlink()


def _empty_metrics(run: Path) -> None:
    (run / "metrics.jsonl").write_text("")


def _foreign_metrics(run: Path) -> None:
    (run / "metrics.jsonl").write_text('{"foo": 1}\n{"bar": [2]}\n')


def _run_args(*overrides: str) -> list[str]:
    return ["run", "--config", "{config}", "--out", "{out}", *(part for item in overrides for part in ("--set", item))]


def _flower_app_args(*extra: str, app: str = "{out}-app") -> list[str]:
    return ["flower-app", "--config", "{config}", "--run-dir", "{out}", "--app-dir", app, *extra]


# (id, command builder args, expected fragments). In argv: {config} = a good tiny config file,
# {out} = a fresh output path, {run} = a copy of a finished run, {file} = an existing file,
# {foreign} = a non-empty folder that is not a run; `prepare` changes the run copy first.
BAD_INPUTS = [
    (
        "missing-model-folder",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "model.name=/no/such/model"],
        None,
        ["'model.name'", "/no/such/model", "does not exist"],
    ),
    (
        "unknown-hub-id-offline",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "model.name=no-such-org/no-model-xyz"],
        None,
        ["'model.name'", "cannot load 'no-such-org/no-model-xyz'"],
    ),
    (
        "target-modules-match-nothing",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "lora.target_modules=[nomatch]"],
        None,
        ["'lora.target_modules'", "nomatch", "match no module"],
    ),
    (
        "ratio-nan",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "groups.ratio=1:nan:1"],
        None,
        ["'groups.ratio'", "positive"],
    ),
    (
        "lora-alpha-inf",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "lora.alpha=.inf"],
        None,
        ["'lora.alpha'", "finite"],
    ),
    (
        "lr-nan",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "training.lr=.nan"],
        None,
        ["'training.lr'", "finite"],
    ),
    (
        "partition-empty-client",
        [
            "run",
            "--config",
            "{config}",
            "--out",
            "{out}",
            "--set",
            "partition.scheme=pathological",
            "--set",
            "classes_per_client=1",
            "--set",
            "min_per_client=0",
            "--set",
            "num_clients=50",
        ],
        None,
        ["'partition'", "no training samples"],
    ),
    ("out-is-a-file", ["run", "--config", "{config}", "--out", "{file}"], None, ["'output.dir'", "is a file"]),
    (
        "out-under-a-file",
        ["run", "--config", "{config}", "--out", "{file}/sub"],
        None,
        ["'output.dir'", "not a writable directory"],
    ),
    (
        "out-foreign-folder",
        ["run", "--config", "{config}", "--out", "{foreign}"],
        None,
        ["'output.dir'", "not a fedhello run directory"],
    ),
    (
        "out-existing-run",
        ["run", "--config", "{config}", "--out", "{run}"],
        None,
        ["already holds a run", "fedhello resume"],
    ),
    ("name-escapes-runs", ["run", "--config", "{config}", "--set", "name=../../escape"], None, ["'name'", "runs/"]),
    ("name-with-separator", ["run", "--config", "{config}", "--set", "name=a/b"], None, ["'name'", "letters, digits"]),
    (
        "misspelled-section-set",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "federaton.rounds=3"],
        None,
        ["no such config field", "did you mean 'federation.rounds'"],
    ),
    (
        "misspelled-field-set",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "training.lrr=0.1"],
        None,
        ["did you mean 'training.lr'"],
    ),
    (
        "fault-client-out-of-range",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "faults=[{clients: [9], kind: nan}]"],
        None,
        ["faults[0]", "client 9"],
    ),
    (
        "fault-unknown-kind",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "faults=[{clients: [0], kind: melt}]"],
        None,
        ["'faults.0.kind'", "'melt'"],
    ),
    (
        "fault-misspelled-key",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "faults=[{clients: [0], kind: nan, round: [1]}]"],
        None,
        ["'faults.0.round'", "did you mean 'rounds'"],
    ),
    (
        "checkpoint-every-zero",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "checkpoint.every=0"],
        None,
        ["'checkpoint.every'"],
    ),
    (
        "update-cap-zero",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "max_update_bytes=0"],
        None,
        ["'federation.max_update_bytes'"],
    ),
    (
        "unknown-dataset",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "data.dataset=nope"],
        None,
        ["nope"],
    ),
    (
        "unknown-strategy",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "strategy=magic"],
        None,
        ["'magic'"],
    ),
    (
        "unknown-pattern",
        [
            "run",
            "--config",
            "{config}",
            "--out",
            "{out}",
            "--set",
            "strategy=gd",
            "--set",
            "allocation.params.pattern=zigzag",
        ],
        None,
        ["'allocation.params.pattern'"],
    ),
    (
        "plugin-missing",
        ["run", "--config", "{config}", "--out", "{out}", "--set", "allocation.plugins=[no_such_plugin_xyz]"],
        None,
        ["'allocation.plugins'", "no_such_plugin_xyz"],
    ),
    ("config-is-a-folder", ["run", "--config", "{foreign}", "--out", "{out}"], None, ["cannot be read"]),
    ("report-truncated-jsonl", ["report", "{run}"], _truncated_metrics, ["metrics.jsonl line", "not a JSON record"]),
    ("report-binary-jsonl", ["report", "{run}"], _binary_metrics, ["metrics.jsonl", "not UTF-8"]),
    ("report-not-a-run", ["report", "{foreign}"], None, ["neither a run directory"]),
    ("resume-not-a-run", ["resume", "{foreign}"], None, ["not a fedhello run directory"]),
    ("resume-complete-run", ["resume", "{run}"], None, ["complete run", "nothing to resume"]),
    (
        "resume-corrupted-tensors",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _corrupt_tensors(run)),
        ["corrupted or foreign", "SHA-256", "not loaded"],
    ),
    (
        "resume-truncated-tensors",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _truncate_tensors(run)),
        ["corrupted or foreign"],
    ),
    (
        "resume-foreign-checkpoint",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _foreign_state(run)),
        ["corrupted or foreign", "different config.yaml"],
    ),
    (
        "resume-garbage-state",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _garbage_state(run)),
        ["corrupted or foreign", "not JSON"],
    ),
    (
        "resume-not-a-checkpoint",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _not_a_checkpoint(run)),
        ["corrupted or foreign", "not a fedhello checkpoint"],
    ),
    (
        "resume-changed-records",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), _truncated_metrics(run)),
        ["metrics.jsonl", "cannot resume"],
    ),
    # Round 3 (issue 18). 1. Silent wrong results.
    ("resume-no-checkpoint-dir", ["resume", "{run}"], _no_checkpoint, ["cannot resume", "checkpoint is missing"]),
    (
        "resume-no-checkpoint-state",
        ["resume", "{run}"],
        _no_checkpoint_state,
        ["cannot resume", "state.json is missing", "round-000004.safetensors", "nothing was changed"],
    ),
    (
        "memory-budgets-rank-strategy",
        _run_args('groups.budgets=["30MiB","100MiB","200MiB"]', "allocation.strategy=hetlora"),
        None,
        ["'allocation.strategy'", "'hetlora'", "'groups.budgets'", "30MiB"],
    ),
    (
        "memory-budgets-full",
        _run_args('groups.budgets=["30MiB","100MiB","200MiB"]', "allocation.strategy=full"),
        None,
        ["'allocation.strategy'", "'groups.budgets'"],
    ),
    ("report-no-partition", ["report", "{run}"], lambda run: (run / "partition.csv").unlink(), ["partition.csv"]),
    (
        "report-garbage-run-info",
        ["report", "{run}"],
        lambda run: (run / "run_info.json").write_text("not json"),
        ["run_info.json", "corrupted"],
    ),
    (
        "resume-garbage-run-info",
        ["resume", "{run}"],
        lambda run: (_interrupted(run), (run / "run_info.json").write_text("not json")),
        ["run_info.json", "corrupted"],
    ),
    ("report-empty-metrics", ["report", "{run}"], _empty_metrics, ["metrics.jsonl", "no round records"]),
    ("report-foreign-metrics", ["report", "{run}"], _foreign_metrics, ["metrics.jsonl line 1", "not a RoundRecord"]),
    (
        "report-foreign-clients",
        ["report", "{run}"],
        lambda run: (run / "clients.jsonl").write_text('{"foo": 1}\n'),
        ["clients.jsonl line 1", "not a ClientRecord", "lacks round, client, group, layers"],
    ),
    (
        "target-modules-unknown-name",
        _run_args("lora.target_modules=[query,nonexistent]"),
        None,
        ["'lora.target_modules'", "nonexistent", "match no module"],
    ),
    ("rounds-true", _run_args("federation.rounds=true"), None, ["'federation.rounds'", "boolean"]),
    ("seed-yes", _run_args("seed=yes"), None, ["'seed'", "boolean"]),
    ("budgets-boolean", _run_args("groups.budgets=[1,true,2]"), None, ["'groups.budgets'", "boolean"]),
    (
        "strategy-param-boolean",
        _run_args("allocation.params.fim_start=true"),
        None,
        ["'allocation.params.fim_start'", "boolean"],
    ),
    (
        "compare-seeds-boolean",
        ["compare", "--config", "{grid}", "--set", "seeds=[yes]"],
        None,
        ["'seeds'", "boolean"],
    ),
    ("lora-alpha-overflowing", _run_args("lora.alpha=1e30"), None, ["'lora.alpha'", "at most"]),
    (
        "flower-app-foreign-folder",
        _flower_app_args(app="{foreign}"),
        None,
        ["--app-dir", "not a fedhello Flower app"],
    ),
    ("flower-app-dir-is-a-file", _flower_app_args(app="{file}"), None, ["--app-dir", "is a file"]),
    ("flower-app-dir-in-proc", _flower_app_args(app="/proc/fedhello-x"), None, ["--app-dir", "cannot create"]),
    (
        "flower-app-run-dir-is-a-file",
        ["flower-app", "--config", "{config}", "--run-dir", "{file}", "--app-dir", "{out}-app"],
        None,
        ["--run-dir", "is a file"],
    ),
    (
        "flower-app-run-dir-holds-a-run",
        ["flower-app", "--config", "{config}", "--run-dir", "{run}", "--app-dir", "{out}-app"],
        None,
        ["already holds a run"],
    ),
    (
        "flower-app-model-missing",
        _flower_app_args("--set", "model.name=/no/such/model"),
        None,
        ["'model.name'", "does not exist"],
    ),
    (
        "flower-app-target-modules-unknown",
        _flower_app_args("--set", "lora.target_modules=[nonexistent]"),
        None,
        ["'lora.target_modules'", "nonexistent"],
    ),
    # 2. Crashes.
    (
        "partition-class-without-holder",
        _run_args("partition.scheme=pathological", "num_clients=3", "clients_per_round=2", "classes_per_client=2"),
        None,
        ["'partition.classes_per_client'", "belong to no client", ">= 4"],
    ),
    (
        "more-clients-than-samples",
        _run_args("num_clients=5000", "clients_per_round=2"),
        None,
        ["'federation.num_clients'", "exceeds"],
    ),
    ("target-modules-empty", _run_args("lora.target_modules=[]"), None, ["'lora.target_modules'", "at least one"]),
    ("compare-binary-config", ["compare", "--config", "{binary}"], None, ["comparison file", "not UTF-8"]),
    ("compare-out-is-a-file", ["compare", "--config", "{grid}", "--out", "{file}"], None, ["--out", "is a file"]),
    (
        "compare-out-foreign-folder",
        ["compare", "--config", "{grid}", "--out", "{foreign}"],
        None,
        ["--out", "not a comparison directory"],
    ),
    ("run-out-in-proc", ["run", "--config", "{config}", "--out", "/proc/fedhello-x"], None, ["cannot"]),
    # 4. Messages that mislead.
    ("model-name-is-a-file", _run_args("model.name={file}"), None, ["'model.name'", "is a file", "folder"]),
    ("compare-empty-config", ["compare", "--config", "{empty}"], None, ["is empty", "methods"]),
    ("budget-under-a-byte", _run_args('groups.budgets=["0.5B",1,2]'), None, ["'groups.budgets'", "less than one byte"]),
    ("ratio-list-nan", _run_args("groups.ratio=[1,.nan,1]"), None, ["'groups.ratio'", "finite"]),
]


@pytest.mark.parametrize(
    ("argv", "prepare", "expected"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    reference, tmp_path, monkeypatch, capsys, argv, prepare, expected, one_torch_thread
) -> None:
    config_path, reference_run = reference
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import: without this an unknown hub id waits out network retries.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = work / "finished-run"
    shutil.copytree(reference_run, run)
    if prepare is not None:
        prepare(run)
    (work / "a-file.txt").write_text("not a directory\n")
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes\n")
    (foreign / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    (work / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (work / "empty.yaml").write_text("")
    grid = {"name": "t", "base": yaml.safe_load(config_path.read_text()), "methods": ["gd-uniform"], "seeds": [0]}
    (work / "grid.yaml").write_text(yaml.safe_dump(grid))
    places = {
        "config": str(config_path),
        "out": str(work / "new-run"),
        "run": str(run),
        "file": str(work / "a-file.txt"),
        "foreign": str(foreign),
        "binary": str(work / "binary.yaml"),
        "empty": str(work / "empty.yaml"),
        "grid": str(work / "grid.yaml"),
    }
    before = _snapshot(work)

    def fill(arg: str) -> str:
        for key, value in places.items():
            arg = arg.replace("{" + key + "}", value)
        return arg

    code = cli.main([fill(arg) for arg in argv])
    captured = capsys.readouterr()

    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("fedhello: error: ")
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(work) == before, "the bad input wrote or changed files"


def test_bad_input_table_is_large_enough() -> None:
    assert len(BAD_INPUTS) >= 60


# --------------------------------------------------------------------------- compare


def one_cell_grid(folder: Path, tmp_path: Path, rounds: int) -> tuple[dict, Path, Path, Path]:
    """A one-cell comparison of the tiny config, run once: (comparison, its file, grid dir, cell dir)."""
    base = tiny_config_data(folder, federation={"rounds": rounds}, checkpoint={"every": 1})
    comparison = {"name": "t", "base": base, "methods": ["gd-uniform"], "seeds": [0]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(comparison))
    out = tmp_path / "grid"
    assert cli.main(["compare", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    (cell,) = (out / "runs").iterdir()
    return comparison, path, out, cell


def test_compare_refuses_a_cell_run_with_another_config(tiny_vit_folder, tmp_path, capsys, one_torch_thread) -> None:
    comparison, path, out, cell = one_cell_grid(tiny_vit_folder, tmp_path, rounds=1)
    assert read_status(cell)["status"] == "complete"
    stamp = (cell / "adapter.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    # Same grid again: the complete cell is skipped.
    assert cli.main(["compare", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert "complete, skipped" in capsys.readouterr().out
    assert (cell / "adapter.safetensors").stat().st_mtime_ns == stamp
    # A cell stored before a field with a default existed (here data.labels) is the same config.
    stored = yaml.safe_load((cell / "config.yaml").read_text())
    del stored["data"]["labels"]
    (cell / "config.yaml").write_text(yaml.safe_dump(stored))
    assert cli.main(["compare", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert "complete, skipped" in capsys.readouterr().out
    # A changed base config under the same cell names is refused, nothing rerun.
    comparison["base"]["training"]["lr"] = 0.05
    path.write_text(yaml.safe_dump(comparison))
    assert cli.main(["compare", "--config", str(path), "--out", str(out), "--quiet"]) == 2
    assert "different config" in capsys.readouterr().err
    assert (cell / "adapter.safetensors").stat().st_mtime_ns == stamp


def test_compare_never_counts_an_interrupted_cell_as_done(tiny_vit_folder, tmp_path, one_torch_thread) -> None:
    _, path, out, cell = one_cell_grid(tiny_vit_folder, tmp_path, rounds=2)
    final = (cell / "adapter.safetensors").read_bytes()
    records = strict_records(cell / "metrics.jsonl")
    # Pretend the process died during round 2: status running, round 2's records and the adapter gone.
    shutil.rmtree(cell / CHECKPOINT_DIR)
    (cell / "adapter.safetensors").unlink()
    _interrupted(cell)
    assert cli.main(["report", str(out)]) == 2  # the only cell is incomplete: nothing to report as done
    assert cli.main(["compare", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert (cell / "adapter.safetensors").read_bytes() == final
    assert strict_records(cell / "metrics.jsonl") == records
