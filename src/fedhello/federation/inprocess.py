"""The in-process engine: one `Server` and every `Client` in this process, over one shared model.

The loop is the whole engine: the server plans a round, each instructed client trains,
the server checks and aggregates the replies. A client that raises is dropped from the
round with the reason in the records, as a failed node would be under Flower. Faults
configured under `faults` are injected here (`fedhello.federation.faults`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedhello.allocation.base import AllocationStrategy
from fedhello.config import ExperimentConfig
from fedhello.federation.client import Client, ClientRuntime
from fedhello.federation.faults import InjectedFault, corrupt_reply, fault_for
from fedhello.federation.messages import ClientReply
from fedhello.federation.model_runtime import GlobalModelRuntime
from fedhello.federation.server import RoundOutcome, Server
from fedhello.preparation import FederatedTask
from fedhello.records import AllocationRecord, ClientRecord, DroppedClient, EvalResult, FisherRecord, RoundRecord
from fedhello.tensor_state import TensorState


class RunLog(Protocol):
    def log_round(self, record: RoundRecord) -> None: ...
    def log_clients(self, records: list[ClientRecord]) -> None: ...
    def log_allocation(self, record: AllocationRecord) -> None: ...
    def log_fisher(self, record: FisherRecord) -> None: ...


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


def log_outcome(log: RunLog, outcome: RoundOutcome) -> None:
    """Every engine reports a round the same way."""
    log.log_allocation(outcome.allocation)
    if outcome.fisher is not None:
        log.log_fisher(outcome.fisher)
    log.log_clients(outcome.clients)
    log.log_round(outcome.record)


class InProcessServerRuntime(GlobalModelRuntime):
    """Global evaluation on the shared model, or (personal-model strategies) each client's own."""

    def __init__(
        self, base: GlobalModelRuntime, clients: dict[int, Client], client_runtime: ClientRuntime, personal_models: bool
    ) -> None:
        super().__init__(**vars(base))
        self.clients = clients
        self.client_runtime = client_runtime
        self.personal_models = personal_models

    def evaluate(self, global_state: TensorState, indices: np.ndarray, split: str) -> EvalResult:
        if not self.personal_models:
            return super().evaluate(global_state, indices, split)
        results = [
            result
            for _, client in sorted(self.clients.items())
            if (result := client.evaluate_personal(self.client_runtime, indices)) is not None
        ]
        if not results:
            return super().evaluate(global_state, indices, split)
        return mean_personal_result(results, split)


def mean_personal_result(results: list[EvalResult], split: str) -> EvalResult:
    """Mean of the clients' own-model metrics (each on the test samples of its classes)."""
    return EvalResult(
        split=f"{split}-personal",
        loss=float(np.mean([r.loss for r in results])),
        num_samples=int(sum(r.num_samples for r in results)),
        num_clients=len(results),
        **{name: float(np.mean([r.metrics()[name] for r in results])) for name in results[0].metrics()},
    )


@dataclass
class InProcessEngine:
    server: Server
    client_runtime: ClientRuntime
    clients: dict[int, Client]
    log: RunLog
    on_round: Callable[[RoundRecord], None] | None = None

    def run_round(self) -> RoundOutcome:
        plan = self.server.plan_round()
        replies: list[ClientReply] = []
        failures: list[DroppedClient] = []
        for instruction in plan.instructions:
            client = self.clients.setdefault(instruction.client_id, Client(instruction.client_id))
            fault = fault_for(self.server.config.faults, plan.round, instruction.client_id)
            try:
                if fault == "raise":
                    raise InjectedFault("injected fault")
                reply = client.fit(instruction, self.client_runtime)
                if fault is not None:
                    reply = corrupt_reply(fault, reply, instruction, self.server.update_cap(instruction))
                replies.append(reply)
            except Exception as error:  # noqa: BLE001 - a failing client is dropped, the round goes on
                reason = f"training failed: {type(error).__name__}: {error}"
                warnings.warn(f"round {plan.round}, client {instruction.client_id}: {reason}", stacklevel=1)
                failures.append(DroppedClient(instruction.client_id, reason))
        outcome = self.server.finish_round(plan, replies, failures)
        log_outcome(self.log, outcome)
        if self.on_round is not None:
            self.on_round(outcome.record)
        return outcome

    def run(self) -> RoundRecord | None:
        """Run the remaining rounds; return the last round's record."""
        record = None
        while not self.server.finished:
            record = self.run_round().record
        return record


def build_inprocess_engine(
    config: ExperimentConfig,
    task: FederatedTask,
    strategy: AllocationStrategy,
    log: RunLog | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> InProcessEngine:
    """Server, clients and their shared runtime for one run over one loaded task."""
    clients: dict[int, Client] = {}
    client_runtime = task.client_runtime(config)
    server_runtime = InProcessServerRuntime(
        task.global_runtime(config), clients, client_runtime, strategy.personal_models
    )
    server = Server(config, strategy, task.layout(), server_runtime)
    return InProcessEngine(server, client_runtime, clients, log if log is not None else MemoryLog(), on_round)
