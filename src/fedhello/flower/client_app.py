"""The Flower ClientApp: one node is one fedhello client, running the same `Client`.

The node's `partition-id` (node config) is its fedhello client id, so its data partition
is stable whatever node id Flower assigns; an optional `capability-group` overrides
the seeded group assignment (real devices know what they can afford). The client's own
tensors (local head, personal model) live in the node's `context.state` between rounds.

The loaded task (frozen base model, encoded data) is cached per process and config:
Flower's simulation reuses worker processes, so each loads it once. Flower 1.42's
deployment engine starts a fresh ClientApp process per message, so there every message
loads it again (from local files: the cost is in the README's overhead table).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedhello.federation.client import Client, ClientRuntime
from fedhello.flower import codec
from fedhello.flower.run_settings import config_key, decode_config, encoded_config
from fedhello.preparation import prepare_task

STATE_KEY = "fedhello-client-state"
PARTITION_ID, CAPABILITY_GROUP = "partition-id", "capability-group"

app = ClientApp()
_RUNTIMES: dict[str, ClientRuntime] = {}


def client_runtime(context: Context) -> ClientRuntime:
    encoded = encoded_config(context.run_config)
    key = config_key(encoded)
    if key not in _RUNTIMES:
        config = decode_config(encoded)
        _RUNTIMES[key] = prepare_task(config, measure_costs=False).client_runtime(config)
    return _RUNTIMES[key]


def client_id(context: Context) -> int:
    if PARTITION_ID not in context.node_config:
        raise RuntimeError(
            f"node config lacks {PARTITION_ID!r}: start the SuperNode with --node-config '{PARTITION_ID}=N'"
        )
    return int(context.node_config[PARTITION_ID])


def load_client(context: Context) -> Client:
    record = context.state.array_records.get(STATE_KEY)
    return Client(client_id(context), codec.tensors_from_record(record) if record is not None else None)


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Which fedhello client this node is, and its capability group if the node config sets one."""
    group = int(context.node_config.get(CAPABILITY_GROUP, -1))
    return Message(
        RecordDict({"identity": ConfigRecord({"client-id": client_id(context), "group": group})}), reply_to=msg
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    instruction = codec.decode_instruction(msg.content)
    client = load_client(context)
    if instruction.client_id != client.client_id:
        raise RuntimeError(
            f"node holds client {client.client_id} but was sent client {instruction.client_id}'s instruction"
        )
    reply = client.fit(instruction, client_runtime(context))
    context.state[STATE_KEY] = codec.tensors_to_record(client.state)
    return Message(codec.encode_reply(reply), reply_to=msg)


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Personal-model strategies: this client's own model on the test samples of its classes."""
    _, indices = codec.decode_evaluation_request(msg.content)
    result = load_client(context).evaluate_personal(client_runtime(context), indices)
    return Message(codec.encode_evaluation(result), reply_to=msg)
