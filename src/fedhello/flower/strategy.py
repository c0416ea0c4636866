"""A Flower `Strategy` that wraps fedhello's `Server`.

Flower's built-in strategies send every node the same arrays and aggregate replies with
one key set. Here every sampled client gets its own message (its layer set, rank and
tensors), replies carry only what was trained, and aggregation is the `Server`'s
per-tensor rule. Sampling and allocation stay seeded by fedhello; a failed, unreachable
or late node is dropped from the round with the reason in the round record.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedhello.federation.server import RoundOutcome, RoundPlan, Server
from fedhello.flower import codec
from fedhello.records import DroppedClient


def error_reason(reply: Message) -> str:
    code, reason = reply.error.code, reply.error.reason
    if code == 5:
        return "node unavailable (missed its heartbeats)"
    return f"node error {code}: {reason.strip().splitlines()[-1][:300] if reason.strip() else 'no reason given'}"


class FedHeLLoStrategy(Strategy):
    def __init__(self, server: Server, nodes: dict[int, int]) -> None:
        self.server = server
        self.nodes = nodes  # fedhello client id -> Flower node id
        self.plan: RoundPlan | None = None
        self.outcome: RoundOutcome | None = None
        self._sent: dict[str, int] = {}  # message id -> client id
        self._client_of: dict[int, int] = {}  # node id -> client id, this round
        self._unreachable: list[DroppedClient] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled client; `arrays` and `config` are unused (the `Server` holds the model)."""
        self.plan = self.server.plan_round()
        if self.plan.round != server_round:
            raise RuntimeError(f"Flower round {server_round} but fedhello server round {self.plan.round}")
        online = set(grid.get_node_ids())
        messages, self._unreachable, self._client_of = [], [], {}
        for instruction in self.plan.instructions:
            node = self.nodes.get(instruction.client_id)
            if node is None or node not in online:
                self._unreachable.append(DroppedClient(instruction.client_id, "node not connected"))
                continue
            message = Message(
                codec.encode_instruction(instruction),
                dst_node_id=node,
                message_type=MessageType.TRAIN,
                group_id=str(server_round),
            )
            self._client_of[node] = instruction.client_id
            messages.append(message)
        return messages

    def track(self, sent: Iterable[Message]) -> None:
        """Remember which client each sent message was for (message ids exist only once pushed)."""
        self._sent = {message.metadata.message_id: self._client_of[message.metadata.dst_node_id] for message in sent}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies_by_client, failures = [], list(self._unreachable)
        for reply in replies:
            client = self._sent.get(reply.metadata.reply_to_message_id)
            if client is None:
                continue
            if reply.has_error():
                failures.append(DroppedClient(client, error_reason(reply)))
                continue
            try:
                decoded = codec.decode_reply(reply.content)
            except (KeyError, ValueError, TypeError) as error:
                failures.append(DroppedClient(client, f"unreadable reply: {error}"))
                continue
            replies_by_client.append(decoded)
        answered = {d.client for d in failures} | {r.update.client_id for r in replies_by_client}
        failures += [
            DroppedClient(client, "no reply within flower.round_timeout_s")
            for client in self._sent.values()
            if client not in answered
        ]
        self.outcome = self.server.finish_round(self.plan, replies_by_client, failures)
        record = self.outcome.record
        metrics = {"num-trained": len(record.clients) - len(record.dropped), "num-dropped": len(record.dropped)}
        if record.train_loss is not None:
            metrics["train-loss"] = float(record.train_loss)
        return None, MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Evaluation is the server's (global model, or personal models through `PersonalEvaluation`)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None

    def summary(self) -> None:
        """fedhello writes its own run directory; nothing to print here."""
