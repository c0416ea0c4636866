"""`fedhello run --engine flower-sim`: the same run on Flower's simulation engine.

One Flower SuperNode per fedhello client (partition-id = client id), ClientApps in Ray
worker processes, the ServerApp in a thread of this process, which receives the
experiment this process already prepared. Ctrl-C here stops the ServerApp's wait at once
and leaves the run `interrupted` at its last checkpoint, as for the in-process engine.
"""

from __future__ import annotations

import os

import torch

from fedhello.errors import EngineError
from fedhello.experiment import PreparedExperiment
from fedhello.flower.run_settings import (
    CONFIG_ENV,
    COSTS_ENV,
    ENGINE_ENV,
    OUT_DIR_ENV,
    RESUME_ENV,
    SIMULATION,
    encode_config,
)
from fedhello.lifecycle import mark_interrupted
from fedhello.run_directory import SUMMARY_FILE, RunDirectory


def run_flower_simulation(
    experiment: PreparedExperiment, run_dir: RunDirectory, *, resume: bool, worker_cpus: int | None = None
) -> None:
    from flwr.simulation import run_simulation

    from fedhello.flower import server_app
    from fedhello.flower.client_app import app as client_app

    config = experiment.config
    server_app.hand_over(run_dir.path, experiment)
    server_app.STOP.clear()
    # The Python simulation API has no run config: both apps read these (Ray workers inherit them).
    os.environ.update(
        {
            CONFIG_ENV: encode_config(config),
            OUT_DIR_ENV: str(run_dir.path.resolve()),
            RESUME_ENV: str(resume).lower(),
            ENGINE_ENV: SIMULATION,
            COSTS_ENV: "",
        }
    )
    cpus = worker_cpus or os.cpu_count() or 1
    try:
        run_simulation(
            server_app=server_app.app,
            client_app=client_app,
            num_supernodes=config.federation.num_clients,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 1.0 / cpus if torch.cuda.is_available() else 0.0},
                "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": "ERROR"},
            },
        )
    except KeyboardInterrupt:
        server_app.STOP.set()
        raise mark_interrupted(run_dir, config.federation.rounds) from None
    if not (run_dir / SUMMARY_FILE).exists():
        raise EngineError(f"the Flower simulation did not finish its run in {run_dir.path}; see the log above")
