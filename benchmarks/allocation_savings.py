"""What a client saves by training only some LoRA layers: a real stop versus the reference's lr = 0.

Measures, side by side in one run on the offline MiniLM-L6 classifier with random token batches:

  full          all LoRA layers + head trainable (the baseline, ratio 1.00)
  ours top      top k layers + head trainable; everything else requires_grad=False, so autograd
                records nothing below the lowest trained layer (fedhello's local training)
  reference     all LoRA + head keep requires_grad=True, the optimiser gives the non-allocated
                LoRA tensors lr = 0 (the reference code): same layers updated as "ours top"
  ours bottom   bottom k layers + head: the lowest trained layer is layer 0, so the backward
                pass still runs through the whole network and little is saved

Per setup: median step time (forward + backward + AdamW step, after warm-up, setups interleaved
step by step), bytes autograd saves for backward (`SavedActivationMeter`) and, on CUDA, the
peak memory a step allocates above what was resident before it. Ratios are to `full`.

    python benchmarks/allocation_savings.py --steps 4 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fedhello.config import ExperimentConfig
from fedhello.models.classifier import load_classifier
from fedhello.models.federated_model import FederatedModel
from fedhello.training import SavedActivationMeter, autocast_for

NUM_LABELS = 20
LR = 3e-3


@dataclass
class Setup:
    name: str
    layers: list[int]  # the allocated layers (updated with a real learning rate)
    requires_grad: list[str]  # parameters with requires_grad=True
    make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
    optimizer: torch.optim.Optimizer | None = None
    times_s: list[float] = field(default_factory=list)
    activation_bytes: int = 0
    cuda_step_peak_bytes: int = 0


def build_setups(federated: FederatedModel, k: int) -> list[Setup]:
    layer_map = federated.layer_map
    num_layers = layer_map.num_layers
    all_layers = list(range(num_layers))
    top = all_layers[num_layers - k :]
    bottom = all_layers[:k]
    head = list(federated.head_names)
    all_lora = list(layer_map.all_names)

    def plain(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, lr=LR)

    allocated = {id(p) for name, p in federated.model.named_parameters() if name in set(layer_map.names_for(top) + head)}

    def lr_zero(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        live = [p for p in parameters if id(p) in allocated]
        frozen = [p for p in parameters if id(p) not in allocated]
        return torch.optim.AdamW([{"params": live, "lr": LR}, {"params": frozen, "lr": 0.0}], lr=LR)

    span = lambda layers: f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])  # noqa: E731
    return [
        Setup(f"full (layers 0..{num_layers - 1})", all_layers, all_lora + head, plain),
        Setup(f"ours: top {k} (layers {span(top)})", top, layer_map.names_for(top) + head, plain),
        Setup(f"reference lr=0: top {k} (layers {span(top)})", top, all_lora + head, lr_zero),
        Setup(f"ours: bottom {k} (layers {span(bottom)})", bottom, layer_map.names_for(bottom) + head, plain),
    ]


def random_batch(federated: FederatedModel, batch_size: int, length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    vocab = federated.model.config.vocab_size
    batch = {
        "input_ids": torch.randint(1000, vocab, (batch_size, length), generator=generator),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator),
    }
    return {key: value.to(federated.device) for key, value in batch.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(federated: FederatedModel, setup: Setup, batch: dict[str, torch.Tensor], meter: SavedActivationMeter | None) -> float:
    """One forward + backward + optimiser step; returns its wall time in seconds."""
    device = federated.device
    synchronize(device)
    started = time.perf_counter()
    if meter is not None:
        with meter.step(), autocast_for(device):
            loss = federated.model(**batch).loss
    else:
        with autocast_for(device):
            loss = federated.model(**batch).loss
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()
    synchronize(device)
    return time.perf_counter() - started


def activate(federated: FederatedModel, setup: Setup) -> None:
    parameters = federated.set_trainable(setup.requires_grad)
    if setup.optimizer is None:
        setup.optimizer = setup.make_optimizer(parameters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=64, help="tokens per example")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setup and repeat")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per setup = repeats x steps, one step per setup in turn")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setup first")
    parser.add_argument("--layers-trained", type=int, default=None, help="k, the layers a partial client trains (default L/2)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    config = ExperimentConfig()
    federated = load_classifier(config, NUM_LABELS, device)
    federated.model.train()
    num_layers = federated.layer_map.num_layers
    k = args.layers_trained or num_layers // 2
    if not 1 <= k <= num_layers:
        parser.error(f"--layers-trained must be in 1..{num_layers}")
    setups = build_setups(federated, k)
    generator = torch.Generator().manual_seed(0)
    batch = random_batch(federated, args.batch_size, args.length, generator)

    # Warm-up (also creates each optimiser's state), and one metered step per setup.
    for setup in setups:
        activate(federated, setup)
        for _ in range(args.warmup):
            train_step(federated, setup, batch, None)
        meter = SavedActivationMeter(federated.model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        train_step(federated, setup, batch, meter)
        setup.activation_bytes = meter.peak_bytes
        if device.type == "cuda":
            setup.cuda_step_peak_bytes = torch.cuda.max_memory_allocated(device) - resident

    # Timed steps, interleaved one step at a time so that load drift hits every setup alike;
    # the order rotates every round so no setup always follows the same one.
    for round_index in range(args.repeats * args.steps):
        shift = round_index % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            activate(federated, setup)
            setup.times_s.append(train_step(federated, setup, batch, None))
    federated.set_trainable(())

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"model {config.model.name} ({num_layers} layers, LoRA rank {config.lora.rank}), batch {args.batch_size} x "
        f"{args.length} tokens, device {name}, {args.repeats} x {args.steps} timed steps per setup"
    )
    full = setups[0]
    full_ms = 1000 * statistics.median(full.times_s)
    headers = ["setup", "trainable params", "ms/step", "x full", "activation MiB", "x full"]
    if device.type == "cuda":
        headers += ["CUDA step peak MiB", "x full"]
    rows = []
    parameters = federated.parameters_by_name()
    for setup in setups:
        ms = 1000 * statistics.median(setup.times_s)
        updated = sum(parameters[n].numel() for n in federated.layer_map.names_for(setup.layers) + list(federated.head_names))
        row = [
            setup.name,
            f"{updated:,}",
            f"{ms:.1f}",
            f"{ms / full_ms:.2f}",
            f"{setup.activation_bytes / 2**20:.1f}",
            f"{setup.activation_bytes / full.activation_bytes:.2f}",
        ]
        if device.type == "cuda":
            row += [f"{setup.cuda_step_peak_bytes / 2**20:.1f}", f"{setup.cuda_step_peak_bytes / full.cuda_step_peak_bytes:.2f}"]
        rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print(
        "trainable params: tensors updated with a real learning rate (LoRA of the allocated layers + head); "
        "the reference row also computes gradients for every other LoRA tensor."
    )


if __name__ == "__main__":
    main()
