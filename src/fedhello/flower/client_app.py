"""The Flower ClientApp: one node is one fedhello client, running the same `Client`.

Node config (`flower-supernode --node-config "partition-id=3 data-path=/data/mine.jsonl"`):

- `partition-id` (required): the node's fedhello client id, stable whatever node id Flower assigns.
- `data-path`: the node's own data file (formats in `fedhello.data.node_files`); without it the
  node trains on its shard of the simulated partition.
- `cache-dir`: where the node caches its encoded samples (default `~/.cache/fedhello/node-data`).
- `capability-group`: overrides the seeded group assignment (real devices know what they can afford).

The node loads only its own samples (`fedhello.node_preparation`), encoded once and cached
on its disk. The client's own tensors (local head, personal model) live in the node's
`context.state` between rounds. The loaded runtime is also cached per process: Flower's
simulation reuses worker processes, so each loads it once; Flower 1.42's deployment starts
a fresh ClientApp process per message, which then loads the model and the cached samples.

A node whose data is unusable answers with an error reply whose reason is one line (file,
row, what is wrong); the server drops it from the round with that reason.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedhello.errors import ConfigError
from fedhello.federation.client import Client, ClientRuntime
from fedhello.flower import codec
from fedhello.flower.run_settings import config_key, decode_config, encoded_config
from fedhello.node_preparation import prepare_client

STATE_KEY = "fedhello-client-state"
PARTITION_ID, CAPABILITY_GROUP, DATA_PATH, CACHE_DIR = "partition-id", "capability-group", "data-path", "cache-dir"
NODE_DATA_ERROR = 2  # flwr's ErrorCode.CLIENT_APP_RAISED_EXCEPTION

app = ClientApp()
_RUNTIMES: dict[tuple, ClientRuntime] = {}


def client_runtime(context: Context, *, with_test: bool = False) -> ClientRuntime:
    encoded = encoded_config(context.run_config)
    node = context.node_config
    data_path = Path(str(node[DATA_PATH])).expanduser() if DATA_PATH in node else None
    cache_dir = Path(str(node[CACHE_DIR])).expanduser() if CACHE_DIR in node else None
    key = (config_key(encoded), client_id(context), data_path, cache_dir)
    cached = _RUNTIMES.get(key)
    if cached is None or (with_test and cached.test is None and data_path is None):
        _RUNTIMES[key] = prepare_client(
            decode_config(encoded), client_id(context), data_path=data_path, cache_dir=cache_dir, with_test=with_test
        )
    return _RUNTIMES[key]


def client_id(context: Context) -> int:
    if PARTITION_ID not in context.node_config:
        raise RuntimeError(
            f"node config lacks {PARTITION_ID!r}: start the SuperNode with --node-config '{PARTITION_ID}=N'"
        )
    return int(context.node_config[PARTITION_ID])


def load_client(context: Context) -> Client:
    record = context.state.get(STATE_KEY)
    return Client(client_id(context), codec.tensors_from_record(record) if record is not None else None)


def refused(msg: Message, error: ConfigError) -> Message:
    """An error reply whose reason is the error's one line (not Flower's `<class ...>:<'...'>` wrapping)."""
    return Message(Error(code=NODE_DATA_ERROR, reason=str(error).splitlines()[0]), reply_to=msg)


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
    try:
        runtime = client_runtime(context)
    except ConfigError as error:
        return refused(msg, error)
    reply = client.fit(instruction, runtime)
    context.state[STATE_KEY] = codec.tensors_to_record(client.state)
    return Message(codec.encode_reply(reply), reply_to=msg)


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Personal-model strategies: this client's own model on the test samples of its classes."""
    _, indices = codec.decode_evaluation_request(msg.content)
    try:
        runtime = client_runtime(context, with_test=True)
    except ConfigError as error:
        return refused(msg, error)
    result = load_client(context).evaluate_personal(runtime, indices)
    return Message(codec.encode_evaluation(result), reply_to=msg)
