"""What a memory budget buys on the default model, and how well the cost model predicts it.

Probes the cost model of the default experiment's model (offline MiniLM-L6, LoRA r=8 on
query/value, pooler + classifier head) at the default batch shape (16 x 64 tokens) the
way a run does (`fedhello.resources.probe`), then:

  1. per lowest trained layer l, training layers l..L-1 + head: activation, gradient +
     AdamW, peak (what a budget bounds), upload and modelled step time; and how close
     `lowest_activation` is to a per-layer constant times (L - l) plus the head's part;
  2. for each budget, the deepest-first feasible set and its cost (the README table);
  3. the cost model against the activation bytes real training steps measure
     (`train_locally`, one step each) for several layer sets.

    python benchmarks/memory_budgets.py --threads 1 --budgets 30MiB 60MiB 100MiB 150MiB 200MiB
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from benchlib import (
    add_common_arguments,
    apply_common_arguments,
    format_table,
    load_minilm,
    machine_description,
    random_batch,
)
from fedhello.config import ExperimentConfig
from fedhello.resources.memory_units import format_mib, parse_memory
from fedhello.resources.probe import probe_costs
from fedhello.training import LocalTrainingSettings, train_locally

CHECKED_SETS = ([5], [4, 5], [3, 4, 5], [0, 5], [1, 3, 5], [0, 1, 2], [0, 1, 2, 3, 4, 5])


class BatchSplit:
    """A one-batch split, so local training sees exactly the batch the probe measured."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self._batch = batch

    def __len__(self) -> int:
        return len(self._batch["labels"])

    def batch(self, indices) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {name: value[index] for name, value in self._batch.items()}


def suffix_table(costs) -> str:
    rows = []
    for lowest in range(costs.num_layers):
        cost = costs.cost(range(lowest, costs.num_layers))
        rows.append(
            [
                f"{lowest}..{costs.num_layers - 1}",
                f"{cost.activation_bytes / 2**20:.1f}",
                f"{cost.state_bytes / 2**20:.2f}",
                f"{cost.peak_bytes / 2**20:.1f}",
                f"{cost.upload_bytes / 2**10:.0f}",
                f"{cost.relative_time:.2f}",
            ]
        )
    return format_table(["layers", "activation MiB", "grad+AdamW MiB", "peak MiB", "upload KiB", "time x full"], rows)


def linearity(costs) -> str:
    """Fit lowest_activation[l] = a * (L - l) + b and report the worst relative residual."""
    depth = costs.num_layers - np.arange(costs.num_layers)
    measured = np.asarray(costs.lowest_activation, dtype=np.float64)
    slope, intercept = np.polyfit(depth, measured, 1)
    worst = np.max(np.abs(slope * depth + intercept - measured) / measured)
    return (
        f"lowest_activation ~ {slope / 2**20:.2f} MiB x (L - l) + {intercept / 2**20:.2f} MiB; worst residual "
        f"{worst:.2%}; each further trained layer adds {np.mean(costs.added_activation[1:]) / 2**20:.2f} MiB"
    )


def budget_table(costs, budgets: list[str]) -> str:
    rows = []
    for budget in budgets:
        layers = costs.deepest_first(parse_memory(budget))
        if not layers:
            rows.append([budget, "-", "-", "-", "-"])
            continue
        cost = costs.cost(layers)
        rows.append([budget, layers[0], len(layers), format_mib(cost.peak_bytes), f"{cost.relative_time:.2f}"])
    return format_table(["budget", "lowest layer", "layers", "peak", "time x full"], rows)


def check_against_training(federated, batch, costs) -> str:
    split = BatchSplit(batch)
    positions = np.arange(len(split))
    settings = LocalTrainingSettings(
        lr=1e-3, weight_decay=0.0, batch_size=len(split), local_epochs=1, max_local_steps=1, max_grad_norm=None
    )
    rows = []
    for layers in CHECKED_SETS:
        names = federated.layer_map.names_for(layers) + list(federated.head_names)
        state = federated.state()
        measured = train_locally(federated, split, positions, names, settings, torch.Generator().manual_seed(0))
        federated.load_state(state)
        predicted = costs.cost(layers).activation_bytes
        rows.append(
            [
                str(layers),
                f"{measured.activation_bytes / 2**20:.1f}",
                f"{predicted / 2**20:.1f}",
                f"{predicted / measured.activation_bytes - 1:+.1%}",
            ]
        )
    return format_table(["trained layers", "measured MiB", "cost model MiB", "error"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", nargs="+", default=["30MiB", "60MiB", "100MiB", "150MiB", "200MiB"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)

    print("# Memory budgets on the default model")
    print(machine_description())
    federated = load_minilm()
    batch = random_batch(federated.model.config.vocab_size, args.batch_size, args.length)
    costs = probe_costs(federated, batch, ExperimentConfig().precision, key={})
    print(f"## MiniLM-L6, batch {args.batch_size} x {args.length}, per lowest trained layer (layers l..L-1 + head)")
    print(suffix_table(costs))
    print(linearity(costs))
    print("## What each budget trains (deepest first)")
    print(budget_table(costs, args.budgets))
    print("## Cost model against one real training step per layer set")
    print(check_against_training(federated, batch, costs))


if __name__ == "__main__":
    main()
