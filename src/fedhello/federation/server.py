"""The server role: it owns the round.

Each round the server samples clients, asks the allocation strategy who trains which
layers (and at what rank), applies the coverage rule (`fedhello.allocation.coverage`) when
it is on, builds each client's `TrainInstruction`, checks every reply against what it
sent, aggregates the survivors, evaluates, and returns the round's records. Everything
that decides the next round is in `Server.state_dict()`: the global tensors, the round
and the strategy's state. Random streams are derived from the seed and the round
number, so no generator state needs saving.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fedhello.allocation.base import (
    Allocation,
    AllocationContext,
    AllocationStrategy,
    ClientSlot,
    ModelLayout,
    StrategyState,
)
from fedhello.allocation.coverage import enforce_min_trainers
from fedhello.allocation.groups import CapabilityGroups
from fedhello.config import ExperimentConfig
from fedhello.federation.messages import ClientReply, TrainInstruction
from fedhello.privacy.mechanism import PlannedContributions, PrivateAggregator
from fedhello.records import (
    AllocationRecord,
    AssignedLayers,
    ClientRecord,
    DroppedClient,
    EvalResult,
    FisherRecord,
    RoundRecord,
)
from fedhello.seeding import numpy_rng
from fedhello.tensor_state import TensorState, state_bytes


class ServerRuntime(Protocol):
    """What the server needs from the model side of its engine."""

    @property
    def num_test_samples(self) -> int: ...

    def evaluate(self, global_state: TensorState, indices: np.ndarray, split: str) -> EvalResult: ...

    def score_layers(self, global_state: TensorState) -> np.ndarray: ...


@dataclass
class ServerState:
    """Everything that decides the next round (the reliability layer checkpoints this)."""

    round: int
    global_tensors: TensorState
    strategy: StrategyState = field(default_factory=StrategyState)
    privacy: dict[str, float] = field(default_factory=dict)  # the adaptive clip norm


@dataclass
class RoundPlan:
    """A round in flight: who was sampled, the allocation, and what each trained client is sent."""

    round: int
    slots: list[ClientSlot]
    allocation: Allocation
    instructions: list[TrainInstruction]
    idle: list[ClientRecord]
    started: float


@dataclass
class RoundOutcome:
    """Everything a round reports: the round record, per-client records, allocation, Fisher refresh."""

    record: RoundRecord
    clients: list[ClientRecord]
    allocation: AllocationRecord
    fisher: FisherRecord | None


def sampled_positions(test_size: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """A seeded sorted sample of `size` of `test_size` test positions, or all of them."""
    if size is None or size >= test_size:
        return np.arange(test_size)
    return np.sort(rng.choice(test_size, size, replace=False))


def update_cap(config: ExperimentConfig, instruction: TrainInstruction) -> int:
    """The most bytes an update may hold: `federation.max_update_bytes`, else what the client was sent."""
    return config.federation.max_update_bytes or state_bytes(instruction.tensors)


class UpdateRejected(ValueError):
    """A reply that does not match what the server sent; the client is dropped from the round."""


class Server:
    def __init__(
        self,
        config: ExperimentConfig,
        strategy: AllocationStrategy,
        layout: ModelLayout,
        runtime: ServerRuntime,
        groups: CapabilityGroups,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.layout = layout
        self.runtime = runtime
        self.num_layers = layout.layer_map.num_layers
        self.groups = groups
        self.group_budgets = groups.budgets
        self.group_memory = groups.memory
        self.client_groups = groups.client_groups
        strategy.bind(layout)
        self.round = 0
        self.global_state: TensorState = dict(layout.initial_state)
        test_size = runtime.num_test_samples
        self.eval_subset = sampled_positions(test_size, config.evaluation.subset_size, numpy_rng(config.seed, "eval"))
        self.final_subset = sampled_positions(
            test_size, config.evaluation.final_size, numpy_rng(config.seed, "eval", 2)
        )
        head = set(layout.head_names)
        everything = layout.layer_map.all_names + layout.head_names
        self.kept_by_clients: tuple[str, ...] = (
            everything if strategy.personal_models else layout.head_names if config.training.head == "local" else ()
        )
        self._sent_names = tuple(name for name in everything if name not in self.kept_by_clients)
        self._head = head
        self.privacy = PrivateAggregator.from_config(config) if config.privacy.enabled else None

    # ------------------------------------------------------------------ state

    def state_dict(self) -> ServerState:
        privacy = self.privacy.state_dict() if self.privacy else {}
        return ServerState(self.round, dict(self.global_state), self.strategy.state_dict(), privacy)

    def load_state_dict(self, state: ServerState) -> None:
        self.round = state.round
        self.global_state = dict(state.global_tensors)
        self.strategy.load_state_dict(state.strategy)
        if self.privacy:
            self.privacy.load_state_dict(state.privacy)

    @property
    def finished(self) -> bool:
        return self.round >= self.config.federation.rounds

    # ------------------------------------------------------------------ one round

    def plan_round(self) -> RoundPlan:
        """Sample this round's clients, allocate layers, and build each trained client's instruction."""
        started = time.perf_counter()
        round_number = self.round + 1
        federation = self.config.federation
        sampling = numpy_rng(self.config.seed, "sampling", round_number)
        chosen = np.sort(sampling.choice(federation.num_clients, federation.clients_per_round, replace=False))
        slots = [
            ClientSlot(int(client), int(group), self.group_budgets[group], self.group_memory[group])
            for client, group in zip(chosen, self.client_groups[chosen], strict=True)
        ]
        allocation = self.strategy.allocate(
            AllocationContext(
                round=round_number,
                total_rounds=federation.rounds,
                num_layers=self.num_layers,
                clients=slots,
                group_budgets=self.group_budgets,
                rng=numpy_rng(self.config.seed, "allocation", round_number),
                layer_scores=lambda: self.runtime.score_layers(self.global_state),
                costs=self.layout.costs,
            )
        )
        min_trainers = self.config.allocation.min_trainers_per_layer
        if min_trainers > 1:
            allocation = enforce_min_trainers(allocation, slots, min_trainers, self.layout.costs)
        instructions, idle = [], []
        for slot in slots:
            layers = allocation.layers[slot.client_id]
            rank = allocation.ranks.get(slot.client_id)
            if not layers:
                idle.append(ClientRecord(round_number, slot.client_id, slot.group, [], status="idle", rank=rank))
                continue
            down = self.strategy.downlink(self.global_state, slot, rank)
            instructions.append(
                TrainInstruction(
                    round=round_number,
                    client_id=slot.client_id,
                    group=slot.group,
                    layers=tuple(layers),
                    rank=rank,
                    tensors={name: down[name] for name in self._sent_names},
                    train_head=self.config.training.head != "frozen",
                    keep_local=self.kept_by_clients,
                    discard=self.layout.head_names if self.config.training.head == "reset" else (),
                    clip_norm=self.privacy.clip_norm if self.privacy and self.privacy.clips_on_client else None,
                )
            )
        return RoundPlan(round_number, slots, allocation, instructions, idle, started)

    def update_cap(self, instruction: TrainInstruction) -> int:
        return update_cap(self.config, instruction)

    def expected_names(self, instruction: TrainInstruction) -> set[str]:
        """The tensors a client's reply to `instruction` may hold: its layers' and the head, less what it keeps."""
        allowed = set(self.layout.layer_map.names_for(instruction.layers))
        if instruction.train_head:
            allowed |= self._head
        return allowed - set(instruction.keep_local) - set(instruction.discard)

    def check_reply(self, instruction: TrainInstruction, reply: ClientReply) -> None:
        """Reject a reply that holds anything but finite deltas of what the client was told to train.

        Checked in order: size (before looking inside), sender, keys, shapes and dtypes,
        finite values, sample count, and a finite training loss (divergence).
        """
        update = reply.update
        size, cap = state_bytes(update.deltas), self.update_cap(instruction)
        if size > cap:
            raise UpdateRejected(f"update is {size} bytes, over the cap of {cap} bytes")
        if update.client_id != instruction.client_id:
            raise UpdateRejected(f"reply names client {update.client_id}")
        extra = set(update.deltas) - self.expected_names(instruction)
        if extra:
            raise UpdateRejected(f"update holds {len(extra)} tensors it was not allocated, e.g. {min(extra)}")
        for name, delta in update.deltas.items():
            sent = instruction.tensors[name]
            if delta.shape != sent.shape or delta.dtype != sent.dtype:
                raise UpdateRejected(
                    f"{name}: got {tuple(delta.shape)} {delta.dtype}, expected {tuple(sent.shape)} {sent.dtype}"
                )
            if not torch.isfinite(delta).all():
                raise UpdateRejected(f"{name}: non-finite values")
        if update.num_samples < 1:
            raise UpdateRejected(f"num_samples {update.num_samples} < 1")
        loss = reply.record.train_loss
        if loss is not None and not np.isfinite(loss):
            raise UpdateRejected(f"training diverged (train loss {loss})")

    def finish_round(
        self, plan: RoundPlan, replies: Sequence[ClientReply], failures: Sequence[DroppedClient] = ()
    ) -> RoundOutcome:
        """Check and aggregate the replies, evaluate when due, and advance the round."""
        instructions = {instruction.client_id: instruction for instruction in plan.instructions}
        dropped = list(failures)
        accepted: list[ClientReply] = []
        for reply in replies:
            instruction = instructions.get(reply.update.client_id)
            try:
                if instruction is None:
                    raise UpdateRejected("client was not asked to train this round")
                self.check_reply(instruction, reply)
            except UpdateRejected as rejected:
                dropped.append(DroppedClient(reply.update.client_id, f"update rejected: {rejected}"))
                continue
            accepted.append(reply)
        answered = {reply.update.client_id for reply in replies} | {d.client for d in dropped}
        dropped += [DroppedClient(client, "no reply") for client in instructions if client not in answered]

        privacy_record = None
        if self.privacy is not None:  # differential privacy: noise even when nothing arrived (see fedhello.privacy)
            self.global_state, privacy_record = self.privacy.aggregate(
                self.global_state,
                [reply.update for reply in accepted],
                self.planned_contributions(plan),
                {r.update.client_id: r.record.within_clip for r in accepted if r.record.within_clip is not None},
                plan.round,
            )
        elif accepted:
            self.global_state = self.strategy.aggregate(
                self.global_state, [reply.update for reply in accepted], self.config.training.weighting
            )
        self.round = plan.round

        groups = {slot.client_id: slot.group for slot in plan.slots}
        client_records = (
            [reply.record for reply in accepted]
            + plan.idle
            + [
                ClientRecord(
                    plan.round,
                    d.client,
                    groups[d.client],
                    list(plan.allocation.layers[d.client]),
                    status="dropped",
                    rank=plan.allocation.ranks.get(d.client),
                    reason=d.reason,
                )
                for d in dropped
            ]
        )
        client_records.sort(key=lambda record: record.client)
        layer_counts = np.zeros(self.num_layers, dtype=np.int64)
        for slot in plan.slots:
            layer_counts[list(plan.allocation.layers[slot.client_id])] += 1
        trained = [reply.record for reply in accepted]
        record = RoundRecord(
            round=plan.round,
            clients=[slot.client_id for slot in plan.slots],
            train_loss=float(np.mean([r.train_loss for r in trained])) if trained else None,
            bytes_down=int(sum(r.bytes_down for r in trained)),
            bytes_up=int(sum(r.bytes_up for r in trained)),
            client_time_s=float(sum(r.wall_time_s for r in trained)),
            layer_counts=layer_counts.tolist(),
            dropped=sorted(dropped, key=lambda d: d.client),
            status=None if accepted else "empty",
            privacy=privacy_record,
        )
        evaluation_started = time.perf_counter()
        record.eval = self.evaluate_if_due(plan.round)
        record.eval_time_s = time.perf_counter() - evaluation_started
        record.wall_time_s = time.perf_counter() - plan.started
        allocation = AllocationRecord(
            plan.round,
            [
                AssignedLayers(
                    slot.client_id,
                    slot.group,
                    list(plan.allocation.layers[slot.client_id]),
                    plan.allocation.ranks.get(slot.client_id),
                )
                for slot in plan.slots
            ],
            plan.allocation.info.get("source"),
            plan.allocation.coverage,
        )
        return RoundOutcome(record, client_records, allocation, plan.allocation.fisher)

    def planned_contributions(self, plan: RoundPlan) -> PlannedContributions:
        """How many of the round's trained clients were asked for each tensor (public: see fedhello.privacy)."""
        counts: dict[str, int] = {}
        for instruction in plan.instructions:
            for name in self.expected_names(instruction):
                counts[name] = counts.get(name, 0) + 1
        return PlannedContributions(len(plan.instructions), counts, self.layout.layer_map.layer_of(), self.num_layers)

    def evaluation_state(self) -> TensorState:
        """What the global model is evaluated with (the strategy's view, e.g. FlexLoRA's full ΔW)."""
        return self.strategy.evaluation_state(self.global_state)

    def evaluate_if_due(self, round_number: int) -> EvalResult | None:
        """The final test sample after the last round; the fixed subset every `evaluation.every` rounds."""
        if round_number == self.config.federation.rounds:
            return self.runtime.evaluate(self.evaluation_state(), self.final_subset, "test")
        if round_number % self.config.evaluation.every == 0:
            split = "subset" if len(self.eval_subset) < self.runtime.num_test_samples else "test"
            return self.runtime.evaluate(self.evaluation_state(), self.eval_subset, split)
        return None
