"""A long-lived node worker: keeps the model and the encoded samples loaded between messages.

Flower 1.42's deployment starts a fresh ClientApp process for every message (flwr PR
#5725 removed the long-lived loop; flwr issue #3670 asks for it back), so a ClientApp that
trains itself pays torch's and transformers' imports and the model load every round.
`fedhello node` runs this worker and the SuperNode together; the ClientApp then only
forwards each message over a Unix socket and imports little.

The socket is created with mode 0600 inside a 0700 folder, and the worker also refuses
connections from any other user (SO_PEERCRED): it is reachable only from its own node, by
its own user. Each message is one request: a JSON header (kind, run config, node config)
and two Flower records in Flower's protobuf form (the content and the node's state); the
reply carries the reply content and the updated state, or a one-line error reason. A
worker that is gone or crashes mid-message becomes an error reply naming the socket, which
the server turns into a dropped client with that reason.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

WORKER_ENV = "FEDHELLO_NODE_WORKER"
_LENGTH = struct.Struct(">Q")


def _send_frames(connection: socket.socket, *frames: bytes) -> None:
    connection.sendall(b"".join(_LENGTH.pack(len(frame)) + frame for frame in frames))


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = connection.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _receive_frames(connection: socket.socket, count: int) -> list[bytes]:
    return [
        _receive_exactly(connection, _LENGTH.unpack(_receive_exactly(connection, _LENGTH.size))[0])
        for _ in range(count)
    ]


def _records_to_bytes(records: RecordDict) -> bytes:
    return recorddict_to_proto(records).SerializeToString()


def _records_from_bytes(data: bytes) -> RecordDict:
    proto = ProtoRecordDict()
    proto.ParseFromString(data)
    return recorddict_from_proto(proto)


def forward(socket_path: str, kind: str, content: RecordDict, context: Context) -> tuple[RecordDict | None, str | None]:
    """Send one message to the node worker: (reply content, None), or (None, a one-line reason)."""
    header = {"kind": kind, "run_config": dict(context.run_config), "node_config": dict(context.node_config)}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(socket_path)
            _send_frames(
                connection, json.dumps(header).encode(), _records_to_bytes(content), _records_to_bytes(context.state)
            )
            reply_header, reply_content, state = _receive_frames(connection, 3)
    except OSError as error:
        return None, f"node worker at {socket_path} unreachable or crashed ({type(error).__name__}: {error})"
    reason = json.loads(reply_header)["error"]
    if reason is not None:
        return None, reason
    new_state = _records_from_bytes(state)
    for key in list(context.state):
        if key not in new_state:
            del context.state[key]
    for key, record in new_state.items():
        context.state[key] = record
    return _records_from_bytes(reply_content), None


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"[:300]


def handle_request(header: Mapping[str, Any], content: RecordDict, state: RecordDict) -> tuple[str | None, RecordDict]:
    """(None, reply content) or (the reason, empty content); `state` is updated in place."""
    from fedhello.errors import ConfigError
    from fedhello.flower.node_client import HANDLERS

    try:
        return None, HANDLERS[header["kind"]](content, state, header["run_config"], header["node_config"])
    except ConfigError as error:
        return str(error).splitlines()[0], RecordDict()
    except Exception as error:  # noqa: BLE001 - any failure of one message is that message's error reply
        return f"node worker failed: {_one_line(error)}", RecordDict()


class _RequestHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        connection: socket.socket = self.request
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, peer_uid, _ = struct.unpack("3i", credentials)
        if peer_uid != os.getuid():
            return
        header, content, state = _receive_frames(connection, 3)
        state_records = _records_from_bytes(state)
        reason, reply = handle_request(json.loads(header), _records_from_bytes(content), state_records)
        _send_frames(
            connection,
            json.dumps({"error": reason}).encode(),
            _records_to_bytes(reply),
            _records_to_bytes(state_records),
        )


class NodeWorker(socketserver.UnixStreamServer):
    """Serves one message at a time (a node trains one client) on a private Unix socket."""

    def __init__(self, socket_path: Path) -> None:
        socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(socket_path.parent, 0o700)
        socket_path.unlink(missing_ok=True)
        previous = os.umask(0o177)
        try:
            super().__init__(str(socket_path), _RequestHandler)
        finally:
            os.umask(previous)
        self.socket_path = socket_path

    def server_close(self) -> None:
        super().server_close()
        self.socket_path.unlink(missing_ok=True)


def warm_imports() -> None:
    """Import what training needs now, so the first message does not pay for it."""
    import fedhello.flower.node_client  # noqa: F401


def run_node(supernode_arguments: list[str], socket_path: Path | None = None) -> int:
    """Start the worker, then `flower-supernode ARGS` pointed at it; stop both when either ends.

    Returns the SuperNode's exit status. SIGTERM or Ctrl-C stops the SuperNode (by PID) and
    removes the socket; the SuperNode stays in this process's group, so signalling the group
    stops everything.
    """
    from fedhello.flower.deployment import LocalDeployment, flower_command

    socket_path = socket_path or Path(tempfile.mkdtemp(prefix="fedhello-node-")) / "worker.sock"
    warm_imports()
    worker = NodeWorker(socket_path)
    print(f"fedhello node worker listening on {socket_path}", file=sys.stderr, flush=True)
    supernode = subprocess.Popen(
        [flower_command("flower-supernode"), *supernode_arguments],
        env={**LocalDeployment.environment(), WORKER_ENV: str(socket_path)},
    )

    def stop(*_) -> None:
        threading.Thread(target=worker.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)

    def stop_when_supernode_ends() -> None:
        supernode.wait()
        stop()

    threading.Thread(target=stop_when_supernode_ends, daemon=True).start()
    try:
        worker.serve_forever()
    finally:
        if supernode.poll() is None:
            supernode.terminate()
            try:
                supernode.wait(timeout=10)
            except subprocess.TimeoutExpired:
                supernode.kill()
                supernode.wait()
        worker.server_close()
    return supernode.returncode
