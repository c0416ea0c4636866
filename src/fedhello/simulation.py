"""The in-process federated simulator: rounds of sampling, allocation, local training,
heterogeneous aggregation and evaluation over one shared frozen base model.

Per-client state is only tensors: the global LoRA+head state lives on the server side
as a dict, each client's update is a dict of deltas for what it trained, and with
`training.head = local` each client keeps its own head tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedhello.aggregation import ClientUpdate, TensorState, state_bytes, state_delta
from fedhello.allocation.base import AllocationContext, AllocationStrategy, ClientSlot, ModelLayout
from fedhello.allocation.groups import assign_groups, resolve_budgets
from fedhello.allocation.ranks import pad_factor
from fedhello.config import ExperimentConfig
from fedhello.data.splits import Split
from fedhello.evaluation import evaluate
from fedhello.fisher import layer_scores, lora_fisher_diagonal
from fedhello.models.federated_model import FederatedModel
from fedhello.seeding import numpy_rng, torch_generator, torch_seed
from fedhello.training import LocalTrainingSettings, train_locally


@dataclass
class FederatedTask:
    """Everything a simulation needs that does not change across rounds."""

    federated: FederatedModel
    train: Split
    test: Split
    proxy: Split | None
    client_indices: list[np.ndarray]
    label_names: tuple[str, ...]


class RunLog:
    """Where the simulator reports; the default keeps records in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.rounds: list[dict] = []
        self.clients: list[dict] = []
        self.allocations: list[dict] = []
        self.fisher: list[dict] = []

    def log_round(self, record: dict) -> None:
        self.rounds.append(record)

    def log_clients(self, records: list[dict]) -> None:
        self.clients.extend(records)

    def log_allocation(self, record: dict) -> None:
        self.allocations.append(record)

    def log_fisher(self, record: dict) -> None:
        self.fisher.append(record)


@dataclass
class SimulationResult:
    final_eval: dict[str, float]
    global_state: TensorState
    client_groups: np.ndarray
    group_budgets: list[int]


class Simulator:
    def __init__(
        self,
        config: ExperimentConfig,
        task: FederatedTask,
        strategy: AllocationStrategy,
        log: RunLog | Any | None = None,
        on_round: Callable[[dict], None] | None = None,
    ) -> None:
        self.config = config
        self.task = task
        self.strategy = strategy
        self.log = log if log is not None else RunLog()
        self.on_round = on_round
        federated = task.federated
        self.num_layers = federated.layer_map.num_layers
        self.group_budgets = resolve_budgets(config.groups.budgets, self.num_layers)
        self.client_groups = assign_groups(
            config.federation.num_clients, config.groups.ratio, config.groups.assignment, numpy_rng(config.seed, "groups")
        )
        self.global_state = federated.state()
        strategy.bind(ModelLayout(federated.layer_map, federated.head_names, dict(self.global_state)))
        self.local_heads: dict[int, TensorState] = {}
        training = config.training
        self.local_settings = LocalTrainingSettings(
            lr=training.lr,
            weight_decay=training.weight_decay,
            batch_size=training.batch_size,
            local_epochs=training.local_epochs,
            max_local_steps=training.max_local_steps,
            max_grad_norm=training.max_grad_norm,
        )
        test_size = len(task.test)
        subset = config.evaluation.subset_size
        self.eval_subset = (
            np.sort(numpy_rng(config.seed, "eval").choice(test_size, subset, replace=False))
            if subset is not None and subset < test_size
            else np.arange(test_size)
        )

    # ------------------------------------------------------------------ helpers

    def score_layers(self) -> np.ndarray:
        """Fisher layer scores of the current global model on the server's proxy set."""
        if self.task.proxy is None or len(self.task.proxy) == 0:
            raise RuntimeError("Fisher scoring needs a proxy set: set fisher.proxy_size > 0")
        self.task.federated.load_state(self.global_state)
        fisher = lora_fisher_diagonal(
            self.task.federated, self.task.proxy, self.config.fisher.batch_size, self.config.fisher.objective
        )
        return layer_scores(fisher, self.task.federated.layer_map)

    def _names_to_train(self, layers: tuple[int, ...]) -> list[str]:
        names = self.task.federated.layer_map.names_for(layers)
        if self.config.training.head != "frozen":
            names += list(self.task.federated.head_names)
        return names

    def _train_client(
        self, round_number: int, slot: ClientSlot, layers: tuple[int, ...], rank: int | None
    ) -> tuple[ClientUpdate | None, dict]:
        federated = self.task.federated
        head_mode = self.config.training.head
        record = {"round": round_number, "client": slot.client_id, "group": slot.group, "layers": list(layers)}
        if rank is not None:
            record["rank"] = rank
        samples = self.task.client_indices[slot.client_id]
        if not layers:
            record.update(trainable_params=0, local_steps=0, num_samples=len(samples), train_loss=None,
                          wall_time_s=0.0, bytes_down=0, bytes_up=0, activation_bytes=0)
            return None, record
        down = self.strategy.downlink(self.global_state, slot, rank)
        sent_down = down
        if head_mode == "local":
            sent_down = {name: tensor for name, tensor in down.items() if name not in federated.head_names}
        full_shapes = {name: parameter.shape for name, parameter in federated.parameters_by_name().items()}
        reduced = [name for name, tensor in down.items() if tensor.shape != full_shapes[name]]
        federated.load_state({**down, **{name: pad_factor(down[name], full_shapes[name]) for name in reduced}})
        if head_mode == "local" and slot.client_id in self.local_heads:
            federated.load_state(self.local_heads[slot.client_id])
        names = self._names_to_train(layers)
        before = federated.state(names)
        torch.manual_seed(torch_seed(self.config.seed, "dropout", round_number, slot.client_id))
        result = train_locally(
            federated,
            self.task.train,
            samples,
            names,
            self.local_settings,
            torch_generator(self.config.seed, "data_order", round_number, slot.client_id),
            gradient_masks={name: pad_factor(torch.ones_like(down[name]), full_shapes[name]) for name in reduced},
        )
        after = federated.state(names)
        # A reduced-rank client's part of a tensor is its leading block; its delta is taken against what it received.
        start = {name: down[name] if name in reduced else before[name] for name in names}
        deltas = state_delta({name: after[name][tuple(slice(0, n) for n in start[name].shape)] for name in names}, start)
        if head_mode == "local":
            self.local_heads[slot.client_id] = federated.state(federated.head_names)
            deltas = {name: delta for name, delta in deltas.items() if name not in federated.head_names}
        communicates = self.strategy.communicates
        record.update(
            trainable_params=int(sum(tensor.numel() for tensor in start.values())),
            local_steps=result.steps,
            num_samples=len(samples),
            train_loss=result.mean_loss,
            wall_time_s=result.wall_time_s,
            bytes_down=state_bytes(sent_down) if communicates else 0,
            bytes_up=state_bytes(deltas) if communicates else 0,
            activation_bytes=result.activation_bytes,
        )
        return ClientUpdate(slot.client_id, deltas, len(samples)), record

    def _evaluate(self, indices: np.ndarray, split: str) -> dict:
        federated = self.task.federated
        personal = self.strategy.personal_states()
        if personal is None:
            federated.load_state(self.global_state)
            return {"split": split, **evaluate(federated, self.task.test, indices, self.config.evaluation.batch_size)}
        # Personal models: each client on the test samples of the classes it holds; mean over clients.
        test_labels = self.task.test.labels.numpy()
        train_labels = self.task.train.labels.numpy()
        results = []
        for client, state in sorted(personal.items()):
            own_classes = np.unique(train_labels[self.task.client_indices[client]])
            own = indices[np.isin(test_labels[indices], own_classes)]
            if len(own) == 0:
                continue
            federated.load_state(self.global_state)
            federated.load_state(state)
            results.append(evaluate(federated, self.task.test, own, self.config.evaluation.batch_size))
        if not results:
            federated.load_state(self.global_state)
            return {"split": split, **evaluate(federated, self.task.test, indices, self.config.evaluation.batch_size)}
        metrics = {key: float(np.mean([r[key] for r in results])) for key in ("accuracy", "macro_f1", "micro_f1", "loss")}
        return {"split": f"{split}-personal", **metrics, "num_samples": int(sum(r["num_samples"] for r in results)),
                "num_clients": len(results)}

    # ------------------------------------------------------------------ the loop

    def run_round(self, round_number: int, sampling_rng: np.random.Generator, allocation_rng: np.random.Generator) -> dict:
        started = time.perf_counter()
        federation = self.config.federation
        chosen = np.sort(sampling_rng.choice(federation.num_clients, federation.clients_per_round, replace=False))
        slots = [
            ClientSlot(int(client), int(self.client_groups[client]), self.group_budgets[self.client_groups[client]])
            for client in chosen
        ]
        allocation = self.strategy.allocate(
            AllocationContext(
                round=round_number,
                total_rounds=federation.rounds,
                num_layers=self.num_layers,
                clients=slots,
                group_budgets=self.group_budgets,
                rng=allocation_rng,
                layer_scores=self.score_layers,
            )
        )
        self.log.log_allocation(
            {
                "round": round_number,
                "clients": [
                    {"client": slot.client_id, "group": slot.group, "layers": list(allocation.layers[slot.client_id])}
                    for slot in slots
                ],
            }
        )
        if "fisher" in allocation.info:
            self.log.log_fisher(allocation.info["fisher"])

        updates, client_records = [], []
        for slot in slots:
            update, record = self._train_client(
                round_number, slot, allocation.layers[slot.client_id], allocation.ranks.get(slot.client_id)
            )
            client_records.append(record)
            if update is not None:
                updates.append(update)
        self.global_state = self.strategy.aggregate(self.global_state, updates, self.config.training.weighting)
        self.log.log_clients(client_records)

        layer_counts = np.zeros(self.num_layers, dtype=np.int64)
        for slot in slots:
            layer_counts[list(allocation.layers[slot.client_id])] += 1
        trained = [record for record in client_records if record["local_steps"] > 0]
        record: dict[str, Any] = {
            "round": round_number,
            "train_loss": float(np.mean([r["train_loss"] for r in trained])) if trained else None,
            "clients": [slot.client_id for slot in slots],
            "bytes_down": int(sum(r["bytes_down"] for r in client_records)),
            "bytes_up": int(sum(r["bytes_up"] for r in client_records)),
            "client_time_s": float(sum(r["wall_time_s"] for r in client_records)),
            "layer_counts": layer_counts.tolist(),
        }
        if round_number == federation.rounds:
            record["eval"] = self._evaluate(np.arange(len(self.task.test)), "test")
        elif round_number % self.config.evaluation.every == 0:
            split = "subset" if len(self.eval_subset) < len(self.task.test) else "test"
            record["eval"] = self._evaluate(self.eval_subset, split)
        record["wall_time_s"] = time.perf_counter() - started
        return record

    def run(self) -> SimulationResult:
        sampling_rng = numpy_rng(self.config.seed, "sampling")
        allocation_rng = numpy_rng(self.config.seed, "allocation")
        record: dict = {}
        for round_number in range(1, self.config.federation.rounds + 1):
            record = self.run_round(round_number, sampling_rng, allocation_rng)
            self.log.log_round(record)
            if self.on_round is not None:
                self.on_round(record)
        return SimulationResult(record["eval"], self.global_state, self.client_groups, self.group_budgets)
