"""What travels between server and client: one instruction down, one reply up.

These are plain dataclasses of tensors and numbers, so every engine can carry them: the
in-process engine passes them as objects, the Flower engine converts them to and from
Flower records (`fedhello.flower.codec`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhello.aggregation import ClientUpdate
from fedhello.records import ClientRecord
from fedhello.tensor_state import TensorState


@dataclass
class TrainInstruction:
    """One client's job for one round.

    `tensors` is the model the client starts from (all exchanged tensors but the ones it
    keeps itself); a reduced-rank client gets leading blocks of the LoRA factors.
    `keep_local` names the tensors the client keeps as its own across rounds (a local
    head, a whole personal model): it starts from its own copy, and never sends them.
    `discard` names tensors the client trains from what it was sent but neither returns
    nor keeps (`training.head: reset`: the head is trained locally, then thrown away).
    `clip_norm` (privacy.mode client) is the L2 bound the client clips its whole update to.
    `depth_reduced` (FedRA as published): the client runs only its allocated blocks, a
    shallower sub-model, instead of the full model with the other LoRA layers frozen.
    """

    round: int
    client_id: int
    group: int
    layers: tuple[int, ...]
    rank: int | None
    tensors: TensorState
    train_head: bool
    keep_local: tuple[str, ...] = ()
    discard: tuple[str, ...] = ()
    clip_norm: float | None = None
    depth_reduced: bool = False


@dataclass
class ClientReply:
    """A client's deltas of exactly what it trained, and what the round cost it."""

    update: ClientUpdate
    record: ClientRecord
