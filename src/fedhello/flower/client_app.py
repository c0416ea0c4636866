"""The Flower ClientApp: one node is one fedhello client, running the same `Client`.

Node config (`flower-supernode --node-config 'partition-id=3 data-path="/data/mine.jsonl"'`;
Flower reads the values as TOML, so strings are quoted):

- `partition-id` (required): the node's fedhello client id, stable whatever node id Flower assigns.
- `data-path`: the node's own data file (formats in `fedhello.data.node_files`); without it the
  node trains on its shard of the simulated partition.
- `cache-dir`: where the node caches its encoded samples (default `~/.cache/fedhello/node-data`).
- `capability-group`: overrides the seeded group assignment (real devices know what they can afford).

Flower 1.42's deployment starts a fresh ClientApp process per message. With the environment
variable `FEDHELLO_NODE_WORKER` naming a node worker's socket (`fedhello node` sets it), this
module is a thin forwarder that imports nothing of fedhello's heavy parts (torch,
transformers): the worker keeps the model and the encoded samples loaded. Without it the
message is handled here (`fedhello.flower.node_client`), loading the model and the node's
cached samples; Flower's simulation reuses worker processes, so there each loads them once.

A node whose data is unusable answers with an error reply whose reason is one line (file,
row, what is wrong); the server drops it from the round with that reason.
"""

from __future__ import annotations

import os

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedhello.flower.node_worker import WORKER_ENV, forward

NODE_ERROR = 2  # flwr's ErrorCode.CLIENT_APP_RAISED_EXCEPTION
PARTITION_ID, CAPABILITY_GROUP = "partition-id", "capability-group"

app = ClientApp()


def refused(msg: Message, reason: str) -> Message:
    """An error reply whose reason is one line (not Flower's `<class ...>:<'...'>` wrapping of an exception)."""
    return Message(Error(code=NODE_ERROR, reason=reason), reply_to=msg)


def handle(kind: str, msg: Message, context: Context) -> Message:
    socket_path = os.environ.get(WORKER_ENV)
    if socket_path:
        content, error = forward(socket_path, kind, msg.content, context)
    else:
        from fedhello.errors import ConfigError
        from fedhello.flower.node_client import HANDLERS

        try:
            content, error = HANDLERS[kind](msg.content, context.state, context.run_config, context.node_config), None
        except ConfigError as refusal:
            content, error = None, str(refusal).splitlines()[0]
    if error is not None or content is None:
        return refused(msg, error or f"the node gave no reply to a {kind} message")
    return Message(content, reply_to=msg)


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Which fedhello client this node is, and its capability group if the node config sets one."""
    if PARTITION_ID not in context.node_config:
        return refused(
            msg, f"node config lacks {PARTITION_ID!r}: start the SuperNode with --node-config '{PARTITION_ID}=N'"
        )
    client_id = int(context.node_config[PARTITION_ID])
    group = int(context.node_config.get(CAPABILITY_GROUP, -1))
    return Message(RecordDict({"identity": ConfigRecord({"client-id": client_id, "group": group})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return handle("train", msg, context)


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Personal-model strategies: this client's own model on the test samples of its classes."""
    return handle("evaluate", msg, context)
