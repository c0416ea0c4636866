"""fedhello messages <-> Flower records.

Tensors travel in `ArrayRecord`s; everything else (the instruction's layer set, rank,
kept names; the client's cost record) as one JSON string in a `ConfigRecord`, because
Flower's records take only flat scalars and single-type lists.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedhello.aggregation import ClientUpdate
from fedhello.federation.messages import ClientReply, TrainInstruction
from fedhello.records import ClientRecord, EvalResult
from fedhello.tensor_state import TensorState

TENSORS, META = "tensors", "meta"


def tensors_to_record(state: TensorState) -> ArrayRecord:
    return ArrayRecord({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()})


def tensors_from_record(record: ArrayRecord) -> TensorState:
    return dict(record.to_torch_state_dict()) if len(record) else {}


def _meta(content: RecordDict) -> dict:
    return json.loads(str(content[META]["json"]))


def encode_instruction(instruction: TrainInstruction) -> RecordDict:
    meta = {
        "round": instruction.round,
        "client_id": instruction.client_id,
        "group": instruction.group,
        "layers": list(instruction.layers),
        "rank": instruction.rank,
        "train_head": instruction.train_head,
        "keep_local": list(instruction.keep_local),
        "discard": list(instruction.discard),
        "clip_norm": instruction.clip_norm,
        "depth_reduced": instruction.depth_reduced,
    }
    return RecordDict({TENSORS: tensors_to_record(instruction.tensors), META: ConfigRecord({"json": json.dumps(meta)})})


def decode_instruction(content: RecordDict) -> TrainInstruction:
    meta = _meta(content)
    return TrainInstruction(
        round=meta["round"],
        client_id=meta["client_id"],
        group=meta["group"],
        layers=tuple(meta["layers"]),
        rank=meta["rank"],
        tensors=tensors_from_record(content.array_records[TENSORS]),
        train_head=meta["train_head"],
        keep_local=tuple(meta["keep_local"]),
        discard=tuple(meta.get("discard", ())),
        clip_norm=meta.get("clip_norm"),
        depth_reduced=meta.get("depth_reduced", False),
    )


def encode_reply(reply: ClientReply) -> RecordDict:
    meta = {
        "client_id": reply.update.client_id,
        "num_samples": reply.update.num_samples,
        "record": reply.record.to_json(),
    }
    return RecordDict({TENSORS: tensors_to_record(reply.update.deltas), META: ConfigRecord({"json": json.dumps(meta)})})


def decode_reply(content: RecordDict) -> ClientReply:
    meta = _meta(content)
    update = ClientUpdate(
        int(meta["client_id"]), tensors_from_record(content.array_records[TENSORS]), int(meta["num_samples"])
    )
    return ClientReply(update, ClientRecord.from_json(meta["record"]))


def encode_evaluation_request(client_id: int, indices: np.ndarray) -> RecordDict:
    return RecordDict(
        {
            TENSORS: tensors_to_record({"indices": torch.as_tensor(indices, dtype=torch.int64)}),
            META: ConfigRecord({"json": json.dumps({"client_id": client_id})}),
        }
    )


def decode_evaluation_request(content: RecordDict) -> tuple[int, np.ndarray]:
    return int(_meta(content)["client_id"]), tensors_from_record(content.array_records[TENSORS])["indices"].numpy()


def encode_evaluation(result: EvalResult | None) -> RecordDict:
    return RecordDict({META: ConfigRecord({"json": json.dumps(None if result is None else result.to_json())})})


def decode_evaluation(content: RecordDict) -> EvalResult | None:
    meta = _meta(content)
    return None if meta is None else EvalResult.from_json(meta)
