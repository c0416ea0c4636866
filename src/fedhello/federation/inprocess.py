"""The in-process engine: every `Client` in this process, over one shared frozen model.

`deliver` calls each instructed client directly. A client that raises is dropped from
the round with the reason in the records, as a failed node would be under Flower.
Faults configured under `faults` are injected here (`fedhello.federation.faults`). The
clients' own tensors (local heads, personal models) live here, so the checkpoint keeps
them and a resumed run continues exactly. The round loop itself is `fedhello.lifecycle`.
"""

from __future__ import annotations

import warnings

import numpy as np

from fedhello.config import ExperimentConfig
from fedhello.experiment import PreparedExperiment
from fedhello.federation.client import Client, ClientRuntime
from fedhello.federation.faults import InjectedFault, corrupt_reply, fault_for
from fedhello.federation.messages import ClientReply
from fedhello.federation.model_runtime import GlobalModelRuntime
from fedhello.federation.server import RoundOutcome, RoundPlan, Server, update_cap
from fedhello.lifecycle import log_outcome, play_round
from fedhello.records import AllocationRecord, ClientRecord, DroppedClient, EvalResult, FisherRecord, RoundRecord
from fedhello.tensor_state import TensorState


class MemoryLog:
    """Keeps every record in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.rounds: list[RoundRecord] = []
        self.clients: list[ClientRecord] = []
        self.allocations: list[AllocationRecord] = []
        self.fisher: list[FisherRecord] = []

    def log_round(self, record: RoundRecord) -> None:
        self.rounds.append(record)

    def log_clients(self, records: list[ClientRecord]) -> None:
        self.clients.extend(records)

    def log_allocation(self, record: AllocationRecord) -> None:
        self.allocations.append(record)

    def log_fisher(self, record: FisherRecord) -> None:
        self.fisher.append(record)


def mean_personal_result(results: list[EvalResult], split: str) -> EvalResult:
    """Mean of the clients' own-model metrics (each on the test samples of its classes)."""
    return EvalResult.from_json(
        {
            "split": f"{split}-personal",
            "loss": float(np.mean([r.loss for r in results])),
            "num_samples": int(sum(r.num_samples for r in results)),
            "num_clients": len(results),
            **{name: float(np.mean([r.metrics()[name] for r in results])) for name in results[0].metrics()},
        }
    )


class InProcessEngine:
    """Delivers each instruction by calling the client's `fit` in this process."""

    name = "inprocess"

    def __init__(self, config: ExperimentConfig, client_runtime: ClientRuntime) -> None:
        self.config = config
        self.client_runtime = client_runtime
        self.clients: dict[int, Client] = {}

    def deliver(self, plan: RoundPlan) -> tuple[list[ClientReply], list[DroppedClient]]:
        replies: list[ClientReply] = []
        failures: list[DroppedClient] = []
        for instruction in plan.instructions:
            client = self.clients.setdefault(instruction.client_id, Client(instruction.client_id))
            fault = fault_for(self.config.faults, plan.round, instruction.client_id)
            try:
                if fault == "raise":
                    raise InjectedFault("injected fault")
                reply = client.fit(instruction, self.client_runtime)
                if fault is not None:
                    reply = corrupt_reply(fault, reply, instruction, update_cap(self.config, instruction))
                replies.append(reply)
            except Exception as error:  # noqa: BLE001 - a failing client is dropped, the round goes on
                reason = f"training failed: {type(error).__name__}: {error}"
                warnings.warn(f"round {plan.round}, client {instruction.client_id}: {reason}", stacklevel=1)
                failures.append(DroppedClient(instruction.client_id, reason))
        return replies, failures

    def client_states(self) -> dict[int, TensorState]:
        return {client_id: client.state for client_id, client in self.clients.items() if client.state}

    def restore_client_states(self, states: dict[int, TensorState]) -> None:
        self.clients.update({client_id: Client(client_id, state) for client_id, state in states.items()})


class InProcessServerRuntime(GlobalModelRuntime):
    """Global evaluation on the shared model, or (personal-model strategies) each client's own."""

    def __init__(self, base: GlobalModelRuntime, engine: InProcessEngine, personal_models: bool) -> None:
        super().__init__(**vars(base))
        self.engine = engine
        self.personal_models = personal_models

    def evaluate(self, global_state: TensorState, indices: np.ndarray, split: str) -> EvalResult:
        if not self.personal_models:
            return super().evaluate(global_state, indices, split)
        results = [
            result
            for _, client in sorted(self.engine.clients.items())
            if (result := client.evaluate_personal(self.engine.client_runtime, indices)) is not None
        ]
        if not results:
            return super().evaluate(global_state, indices, split)
        return mean_personal_result(results, split)


def inprocess_server(experiment: PreparedExperiment) -> tuple[Server, InProcessEngine]:
    """The server and the in-process engine of one run over one loaded task."""
    config, task = experiment.config, experiment.task
    engine = InProcessEngine(config, task.client_runtime(config))
    server_runtime = InProcessServerRuntime(task.global_runtime(config), engine, experiment.strategy.personal_models)
    return Server(config, experiment.strategy, experiment.layout(), server_runtime, experiment.groups), engine


class InProcessFederation:
    """A server and its in-process clients stepped one round at a time, without a run directory.

    For tests, notebooks and benchmarks that look at a round's records in memory;
    `fedhello run` drives the same objects through `fedhello.lifecycle.run_rounds`.
    """

    def __init__(self, experiment: PreparedExperiment) -> None:
        self.server, self.engine = inprocess_server(experiment)
        self.log = MemoryLog()

    @property
    def clients(self) -> dict[int, Client]:
        return self.engine.clients

    def run_round(self) -> RoundOutcome:
        outcome = play_round(self.server, self.engine)
        log_outcome(self.log, outcome)
        return outcome
