"""Loopback deployments whose SuperNodes train on their own data files (written by export-partitions)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict

from fedhello.federation.messages import TrainInstruction
from fedhello.flower.deployment import LocalDeployment, write_flower_app
from fedhello.flower.node_worker import NodeWorker, forward
from fedhello.node_preparation import export_partitions
from fedhello.outputs.run_writer import read_jsonl
from fedhello.privacy.accounting import epsilon
from test_flower import PRIVATE, _running_in_group, flower_config

HEAD = "base_model.model.classifier.weight"


@pytest.mark.slow
def test_nodes_with_their_own_files_complete_and_a_corrupt_node_is_dropped_with_its_reason(tiny_vit_folder, tmp_path):
    """Two nodes read their exported files through node workers; node 2's file has a label outside the set.

    With differential privacy on: the node workers clip, the ServerApp adds the noise and accounts.
    """
    config = flower_config(
        tiny_vit_folder,
        "federation.clients_per_round=3",
        "federation.rounds=2",
        "flower.round_timeout_s=150",
        *PRIVATE,
    )
    export_partitions(config, tmp_path / "parts")
    corrupt = tmp_path / "parts" / "client-002.npz"
    with np.load(corrupt) as archive:
        images, labels = archive["images"], archive["labels"].astype("<U8")
    labels[5] = "eleven"
    np.savez(corrupt, images=images, labels=labels)
    node_configs = [
        {"data-path": str(tmp_path / "parts" / f"client-{node:03d}.npz"), "cache-dir": str(tmp_path / f"cache{node}")}
        for node in range(3)
    ]
    run_dir = tmp_path / "run"
    app_dir = write_flower_app(config, run_dir, tmp_path / "app")
    deployment = LocalDeployment(tmp_path / "flower", num_nodes=3, node_configs=node_configs, workers=True)
    try:
        deployment.start()
        pids = [process.pid for process in deployment.processes.values()]
        result = deployment.run_app(app_dir, timeout_s=600)
    finally:
        deployment.stop()
    assert [pid for pid in pids if _running_in_group(pid)] == [], "a deployment process outlived the test"

    assert result.returncode == 0, result.stdout + result.stderr
    rounds = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    reason = f"node error 2: {corrupt}: row 5: label 'eleven' is not in the run's label set (data.labels: 0, 1, 2"
    for record in rounds:
        assert [d["client"] for d in record["dropped"]] == [2]
        assert record["dropped"][0]["reason"].startswith(reason), record["dropped"][0]["reason"]
    trained = [c for c in read_jsonl(run_dir / "clients.jsonl") if c["status"] == "trained"]
    assert sorted(c["client"] for c in trained) == [0, 0, 1, 1]
    assert all(c["within_clip"] is not None for c in trained)  # clipped on the node
    assert [r["privacy"]["epsilon"] for r in rounds] == [
        pytest.approx(epsilon(0.8, num_clients=3, clients_per_round=3, rounds=round_number, delta=0.01))
        for round_number in (1, 2)
    ]
    assert (run_dir / "summary.md").stat().st_size > 0
    assert all(any((tmp_path / f"cache{node}").iterdir()) for node in (0, 1))  # encoded once, on each node's disk
    assert not (tmp_path / "cache2").exists()


@pytest.mark.slow
def test_processes_are_stopped_by_pid_when_the_caller_fails(tmp_path):
    with pytest.raises(RuntimeError, match="caller failed"), LocalDeployment(tmp_path, 1, workers=True) as deployment:
        pids = [process.pid for process in deployment.processes.values()]
        raise RuntimeError("caller failed")
    assert [pid for pid in pids if _running_in_group(pid)] == []


def test_the_worker_socket_is_private_and_a_dead_worker_is_a_one_line_reason(tmp_path):
    worker = NodeWorker(tmp_path / "sockets" / "worker.sock")
    try:
        assert (tmp_path / "sockets" / "worker.sock").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "sockets").stat().st_mode & 0o777 == 0o700
    finally:
        worker.server_close()
    assert not (tmp_path / "sockets" / "worker.sock").exists()
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    content, reason = forward(
        str(tmp_path / "sockets" / "worker.sock"), "train", RecordDict({"m": ConfigRecord()}), context
    )
    assert content is None and reason.startswith(f"node worker at {tmp_path / 'sockets' / 'worker.sock'} unreachable")
    assert "\n" not in reason


def test_a_message_through_the_worker_equals_handling_it_in_the_clientapp(tiny_vit_folder, tmp_path, one_torch_thread):
    from fedhello.flower import codec, node_client
    from fedhello.flower.run_settings import CONFIG_KEY, encode_config
    from fedhello.node_preparation import shared_model

    config = flower_config(tiny_vit_folder, "training.max_local_steps=2")
    export_partitions(config, tmp_path / "parts")
    run_config = {CONFIG_KEY: encode_config(config)}
    node_config = {"partition-id": 1, "data-path": str(tmp_path / "parts" / "client-001.npz")}
    _, initial = shared_model(config, 10)
    instruction = TrainInstruction(1, 1, 0, (0, 2), None, dict(initial), True, keep_local=(HEAD,))
    content = codec.encode_instruction(instruction)
    direct_state = RecordDict()
    direct = codec.decode_reply(node_client.train(content, direct_state, run_config, node_config))

    worker = NodeWorker(tmp_path / "w" / "worker.sock")
    serving = threading.Thread(target=worker.serve_forever, daemon=True)
    serving.start()
    try:
        context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)
        reply, reason = forward(str(worker.socket_path), "train", content, context)
        assert reason is None
        forwarded = codec.decode_reply(reply)
        for name, delta in direct.update.deltas.items():
            assert torch.equal(forwarded.update.deltas[name], delta), name
        kept = codec.tensors_from_record(context.state[node_client.STATE_KEY])
        assert torch.equal(
            kept[HEAD],
            codec.tensors_from_record(direct_state[node_client.STATE_KEY])[HEAD],
        )
        bad = Context(
            run_id=1,
            node_id=7,
            node_config={**node_config, "data-path": str(tmp_path / "nope.npz")},
            state=RecordDict(),
            run_config=run_config,
        )
        assert forward(str(worker.socket_path), "train", content, bad) == (
            None,
            f"{tmp_path / 'nope.npz'}: no such file (node config data-path)",
        )
        broken = forward(str(worker.socket_path), "train", RecordDict(), context)
        assert broken[0] is None and broken[1].startswith("node worker failed: KeyError"), broken
    finally:
        worker.shutdown()
        worker.server_close()
