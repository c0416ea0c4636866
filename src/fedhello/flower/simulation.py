"""`fedhello run --engine flower-sim`: the same run on Flower's simulation engine.

One Flower SuperNode per fedhello client (partition-id = client id), ClientApps in Ray
worker processes, the ServerApp in this process; it writes the usual run directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fedhello.config import ExperimentConfig
from fedhello.errors import EngineError
from fedhello.flower.run_settings import CONFIG_ENV, OUT_DIR_ENV, encode_config


def run_flower_simulation(config: ExperimentConfig, out_dir: Path, worker_cpus: int | None = None) -> None:
    from flwr.simulation import run_simulation

    from fedhello.flower.client_app import app as client_app
    from fedhello.flower.server_app import app as server_app

    # The Python simulation API has no run config: both apps read these (Ray workers inherit them).
    os.environ[CONFIG_ENV] = encode_config(config)
    os.environ[OUT_DIR_ENV] = str(out_dir.resolve())
    cpus = worker_cpus or os.cpu_count() or 1
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=config.federation.num_clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 1.0 / cpus if torch.cuda.is_available() else 0.0},
            "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": "ERROR"},
        },
    )
    if not (out_dir / "summary.md").exists():
        raise EngineError(f"the Flower simulation did not finish its run in {out_dir}; see the log above")
