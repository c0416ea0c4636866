"""The Flower engine of the run lifecycle: a round's instructions travel over Flower's grid.

Flower's built-in strategies send every node the same arrays and aggregate replies with
one key set. Here every sampled client gets its own message (its layer set, rank and
tensors), replies carry only what was trained, and the `Server` checks and aggregates
them. Sampling and allocation stay seeded by fedhello; a failed, unreachable or late
node is dropped from the round with the reason in the round record.

Client-held tensors (local heads, personal models) live in each node's `context.state`,
which belongs to one Flower run: a resumed run is a new Flower run, so they cannot be
restored and such runs are not resumable (`restore_client_states` refuses).
"""

from __future__ import annotations

import threading
import time

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedhello.errors import ConfigError
from fedhello.federation.messages import ClientReply
from fedhello.federation.server import RoundPlan
from fedhello.flower import codec
from fedhello.records import DroppedClient
from fedhello.tensor_state import TensorState

NODE_UNAVAILABLE = 5  # flwr's ErrorCode.NODE_UNAVAILABLE


def error_reason(reply: Message) -> str:
    code, reason = reply.error.code, reply.error.reason
    if code == NODE_UNAVAILABLE:
        return "node unavailable (missed its heartbeats)"
    lines = (reason or "").strip().splitlines()
    return f"node error {code}: {lines[-1][:300] if lines else 'no reason given'}"


class GridEngine:
    """Delivers each instruction as one TRAIN message to the node that holds the client."""

    POLL_S = 0.1

    def __init__(
        self, grid: Grid, nodes: dict[int, int], timeout_s: float, name: str, stop: threading.Event | None = None
    ) -> None:
        self.grid = grid
        self.nodes = nodes  # fedhello client id -> Flower node id
        self.timeout_s = timeout_s
        self.name = name
        self.stop = stop

    def send_and_receive(self, messages: list[Message]) -> list[Message]:
        """Like `Grid.send_and_receive`, but a stop request (Ctrl-C of the launcher) ends the wait at once."""
        waiting = {message_id for message_id in self.grid.push_messages(messages) if message_id}
        replies: list[Message] = []
        deadline = time.monotonic() + self.timeout_s
        while waiting and time.monotonic() < deadline and not (self.stop is not None and self.stop.is_set()):
            for reply in self.grid.pull_messages(waiting):
                replies.append(reply)
                waiting.discard(reply.metadata.reply_to_message_id)
            if waiting:
                time.sleep(self.POLL_S)
        return replies

    def deliver(self, plan: RoundPlan) -> tuple[list[ClientReply], list[DroppedClient]]:
        online = set(self.grid.get_node_ids())
        failures: list[DroppedClient] = []
        messages: list[Message] = []
        clients: list[int] = []
        for instruction in plan.instructions:
            node = self.nodes.get(instruction.client_id)
            if node is None or node not in online:
                failures.append(DroppedClient(instruction.client_id, "node not connected"))
                continue
            messages.append(
                Message(
                    codec.encode_instruction(instruction),
                    dst_node_id=node,
                    message_type=MessageType.TRAIN,
                    group_id=str(plan.round),
                )
            )
            clients.append(instruction.client_id)
        replies = self.send_and_receive(messages) if messages else []
        # Pushing a message sets its id.
        client_of_message = {
            message.metadata.message_id: client for message, client in zip(messages, clients, strict=True)
        }
        decoded: list[ClientReply] = []
        for reply in replies:
            client = client_of_message.get(reply.metadata.reply_to_message_id)
            if client is None:
                continue
            if reply.has_error():
                failures.append(DroppedClient(client, error_reason(reply)))
                continue
            try:
                decoded.append(codec.decode_reply(reply.content))
            except (KeyError, ValueError, TypeError) as error:
                failures.append(DroppedClient(client, f"unreadable reply: {error}"))
        answered = {d.client for d in failures} | {r.update.client_id for r in decoded}
        failures += [
            DroppedClient(client, "no reply within flower.round_timeout_s")
            for client in client_of_message.values()
            if client not in answered
        ]
        return decoded, failures

    def client_states(self) -> dict[int, TensorState]:
        return {}

    def restore_client_states(self, states: dict[int, TensorState]) -> None:
        if states:
            raise ConfigError("this checkpoint holds client tensors that a Flower run cannot hand back to its nodes")
