"""What a node does with one message: the fedhello `Client` on the node's own runtime.

Content in, content out (Flower records), so the ClientApp and the long-lived node worker
(`fedhello.flower.node_worker`) run the same code. The client's own tensors (local head,
personal model) live in the node's state record between rounds. Unusable node data raises
a `ConfigError` whose one line becomes the node's error reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedhello.federation.client import Client, ClientRuntime
from fedhello.flower import codec
from fedhello.flower.run_settings import SIMULATION, config_key, decode_config, encoded_config, engine_from
from fedhello.node_preparation import default_cache_dir, prepare_client

STATE_KEY = "fedhello-client-state"
PARTITION_ID, CAPABILITY_GROUP, DATA_PATH, CACHE_DIR = "partition-id", "capability-group", "data-path", "cache-dir"

_RUNTIMES: dict[tuple, ClientRuntime] = {}


def client_id(node_config: Mapping[str, Any]) -> int:
    if PARTITION_ID not in node_config:
        raise RuntimeError(
            f"node config lacks {PARTITION_ID!r}: start the SuperNode with --node-config '{PARTITION_ID}=N'"
        )
    return int(node_config[PARTITION_ID])


def _path(node_config: Mapping[str, Any], key: str) -> Path | None:
    return Path(str(node_config[key])).expanduser() if key in node_config else None


def client_runtime(
    run_config: Mapping[str, Any], node_config: Mapping[str, Any], *, with_test: bool = False
) -> ClientRuntime:
    """This process's runtime for the run and node (loaded once; the test set only when first needed)."""
    encoded = encoded_config(run_config)
    data_path, cache_dir = _path(node_config, DATA_PATH), _path(node_config, CACHE_DIR)
    if cache_dir is None and engine_from(run_config) != SIMULATION:  # a simulation keeps its processes: no disk cache
        cache_dir = default_cache_dir()
    key = (config_key(encoded), client_id(node_config), data_path, cache_dir)
    cached = _RUNTIMES.get(key)
    if cached is None or (with_test and cached.test is None and data_path is None):
        _RUNTIMES[key] = prepare_client(
            decode_config(encoded), key[1], data_path=data_path, cache_dir=cache_dir, with_test=with_test
        )
    return _RUNTIMES[key]


def _client(node_config: Mapping[str, Any], state: RecordDict) -> Client:
    record = state.array_records.get(STATE_KEY)
    return Client(client_id(node_config), codec.tensors_from_record(record) if record is not None else None)


def train(
    content: RecordDict, state: RecordDict, run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> RecordDict:
    """Train on the instruction in `content`; the reply's content (`state` is updated in place)."""
    instruction = codec.decode_instruction(content)
    client = _client(node_config, state)
    if instruction.client_id != client.client_id:
        raise RuntimeError(
            f"node holds client {client.client_id} but was sent client {instruction.client_id}'s instruction"
        )
    reply = client.fit(instruction, client_runtime(run_config, node_config))
    state[STATE_KEY] = codec.tensors_to_record(client.state)
    return codec.encode_reply(reply)


def evaluate(
    content: RecordDict, state: RecordDict, run_config: Mapping[str, Any], node_config: Mapping[str, Any]
) -> RecordDict:
    """Personal-model strategies: this client's own model on the test samples of its classes."""
    _, indices = codec.decode_evaluation_request(content)
    runtime = client_runtime(run_config, node_config, with_test=True)
    return codec.encode_evaluation(_client(node_config, state).evaluate_personal(runtime, indices))


HANDLERS = {"train": train, "evaluate": evaluate}
