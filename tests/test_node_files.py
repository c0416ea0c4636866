"""Node-local data files: parsing, one-line refusals, the encoded-sample cache, and export == simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedhello.cli import main
from fedhello.config import load_config
from fedhello.data.node_files import read_node_file
from fedhello.errors import ConfigError, NodeDataError
from fedhello.federation.client import Client
from fedhello.federation.messages import TrainInstruction
from fedhello.node_preparation import export_partitions, load_split, prepare_client, save_split
from fedhello.preparation import prepare_task
from test_flower import flower_config

LABELS = ("neg", "pos")


def write_lines(path, *lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def refusal(path, task="sequence_classification", labels=LABELS) -> str:
    with pytest.raises(NodeDataError) as caught:
        read_node_file(path, task, labels)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


def test_text_jsonl_and_csv_read_in_file_order(tmp_path):
    jsonl = write_lines(
        tmp_path / "a.jsonl", '{"text": "good film", "label": "pos"}', "", '{"text": "bad", "label": "neg"}'
    )
    data = read_node_file(jsonl, "sequence_classification", LABELS)
    assert data.train_texts == ["good film", "bad"] and data.train_labels.tolist() == [1, 0]
    assert data.num_test == 0 and data.label_names == LABELS
    csv_file = write_lines(tmp_path / "a.csv", "id,label,text", '1,neg,"bad, really"', "2,pos,fine")
    data = read_node_file(csv_file, "sequence_classification", LABELS)
    assert data.train_texts == ["bad, really", "fine"] and data.train_labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ['{"text": "ok", "label": "pos"}', '{"text": "x", "label": "meh"}'],
            "row 2: label 'meh' is not in the run's label set",
        ),
        (['{"label": "pos"}'], "row 1: missing field 'text'"),
        (['{"text": "", "label": "pos"}'], "row 1: field 'text' must be a non-empty string"),
        (['{"text": "a", "label": 1}'], "row 1: field 'label' must be a label name"),
        (['{"text": "a", "label": "pos"}', "{not json"], "row 2: not valid JSON"),
        (["[1, 2]"], "row 1: expected a JSON object, got list"),
        ([], "the file has no rows"),
    ],
)
def test_bad_text_rows_are_refused_with_file_row_and_reason(tmp_path, lines, expected):
    assert expected in refusal(write_lines(tmp_path / "bad.jsonl", *lines))


def test_bad_csv_and_wrong_files_are_refused(tmp_path):
    assert "lacks column(s) label" in refusal(write_lines(tmp_path / "a.csv", "text", "hello"))
    assert "row 3: label 'x'" in refusal(write_lines(tmp_path / "b.csv", "text,label", "a,pos", "b,x"))
    assert "must be a .jsonl or .csv file" in refusal(write_lines(tmp_path / "a.txt", "hello"))
    assert "no such file" in refusal(tmp_path / "missing.jsonl")
    assert "not supported" in refusal(tmp_path / "a.jsonl", task="token_classification")


def test_instruction_pairs_and_chat_messages(tmp_path):
    chat = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}  # fmt: skip
    path = write_lines(
        tmp_path / "pairs.jsonl",
        json.dumps({"prompt": "what?", "response": "that", "category": "pos"}),
        json.dumps(chat),
    )
    data = read_node_file(path, "causal_lm", LABELS)
    assert data.train_prompts == ["what?", "hi"] and data.train_responses == ["that", "hello"]
    assert data.train_categories.tolist() == [1, 0]
    two_turns = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2}
    assert "row 1: field 'messages' must be one user turn" in refusal(
        write_lines(tmp_path / "c.jsonl", json.dumps(two_turns)), "causal_lm"
    )
    assert "row 1: missing field 'response'" in refusal(
        write_lines(tmp_path / "d.jsonl", json.dumps({"prompt": "a"})), "causal_lm"
    )
    assert "row 1: category 'x' is not in" in refusal(
        write_lines(tmp_path / "e.jsonl", json.dumps({"prompt": "a", "response": "b", "category": "x"})), "causal_lm"
    )


def test_image_npz_by_name_or_index_and_its_refusals(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    np.savez(tmp_path / "names.npz", images=images, labels=np.array(["pos", "neg", "pos"]))
    data = read_node_file(tmp_path / "names.npz", "image_classification", LABELS)
    assert data.train_images.shape == (3, 4, 4, 1) and data.train_labels.tolist() == [1, 0, 1]
    np.savez(tmp_path / "ints.npz", images=images, labels=np.array([0, 1, 1]))
    assert read_node_file(tmp_path / "ints.npz", "image_classification", LABELS).train_labels.tolist() == [0, 1, 1]

    def image_refusal(**arrays) -> str:
        np.savez(tmp_path / "bad.npz", **arrays)
        return refusal(tmp_path / "bad.npz", "image_classification")

    assert "row 2: label index 2 is outside" in image_refusal(images=images, labels=np.array([0, 1, 2]))
    assert "row 1: label 'cat'" in image_refusal(images=images, labels=np.array(["pos", "cat", "neg"]))
    assert "lacks array(s) labels" in image_refusal(images=images)
    assert "must be uint8" in image_refusal(images=images.astype(np.float32), labels=np.array([0, 1, 1]))
    assert "one per image (3)" in image_refusal(images=images, labels=np.array([0, 1]))
    assert "no rows" in image_refusal(images=images[:0], labels=np.zeros(0, np.int64))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "not a readable .npz" in refusal(tmp_path / "junk.npz", "image_classification")


def test_data_labels_must_be_distinct_and_match_the_dataset(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.labels"):
        load_config(overrides=["data.labels=[a, a]"])
    config = load_config(overrides=["data.dataset=digits", "model.task=image_classification", "data.labels=[a, b]"])
    with pytest.raises(ConfigError, match=r"config field 'data\.labels': must list dataset 'digits'"):
        export_partitions(config, tmp_path)


def tiny_config(folder):
    return flower_config(folder, "partition.scheme=dirichlet", "training.max_local_steps=3", "training.batch_size=8")


def one_step_update(runtime, client_id: int):
    initial = runtime.initial_state
    instruction = TrainInstruction(
        round=1, client_id=client_id, group=0, layers=(1, 3), rank=None, tensors=dict(initial), train_head=True
    )
    return Client(client_id).fit(instruction, runtime)


def test_a_node_reading_its_exported_file_sends_the_simulated_clients_update(
    tiny_vit_folder, tmp_path, one_torch_thread
):
    config = tiny_config(tiny_vit_folder)
    overrides = [
        f"model.name={tiny_vit_folder}",
        "model.task=image_classification",
        "data.dataset=digits",
        "federation.num_clients=3",
        "federation.clients_per_round=2",
        "partition.scheme=dirichlet",
        "fisher.proxy_size=32",
    ]
    sets = [argument for override in overrides for argument in ("--set", override)]
    assert main(["export-partitions", *sets, "--out", str(tmp_path / "parts")]) == 0
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    task = prepare_task(config, measure_costs=False)
    simulated = task.client_runtime(config)
    assert [entry["samples"] for entry in manifest["files"]] == [len(indices) for indices in task.client_indices]
    client = 1
    expected = one_step_update(simulated, client)
    from_file = prepare_client(
        config, client, data_path=tmp_path / "parts" / manifest["files"][client]["file"], cache_dir=tmp_path / "cache"
    )
    assert (tmp_path / "cache").is_dir() and len(list((tmp_path / "cache").iterdir())) == 1
    got = one_step_update(from_file, client)
    assert got.record.num_samples == expected.record.num_samples and got.record.local_steps == 3
    assert got.update.deltas.keys() == expected.update.deltas.keys()
    for name, delta in expected.update.deltas.items():
        assert torch.equal(got.update.deltas[name], delta), name
    assert got.record.train_loss == expected.record.train_loss
    # Without a data file the node encodes only its shard of the partition: the same update again.
    from_shard = prepare_client(config, client, cache_dir=tmp_path / "cache")
    assert len(from_shard.train) == len(task.client_indices[client])
    for name, delta in one_step_update(from_shard, client).update.deltas.items():
        assert torch.equal(expected.update.deltas[name], delta), name


def test_the_encoded_cache_round_trips_and_is_reused(tiny_vit_folder, tmp_path, one_torch_thread, monkeypatch):
    config = tiny_config(tiny_vit_folder)
    export_partitions(config, tmp_path / "parts")
    path = tmp_path / "parts" / "client-000.npz"
    first = prepare_client(config, 0, data_path=path, cache_dir=tmp_path / "cache")
    (cached_file,) = (tmp_path / "cache").iterdir()
    split, labels = load_split(cached_file)
    assert labels == tuple(str(d) for d in range(10)) and split.size == first.train.size
    assert torch.equal(split.images, first.train.images) and torch.equal(split.mean, first.train.mean)
    monkeypatch.setattr("fedhello.node_preparation.read_node_file", lambda *args: pytest.fail("cache not used"))
    again = prepare_client(config, 0, data_path=path, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train.labels, first.train.labels)
    save_split(tmp_path / "copy.safetensors", again.train, labels)
    assert not list(tmp_path.glob("*.partial"))
