"""What a client saves by training only some LoRA layers: a real stop versus the reference's lr = 0.

Measures, side by side in one run on the offline MiniLM-L6 classifier with random token batches:

  full          all LoRA layers + head trainable (the baseline, ratio 1.00)
  ours top      top k layers + head trainable; everything else requires_grad=False, so autograd
                records nothing below the lowest trained layer (fedhello's local training)
  reference     all LoRA + head keep requires_grad=True, the optimiser gives the non-allocated
                LoRA tensors lr = 0 (the reference code): same layers updated as "ours top"
  ours bottom   bottom k layers + head: the lowest trained layer is layer 0, so the backward
                pass still runs through the whole network and little is saved
  top, no drop  "ours top" with the frozen layers below the lowest trained one in eval mode
                (no dropout there): not what fedhello does; it shows what the forward pass's
                dropout, a cost no allocation saves, adds to the ratio on CPU

Then, per capability group (budgets L/2, 3L/4, L) under each GD pattern (the pattern's
layer set) and RGD pattern (layer sets drawn with the pattern's profile weights), the mean
step time and activation memory relative to full training. A step's cost is set by the
lowest trained layer (the backward pass stops there), so the script measures one suffix
setup per lowest layer on a grid (`--grid`), trains layers lowest..L-1, and reads every
layer set's cost off it (linear interpolation between grid points). `--model decoder`
does the same on a random-init 30-layer decoder of SmolLM2-135M's shape.

Per setup: median step time (forward + backward + AdamW step, after warm-up, setups interleaved
step by step), bytes autograd saves for backward (`SavedActivationMeter`) and, on CUDA, the
peak memory a step allocates above what was resident before it. Ratios are to `full`.

    python benchmarks/allocation_savings.py --steps 4 --repeats 2 --model minilm decoder
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from benchlib import NUM_LABELS, format_table, load_minilm, machine_description, median, random_batch
from fedhello.allocation.groups import resolve_budgets
from fedhello.allocation.patterns import PATTERNS, pattern_layers, profile_weights, sample_layers
from fedhello.config import ExperimentConfig
from fedhello.models.federated_model import FederatedModel
from fedhello.models.lora import inject_lora
from fedhello.precision import autocast_for
from fedhello.tasks.classification import head_parameter_names
from fedhello.tasks.sequence_classification import SequenceClassificationTask
from fedhello.training import SavedActivationMeter

LR = 3e-3
GROUP_BUDGETS = [0.5, 0.75, 1.0]  # the default experiment's capability groups
RGD_DRAWS = 400


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
    eval_below: int | None = None  # put layers below this one (and the embeddings) in eval mode: no dropout there


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

    allocated = {
        id(p) for name, p in federated.model.named_parameters() if name in set(layer_map.names_for(top) + head)
    }

    def lr_zero(parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        live = [p for p in parameters if id(p) in allocated]
        frozen = [p for p in parameters if id(p) not in allocated]
        return torch.optim.AdamW([{"params": live, "lr": LR}, {"params": frozen, "lr": 0.0}], lr=LR)

    def span(layers: list[int]) -> str:
        return f"{layers[0]}..{layers[-1]}" if len(layers) > 1 else str(layers[0])

    return [
        Setup(f"full (layers 0..{num_layers - 1})", all_layers, all_lora + head, plain),
        Setup(f"ours: top {k} (layers {span(top)})", top, layer_map.names_for(top) + head, plain),
        Setup(f"reference lr=0: top {k} (layers {span(top)})", top, all_lora + head, lr_zero),
        Setup(f"ours: bottom {k} (layers {span(bottom)})", bottom, layer_map.names_for(bottom) + head, plain),
        Setup(
            f"top {k}, no dropout below layer {top[0]}", top, layer_map.names_for(top) + head, plain, eval_below=top[0]
        ),
    ]


def suffix_setups(federated: FederatedModel, grid: list[int]) -> dict[int, Setup]:
    """One setup per lowest trained layer l on the grid: layers l..L-1 + head."""
    layer_map = federated.layer_map
    head = list(federated.head_names)
    num_layers = layer_map.num_layers
    return {
        lowest: Setup(
            f"layers {lowest}..{num_layers - 1}",
            list(range(lowest, num_layers)),
            layer_map.names_for(list(range(lowest, num_layers))) + head,
            lambda parameters: torch.optim.AdamW(parameters, lr=LR),
        )
        for lowest in grid
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(
    federated: FederatedModel, setup: Setup, batch: dict[str, torch.Tensor], meter: SavedActivationMeter | None
) -> float:
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
    federated.model.train()
    if setup.eval_below is not None:
        for name, module in federated.model.named_modules():
            if name.endswith(("embeddings", "embed_tokens")):
                module.eval()
        for layer in range(setup.eval_below):
            federated.model.get_submodule(f"{federated.layer_map.container}.{layer}").eval()
    parameters = federated.set_trainable(setup.requires_grad)
    if setup.optimizer is None:
        setup.optimizer = setup.make_optimizer(parameters)


def build_decoder(device: torch.device) -> FederatedModel:
    """A random-init decoder of SmolLM2-135M's shape (30 layers) as a classifier, LoRA as configured."""
    config = ExperimentConfig()
    shape = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        num_hidden_layers=30,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=0,
        num_labels=NUM_LABELS,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(shape)
    lora_model = inject_lora(model, config.lora, 0).to(device)
    return FederatedModel.wrap(
        lora_model,
        SequenceClassificationTask(),
        head_parameter_names(lora_model, train_pooler=config.model.train_pooler),
    )


def measure(federated: FederatedModel, setups: list[Setup], batch: dict[str, torch.Tensor], args) -> None:
    """Warm-up and one metered step per setup, then timed steps interleaved across setups."""
    device = federated.device
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
    # One step per setup in turn, so that load drift hits every setup alike; the order
    # rotates every round so no setup always follows the same one.
    for round_index in range(args.repeats * args.steps):
        shift = round_index % len(setups)
        for setup in setups[shift:] + setups[:shift]:
            activate(federated, setup)
            setup.times_s.append(train_step(federated, setup, batch, None))
    federated.set_trainable(())
    federated.model.train()


def interpolate(grid: dict[int, Setup], lowest: float, full: Setup) -> tuple[float, float]:
    """(time, activation) relative to full training for a lowest trained layer, read off the grid."""
    points = sorted(grid)
    time_ratio = [median(grid[p].times_s) / median(full.times_s) for p in points]
    memory_ratio = [grid[p].activation_bytes / full.activation_bytes for p in points]
    return float(np.interp(lowest, points, time_ratio)), float(np.interp(lowest, points, memory_ratio))


def group_table(federated: FederatedModel, grid: dict[int, Setup], full: Setup, seed: int = 0) -> tuple[str, dict]:
    num_layers = federated.layer_map.num_layers
    budgets = resolve_budgets(GROUP_BUDGETS, num_layers)
    rng = np.random.default_rng(seed)
    rows, ratios = [], {}
    for pattern in PATTERNS:
        weights = profile_weights(pattern, num_layers, budgets)
        for mode in ("GD", "RGD"):
            for group, budget in enumerate(budgets):
                if mode == "GD":
                    lowest_layers = [min(pattern_layers(pattern, num_layers, budget))]
                else:
                    try:
                        lowest_layers = [min(sample_layers(rng, weights, budget)) for _ in range(RGD_DRAWS)]
                    except ValueError:
                        rows.append([f"{mode}-{pattern}", f"{group} (k={budget})", "-", "-", "-"])
                        continue
                costs = np.array([interpolate(grid, lowest, full) for lowest in lowest_layers])
                time_ratio, memory_ratio = costs.mean(0)
                ratios[(mode, pattern, budget)] = (time_ratio, memory_ratio)
                rows.append(
                    [
                        f"{mode}-{pattern}",
                        f"{group} (k={budget})",
                        f"{np.mean(lowest_layers):.1f}",
                        f"{time_ratio:.2f}",
                        f"{memory_ratio:.2f}",
                    ]
                )
    headers = ["pattern", "group", "mean lowest layer", "step time x full", "activation x full"]
    return format_table(headers, rows), ratios


def run_model(kind: str, args, device: torch.device) -> None:
    federated = load_minilm(device) if kind == "minilm" else build_decoder(device)
    federated.model.train()
    num_layers = federated.layer_map.num_layers
    k = args.layers_trained or num_layers // 2
    if not 1 <= k <= num_layers:
        raise SystemExit(f"--layers-trained must be in 1..{num_layers}")
    length = args.length if kind == "minilm" else args.decoder_length
    batch_size = args.batch_size if kind == "minilm" else args.decoder_batch_size
    setups = build_setups(federated, k)
    grid_step = args.grid or max(1, num_layers // 10)
    grid_points = sorted(set(range(0, num_layers, grid_step)) | {num_layers - 1, num_layers - k})
    grid = {
        lowest: setup
        for lowest, setup in suffix_setups(federated, grid_points).items()
        if lowest not in (0, num_layers - k)
    }
    batch = {
        key: value.to(device)
        for key, value in random_batch(federated.model.config.vocab_size, batch_size, length).items()
    }
    measure(federated, setups + list(grid.values()), batch, args)
    full, top, reference, _bottom, no_dropout = setups
    grid[0], grid[num_layers - k] = full, top

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    title = "MiniLM-L6 (offline weights)" if kind == "minilm" else "random-init decoder of SmolLM2-135M's shape"
    print(
        f"## {title}: {num_layers} layers, LoRA rank {ExperimentConfig().lora.rank}, "
        f"batch {batch_size} x {length} tokens, "
        f"device {name}, {args.repeats} x {args.steps} timed steps per setup, interleaved"
    )
    full_ms = 1000 * median(full.times_s)
    headers = ["setup", "trainable params", "ms/step", "x full", "activation MiB", "x full"]
    if device.type == "cuda":
        headers += ["CUDA step peak MiB", "x full"]
    rows = []
    parameters = federated.parameters_by_name()
    for setup in setups:
        ms = 1000 * median(setup.times_s)
        updated = sum(
            parameters[n].numel() for n in federated.layer_map.names_for(setup.layers) + list(federated.head_names)
        )
        row = [
            setup.name,
            f"{updated:,}",
            f"{ms:.1f}",
            f"{ms / full_ms:.2f}",
            f"{setup.activation_bytes / 2**20:.1f}",
            f"{setup.activation_bytes / full.activation_bytes:.2f}",
        ]
        if device.type == "cuda":
            row += [
                f"{setup.cuda_step_peak_bytes / 2**20:.1f}",
                f"{setup.cuda_step_peak_bytes / full.cuda_step_peak_bytes:.2f}",
            ]
        rows.append(row)
    print(format_table(headers, rows))
    print(
        "trainable params: tensors updated with a real learning rate (LoRA of the allocated layers + head); "
        "the reference row also computes gradients for every other LoRA tensor."
    )
    table, _ = group_table(federated, grid, full)
    print(
        f"per capability group (budgets {resolve_budgets(GROUP_BUDGETS, num_layers)} layers), mean over the "
        "group's layer sets "
        f"(RGD: {RGD_DRAWS} draws), read off lowest-layer grid {sorted(grid)}:"
    )
    print(table)

    def ratio(setup: Setup) -> float:
        return median(setup.times_s) / median(full.times_s)

    print(f"RATIO {kind}_top_half_time {ratio(top):.2f}")
    print(f"RATIO {kind}_top_half_activation {top.activation_bytes / full.activation_bytes:.2f}")
    print(f"RATIO {kind}_lr0_time {ratio(reference):.2f}")
    print(f"RATIO {kind}_top_half_no_dropout_below_time {ratio(no_dropout):.2f}")
    print(f"MS {kind}_full_step {full_ms:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", choices=["minilm", "decoder"], default=["minilm", "decoder"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=64, help="tokens per example")
    parser.add_argument("--decoder-batch-size", type=int, default=4)
    parser.add_argument("--decoder-length", type=int, default=32, help="tokens per example for the decoder")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setup and repeat")
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed steps per setup = repeats x steps, one step per setup in turn"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setup first")
    parser.add_argument(
        "--layers-trained", type=int, default=None, help="k, the layers a partial client trains (default L/2)"
    )
    parser.add_argument("--grid", type=int, default=None, help="lowest-layer grid step (default L/10, at least 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    print("# Allocation-aware training: step time and activation memory against full training")
    print(machine_description())
    for kind in args.model:
        run_model(kind, args, device)


if __name__ == "__main__":
    main()
