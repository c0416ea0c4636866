"""The Flower ServerApp: the same `Server` and round loop as the in-process engine, over Flower's grid.

Under `flower-sim` it receives the experiment the launcher prepared; in a deployment
(its own process) it prepares it once, taking the launcher's measured cost model from
the run config instead of probing again. It asks every node which fedhello client it is
(and which capability group the node declares), then hands the `Server` and a
`GridEngine` to `fedhello.lifecycle.run_rounds`, which writes, checkpoints and resumes
the run directory exactly as for the in-process engine.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedhello.checkpoint import CHECKPOINT_DIR
from fedhello.config import ExperimentConfig, config_to_yaml
from fedhello.errors import EngineError
from fedhello.experiment import PreparedExperiment, prepare_experiment
from fedhello.federation.inprocess import mean_personal_result
from fedhello.federation.model_runtime import GlobalModelRuntime
from fedhello.federation.server import Server
from fedhello.flower import codec
from fedhello.flower.grid_engine import GridEngine
from fedhello.flower.run_settings import (
    costs_from,
    decode_config,
    encoded_config,
    engine_from,
    out_dir_from,
    resume_from,
)
from fedhello.lifecycle import run_rounds
from fedhello.records import EvalResult
from fedhello.resources.cost_model import CostModel
from fedhello.resources.probe import COST_FILE
from fedhello.run_directory import CONFIG_FILE, RunDirectory
from fedhello.tensor_state import TensorState

app = ServerApp()


class FlowerServerRuntime(GlobalModelRuntime):
    """Global evaluation on the ServerApp's model; personal models are evaluated on their nodes."""

    def __init__(
        self, base: GlobalModelRuntime, grid: Grid, nodes: dict[int, int], personal_models: bool, timeout_s: float
    ) -> None:
        super().__init__(**vars(base))
        self.grid, self.nodes, self.personal_models, self.timeout_s = grid, nodes, personal_models, timeout_s

    def evaluate(self, global_state: TensorState, indices: np.ndarray, split: str) -> EvalResult:
        if not self.personal_models:
            return super().evaluate(global_state, indices, split)
        online = set(self.grid.get_node_ids())
        messages = [
            Message(
                codec.encode_evaluation_request(client, indices), dst_node_id=node, message_type=MessageType.EVALUATE
            )
            for client, node in sorted(self.nodes.items())
            if node in online
        ]
        results = [
            result
            for reply in self.grid.send_and_receive(messages, timeout=self.timeout_s)
            if not reply.has_error() and (result := codec.decode_evaluation(reply.content)) is not None
        ]
        if not results:
            return super().evaluate(global_state, indices, split)
        return mean_personal_result(results, split)


def discover_clients(grid: Grid, num_clients: int, timeout_s: float, connect_timeout_s: float) -> dict[int, dict]:
    """Wait for one node per client (up to connect_timeout_s), then ask each which client it is."""
    deadline = time.monotonic() + connect_timeout_s
    while len(list(grid.get_node_ids())) < num_clients and time.monotonic() < deadline:
        time.sleep(1.0)
    messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in grid.get_node_ids()]
    sent = list(messages)
    replies = grid.send_and_receive(messages, timeout=timeout_s)
    node_of_message = {message.metadata.message_id: message.metadata.dst_node_id for message in sent}
    clients: dict[int, dict] = {}
    for reply in replies:
        if reply.has_error():
            continue
        identity = reply.content.config_records["identity"]
        client = int(cast(int, identity["client-id"]))
        if not 0 <= client < num_clients:
            raise EngineError(f"a node says it is client {client}; partition-id must be in 0..{num_clients - 1}")
        if client in clients:
            raise EngineError(f"two nodes say they are client {client}; give each SuperNode its own partition-id")
        clients[client] = {
            "node": node_of_message[reply.metadata.reply_to_message_id],
            "group": int(cast(int, identity["group"])),
        }
    if not clients:
        raise EngineError("no node answered: are the SuperNodes connected to this SuperLink?")
    return clients


# flower-sim runs the ServerApp in a thread of the launching process: the launcher hands it the
# experiment it prepared (and a stop flag for Ctrl-C) instead of the ServerApp preparing it again.
_HANDED_OVER: dict[Path, PreparedExperiment] = {}
STOP = threading.Event()


def hand_over(run_dir: Path, experiment: PreparedExperiment) -> None:
    _HANDED_OVER[run_dir.resolve()] = experiment


def claim_or_adopt(path: Path, config: ExperimentConfig) -> RunDirectory:
    """The run directory the launcher claimed for this config, or a new one (a manual `flwr run`)."""
    if (path / CONFIG_FILE).is_file() and not (path / CHECKPOINT_DIR).exists():
        run_dir = RunDirectory(path)
        if run_dir.config_text() != config_to_yaml(config):
            raise EngineError(f"{path} was claimed for a different config; choose another run directory")
        return run_dir
    return RunDirectory.claim(path, config)


def run_flower_server(
    grid: Grid, config: ExperimentConfig, path: Path, *, resume: bool, costs: CostModel | None, engine_name: str
) -> None:
    """Start (or continue) the run in `path` and drive every round over `grid`."""
    experiment = _HANDED_OVER.pop(path.resolve(), None)
    if resume:
        run_dir = RunDirectory.existing(path)
        experiment = experiment or prepare_experiment(config, cost_cache=run_dir / COST_FILE)
        experiment = experiment.with_groups(run_dir.recorded_groups())
    else:
        experiment = experiment or prepare_experiment(config, costs=costs)
        run_dir = claim_or_adopt(path, config)
    try:
        flower = config.flower
        clients = discover_clients(
            grid, config.federation.num_clients, flower.round_timeout_s, flower.connect_timeout_s
        )
        if not resume:
            declared = {client: entry["group"] for client, entry in clients.items() if entry["group"] >= 0}
            experiment = experiment.with_groups(experiment.groups.with_declared(declared))
        nodes = {client: entry["node"] for client, entry in clients.items()}
        runtime = FlowerServerRuntime(
            experiment.task.global_runtime(config),
            grid,
            nodes,
            experiment.strategy.personal_models,
            flower.round_timeout_s,
        )
        server = Server(config, experiment.strategy, experiment.layout(), runtime, experiment.groups)
        engine = GridEngine(grid, nodes, flower.round_timeout_s, engine_name, STOP)
    except BaseException as error:
        run_dir.set_status("failed", run_dir.checkpointed_round(), config.federation.rounds, f"{error}")
        raise
    run_rounds(experiment, run_dir, server, engine, resume=resume, stop=STOP)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = context.run_config
    run_flower_server(
        grid,
        decode_config(encoded_config(run_config)),
        out_dir_from(run_config),
        resume=resume_from(run_config),
        costs=costs_from(run_config),
        engine_name=engine_from(run_config),
    )
