"""The client role: load what the server sent, train the allocated layers, return deltas.

A `Client` holds only its own state across rounds (the tensors it keeps: a local head or
a personal model, as FedBN keeps its batch-norm statistics). The frozen base model, the
data and the training settings live in one `ClientRuntime`, shared by every client of an
in-process run or loaded once per Flower client process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fedhello.aggregation import ClientUpdate
from fedhello.config import ExperimentConfig
from fedhello.data.splits import Split
from fedhello.federation.messages import ClientReply, TrainInstruction
from fedhello.models.federated_model import FederatedModel
from fedhello.privacy.clipping import clip_update
from fedhello.records import ClientRecord, EvalResult
from fedhello.resources.cost_model import trained_state_bytes
from fedhello.seeding import torch_generator, torch_seed
from fedhello.tasks.base import EvaluationSettings
from fedhello.tensor_state import TensorState, leading_block, pad_factor, state_bytes, state_delta
from fedhello.training import LocalTrainingSettings, train_locally


@dataclass
class ClientRuntime:
    """What all clients of one process share: the model, the data, the local training settings."""

    federated: FederatedModel
    train: Split
    test: Split | None  # None on a Flower node that evaluates no personal model
    client_indices: Sequence[np.ndarray] | Mapping[int, np.ndarray]  # a client's positions in `train`
    settings: LocalTrainingSettings
    seed: int
    evaluation: EvaluationSettings
    initial_state: TensorState = field(init=False)

    def __post_init__(self) -> None:
        # Kept tensors start from the model as loaded; every process loads the same (seeded) initial model.
        self.initial_state = self.federated.state()

    @classmethod
    def from_config(
        cls,
        config: ExperimentConfig,
        federated: FederatedModel,
        train: Split,
        test: Split | None,
        client_indices: Sequence[np.ndarray] | Mapping[int, np.ndarray],
    ) -> ClientRuntime:
        training = config.training
        settings = LocalTrainingSettings(
            lr=training.lr,
            weight_decay=training.weight_decay,
            batch_size=training.batch_size,
            local_epochs=training.local_epochs,
            max_local_steps=training.max_local_steps,
            max_grad_norm=training.max_grad_norm,
            precision=config.precision,
        )
        return cls(
            federated, train, test, client_indices, settings, config.seed, EvaluationSettings.from_config(config)
        )


class Client:
    def __init__(self, client_id: int, state: TensorState | None = None) -> None:
        self.client_id = client_id
        self.state: TensorState = dict(state or {})

    def fit(self, instruction: TrainInstruction, runtime: ClientRuntime) -> ClientReply:
        if instruction.client_id != self.client_id:
            raise ValueError(f"client {self.client_id} received client {instruction.client_id}'s instruction")
        federated = runtime.federated
        full_shapes = {name: tensor.shape for name, tensor in runtime.initial_state.items()}
        missing = set(full_shapes) - set(instruction.tensors) - set(instruction.keep_local)
        if missing:
            raise ValueError(f"instruction lacks {len(missing)} tensors, e.g. {min(missing)}")
        received = instruction.tensors
        reduced = {name for name, tensor in received.items() if tensor.shape != full_shapes[name]}
        own = {name: self.state.get(name, runtime.initial_state[name]) for name in instruction.keep_local}
        federated.load_state(
            {**received, **{name: pad_factor(received[name], full_shapes[name]) for name in reduced}, **own}
        )

        names = federated.layer_map.names_for(instruction.layers)
        if instruction.train_head:
            names += list(federated.head_names)
        samples = runtime.client_indices[self.client_id]
        # A reduced-rank client's part of a tensor is its leading block; its delta is taken on that block.
        loaded = federated.state(names)
        start = {name: received[name] if name in reduced else loaded[name] for name in names}
        torch.manual_seed(torch_seed(runtime.seed, "dropout", instruction.round, self.client_id))
        blocks = federated.only_blocks(instruction.layers) if instruction.depth_reduced else contextlib.nullcontext()
        with blocks:
            result = train_locally(
                federated,
                runtime.train,
                samples,
                names,
                runtime.settings,
                torch_generator(runtime.seed, "data_order", instruction.round, self.client_id),
                gradient_masks={
                    name: pad_factor(torch.ones_like(received[name]), full_shapes[name]) for name in reduced
                },
            )
        after = federated.state(names)
        self.state.update(federated.state(instruction.keep_local))
        kept = set(instruction.keep_local) | set(instruction.discard)
        deltas = state_delta(
            {name: after[name][leading_block(start[name].shape)] for name in names if name not in kept},
            {name: start[name] for name in names if name not in kept},
        )
        within_clip = None
        if instruction.clip_norm is not None:  # differential privacy: nothing unclipped leaves the client
            deltas, within_clip = clip_update(deltas, instruction.clip_norm)
        record = ClientRecord(
            round=instruction.round,
            client=self.client_id,
            group=instruction.group,
            layers=list(instruction.layers),
            rank=instruction.rank,
            trainable_params=int(sum(tensor.numel() for tensor in start.values())),
            local_steps=result.steps,
            num_samples=len(samples),
            train_loss=result.mean_loss,
            wall_time_s=result.wall_time_s,
            bytes_down=state_bytes(received),
            bytes_up=state_bytes(deltas),
            activation_bytes=result.activation_bytes,
            state_bytes=trained_state_bytes(loaded.values()),
            within_clip=within_clip,
        )
        return ClientReply(ClientUpdate(self.client_id, deltas, len(samples)), record)

    def evaluate_personal(self, runtime: ClientRuntime, candidates: np.ndarray) -> EvalResult | None:
        """This client's own model on the test samples (among `candidates`) of the classes it holds."""
        if not self.state or runtime.test is None:
            return None
        own_classes = np.unique(runtime.train.classes.numpy()[runtime.client_indices[self.client_id]])
        own = candidates[np.isin(runtime.test.classes.numpy()[candidates], own_classes)]
        if len(own) == 0:
            return None
        federated = runtime.federated
        federated.load_state({**runtime.initial_state, **self.state})
        return EvalResult(split="personal", **federated.task.evaluate(federated, runtime.test, own, runtime.evaluation))
