"""A Flower run whose server side dies continues with `fedhello resume` to the uninterrupted result.

The killed run is a `fedhello run --engine flower-sim` subprocess that SIGKILLs itself
(the ServerApp runs in its process) right after round 2's checkpoint; its Ray workers go
with it. `fedhello resume` relaunches the simulation from that checkpoint and must end
with the same records (time fields aside) and bit-identical final tensors as an
uninterrupted flower-sim run of the same config.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomli
import yaml

from fedhello import cli
from fedhello.checkpoint import read_status
from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.flower.run_settings import decode_config
from fedhello.runner import resume_experiment, run_experiment

RECORD_FILES = ("metrics.jsonl", "clients.jsonl", "allocations.jsonl", "fisher.jsonl")

KILL_AFTER_CHECKPOINT = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    at = int(sys.argv[1])
    import fedhello.checkpoint as checkpoint
    save = checkpoint.save_checkpoint
    def killing_save(run_dir, config_text, name, server, clients):
        result = save(run_dir, config_text, name, server, clients)
        if server.round == at:
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the whole server side: this process and its Ray workers
        return result
    checkpoint.save_checkpoint = killing_save
    from fedhello.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


def config_data(folder: Path, **training) -> dict:
    return {
        "model": {"name": str(folder), "task": "image_classification"},
        "data": {"dataset": "digits", "max_train_samples": 300, "max_test_samples": 60},
        "federation": {"num_clients": 3, "clients_per_round": 2, "rounds": 4},
        "partition": {"scheme": "iid"},
        "fisher": {"proxy_size": 24},
        "training": {"lr": 0.02, "max_local_steps": 2, **training},
        "allocation": {"strategy": "fedhello", "params": {"fim_start": 2, "fim_every": 2}},
        "evaluation": {"every": 2, "subset_size": None},
        "checkpoint": {"every": 1},
        "output": {"progress": False, "tensorboard": False, "plots": False},
    }


def records_without_times(path: Path) -> list[dict]:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.endswith("time_s")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return [strip(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # Ray start-up: three simulations of about 30 s each
def test_sigkilled_flower_simulation_resumes_to_the_uninterrupted_result(
    tiny_vit_folder, tmp_path, one_torch_thread
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config_data(tiny_vit_folder)))
    reference = run_experiment(load_config(path=config_path), tmp_path / "reference", engine="flower-sim").out_dir

    script = tmp_path / "killer.py"
    script.write_text(KILL_AFTER_CHECKPOINT)
    run = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            str(script),
            "2",
            "run",
            "--engine",
            "flower-sim",
            "--config",
            str(config_path),
            "--out",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # its own process group, which it kills whole
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert read_status(run)["status"] == "running"  # killed before it could say anything else
    assert json.loads((run / "checkpoint" / "state.json").read_text())["round"] == 2
    assert not (run / "adapter.safetensors").exists()

    assert cli.main(["resume", str(run)]) == 0
    for name in RECORD_FILES:
        assert records_without_times(run / name) == records_without_times(reference / name), name
    assert (run / "adapter.safetensors").read_bytes() == (reference / "adapter.safetensors").read_bytes()
    assert read_status(run) == {"status": "complete", "round": 4, "rounds": 4}
    assert "flower-sim" in (run / "summary.md").read_text()


def test_flower_runs_with_client_held_tensors_refuse_to_resume(tiny_vit_folder, tmp_path) -> None:
    """A local head lives in a node's Flower state, which ends with the Flower run: resume would not be exact."""
    config = load_config(path=_write(tmp_path, config_data(tiny_vit_folder, head="local")))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text((tmp_path / "config.yaml").read_text())
    (run / "run_info.json").write_text(
        '{"num_layers": 4, "group_budgets": [1, 2, 4], "device": "cpu", "engine": "flower-sim", '
        '"client_groups": [0, 1, 2]}'
    )
    assert config.training.head == "local"
    with pytest.raises(ConfigError, match="cannot be resumed exactly: its clients kept tensors \\(local heads\\)"):
        resume_experiment(run)


def test_flower_app_resume_writes_a_resuming_app_for_the_run(tiny_vit_folder, tmp_path) -> None:
    """A manual deployment continues its run with an app whose run config says resume, and the run's own config."""
    run = tmp_path / "run"
    run.mkdir()
    _write(tmp_path, config_data(tiny_vit_folder))
    (run / "config.yaml").write_text((tmp_path / "config.yaml").read_text())
    (run / "run_info.json").write_text(
        '{"num_layers": 4, "group_budgets": [1, 2, 4], "device": "cpu", "engine": "flower-deployment", '
        '"client_groups": [0, 1, 2]}'
    )
    app = tmp_path / "app"
    assert cli.main(["flower-app", "--resume", "--run-dir", str(run), "--app-dir", str(app)]) == 0
    app_config = tomli.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert app_config["resume"] == "true"
    assert decode_config(app_config["fedhello-config"]) == load_config(path=run / "config.yaml")
    with pytest.raises(ConfigError, match="manual Flower deployment"):
        resume_experiment(run)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
