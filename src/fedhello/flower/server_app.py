"""The Flower ServerApp: the same `Server` as the in-process engine, driven over Flower's grid.

It loads its own copy of the task (for evaluation and Fisher scoring), asks every node
which fedhello client it is, then runs the rounds: the wrapped strategy builds one
message per sampled client, the grid carries them, and the `Server` checks and
aggregates the replies. It writes the same run directory as `fedhello run`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedhello.allocation.registry import strategy_from_config
from fedhello.config import ExperimentConfig, config_to_yaml
from fedhello.errors import EngineError
from fedhello.federation.inprocess import log_outcome, mean_personal_result
from fedhello.federation.model_runtime import GlobalModelRuntime
from fedhello.federation.server import Server
from fedhello.flower import codec
from fedhello.flower.run_settings import decode_config, encoded_config, out_dir_from
from fedhello.flower.strategy import FedHeLLoStrategy
from fedhello.outputs import RunWriter
from fedhello.preparation import prepare_task
from fedhello.records import EvalResult
from fedhello.runner import claim_run_dir, finish_run, progress_reporter, write_run_info
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
    while len(grid.get_node_ids()) < num_clients and time.monotonic() < deadline:
        time.sleep(1.0)
    messages = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in grid.get_node_ids()]
    sent = list(messages)
    replies = grid.send_and_receive(messages, timeout=timeout_s)
    node_of_message = {message.metadata.message_id: message.metadata.dst_node_id for message in sent}
    clients: dict[int, dict] = {}
    for reply in replies:
        if reply.has_error():
            continue
        identity = reply.content["identity"]
        client = int(identity["client-id"])
        if not 0 <= client < num_clients:
            raise EngineError(f"a node says it is client {client}; partition-id must be in 0..{num_clients - 1}")
        if client in clients:
            raise EngineError(f"two nodes say they are client {client}; give each SuperNode its own partition-id")
        clients[client] = {"node": node_of_message[reply.metadata.reply_to_message_id], "group": int(identity["group"])}
    if not clients:
        raise EngineError("no node answered: are the SuperNodes connected to this SuperLink?")
    return clients


def run_flower_server(grid: Grid, config: ExperimentConfig, out_dir: Path) -> None:
    strategy = strategy_from_config(config)
    task = prepare_task(config, strategy_uses_costs=strategy.uses_costs)
    out_dir = claim_run_dir(out_dir)
    (out_dir / "config.yaml").write_text(config_to_yaml(config))
    flower = config.flower
    clients = discover_clients(grid, config.federation.num_clients, flower.round_timeout_s, flower.connect_timeout_s)
    nodes = {client: entry["node"] for client, entry in clients.items()}
    runtime = FlowerServerRuntime(
        task.global_runtime(config), grid, nodes, strategy.personal_models, flower.round_timeout_s
    )
    server = Server(config, strategy, task.layout(), runtime)
    for client, entry in clients.items():
        if entry["group"] >= 0:
            if entry["group"] >= len(server.group_budgets):
                raise EngineError(
                    f"client {client}'s node sets capability-group {entry['group']}; "
                    f"there are {len(server.group_budgets)} groups"
                )
            server.client_groups[client] = entry["group"]
    flower_strategy = FedHeLLoStrategy(server, nodes)
    progress, show = progress_reporter(config)
    with RunWriter(out_dir, tensorboard=config.output.tensorboard) as writer:
        write_run_info(out_dir, task, server, "flower")
        while not server.finished:
            round_number = server.round + 1
            messages = list(flower_strategy.configure_train(round_number, ArrayRecord(), ConfigRecord(), grid))
            replies = grid.send_and_receive(messages, timeout=flower.round_timeout_s) if messages else []
            flower_strategy.track(messages)
            flower_strategy.aggregate_train(round_number, replies)
            log_outcome(writer, flower_strategy.outcome)
            show(flower_strategy.outcome.record)
        progress.close()
    finish_run(out_dir, server.global_state, task.federated)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_flower_server(grid, decode_config(encoded_config(context.run_config)), out_dir_from(context.run_config))
