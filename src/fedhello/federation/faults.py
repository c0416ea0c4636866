"""Fault injection: make chosen clients misbehave on purpose (config section `faults`).

Each fault turns an honest client's reply into one the server must refuse: training
raises, a delta holds NaN or Inf, the update holds a tensor the client was not
allocated, a delta has the wrong shape or dtype, the update exceeds the size cap, or
the training loss diverges. The in-process engine applies them; tests and demos use
them to show the round completes with exactly the faulty updates excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fedhello.aggregation import ClientUpdate
from fedhello.config import FaultConfig
from fedhello.federation.messages import ClientReply, TrainInstruction


class InjectedFault(RuntimeError):
    """The `raise` fault: a client's training fails."""


def fault_for(faults: Sequence[FaultConfig], round_number: int, client_id: int) -> str | None:
    """The kind of fault `client_id` shows in `round_number`, if any (the first matching entry wins)."""
    for fault in faults:
        if client_id in fault.clients and (fault.rounds is None or round_number in fault.rounds):
            return fault.kind
    return None


def corrupt_reply(kind: str, reply: ClientReply, instruction: TrainInstruction, cap: int) -> ClientReply:
    """`reply` changed the way `kind` says (`raise` is applied before training, not here)."""
    deltas = dict(reply.update.deltas)
    record = reply.record
    first = sorted(deltas)[0] if deltas else None
    if kind in ("nan", "inf") and first is not None:
        deltas[first] = torch.full_like(deltas[first], float(kind))
    elif kind == "extra_tensor":
        unallocated = sorted(set(instruction.tensors) - set(deltas))
        name = unallocated[0] if unallocated else "injected.extra_tensor"
        template = instruction.tensors.get(name, torch.zeros(1))
        deltas[name] = torch.zeros_like(template)
    elif kind == "wrong_shape" and first is not None:
        deltas[first] = torch.cat([deltas[first], deltas[first][:1]])
    elif kind == "wrong_dtype" and first is not None:
        deltas[first] = deltas[first].to(torch.float64 if deltas[first].dtype != torch.float64 else torch.float32)
    elif kind == "oversize":
        deltas["injected.padding"] = torch.zeros(cap // 4 + 1, dtype=torch.float32)
    elif kind == "diverge":
        record = replace(record, train_loss=float("nan"))
    update = reply.update
    return ClientReply(ClientUpdate(update.client_id, deltas, update.num_samples), record)
