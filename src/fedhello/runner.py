"""Driver for one experiment: prepare data and model, run the simulator, write the run directory.

Everything that can reject the configuration (including checks that need the data or
the model, such as budgets against the number of layers) runs before the run
directory is created, so a bad config leaves nothing half-written.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from fedhello.allocation.groups import resolve_budgets
from fedhello.allocation.registry import build_strategy
from fedhello.config import ExperimentConfig, config_to_yaml, load_config
from fedhello.data.datasets import ImageClassificationData, load_dataset
from fedhello.data.images import image_split
from fedhello.data.partition import partition_indices, partition_summary
from fedhello.data.tokenize import encode_texts
from fedhello.errors import ConfigError
from fedhello.models.classifier import load_classifier
from fedhello.outputs import RunWriter, plots
from fedhello.outputs.run_writer import read_jsonl
from fedhello.outputs.summary import format_table, summary_table_rows, write_summary
from fedhello.seeding import numpy_rng
from fedhello.simulation import FederatedTask, SimulationResult, Simulator


def select_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config field 'device': 'cuda' was requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _check_against_data(config: ExperimentConfig, num_train: int, num_classes: int) -> None:
    federation, partition = config.federation, config.partition
    if partition.scheme == "pathological" and partition.classes_per_client > num_classes:
        raise ConfigError(
            f"config field 'partition.classes_per_client': {partition.classes_per_client} exceeds the "
            f"{num_classes} classes of {config.data.dataset}"
        )
    if federation.num_clients > num_train:
        raise ConfigError(f"config field 'federation.num_clients': {federation.num_clients} exceeds {num_train} training samples")


def _capped(size: int, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """All positions, or a seeded sorted subsample of `cap` of them."""
    if cap is None or cap >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, cap, replace=False))


def prepare_task(config: ExperimentConfig) -> FederatedTask:
    """Load data and model, split off the proxy set, partition the rest among clients."""
    data = load_dataset(config.data.dataset)
    train_positions = _capped(len(data.train_labels), config.data.max_train_samples, numpy_rng(config.seed, "partition", 1))
    test_positions = _capped(len(data.test_labels), config.data.max_test_samples, numpy_rng(config.seed, "eval", 1))
    proxy_size = config.fisher.proxy_size
    if proxy_size >= len(train_positions):
        raise ConfigError(f"config field 'fisher.proxy_size': {proxy_size} leaves no training data for the clients")
    shuffled = numpy_rng(config.seed, "proxy").permutation(train_positions)
    proxy_positions, client_positions = np.sort(shuffled[:proxy_size]), np.sort(shuffled[proxy_size:])
    _check_against_data(config, len(client_positions), data.num_classes)

    images = isinstance(data, ImageClassificationData)
    if images != (config.model.task == "image_classification"):
        raise ConfigError(
            f"config field 'model.task': {config.model.task} does not fit dataset {config.data.dataset!r} "
            f"({'images' if images else 'texts'})"
        )
    device = select_device(config.device)
    federated = load_classifier(config, data.num_classes, device)
    resolve_budgets(config.groups.budgets, federated.layer_map.num_layers)

    def encode(split: str, positions: np.ndarray):
        labels = getattr(data, f"{split}_labels")[positions]
        if images:
            num_channels = federated.model.get_base_model().config.num_channels
            return image_split(getattr(data, f"{split}_images")[positions], labels, federated.preprocessor, num_channels)
        texts = getattr(data, f"{split}_texts")
        return encode_texts(federated.preprocessor, [texts[i] for i in positions], labels, config.model.max_length)

    train = encode("train", client_positions)
    test = encode("test", test_positions)
    proxy = encode("train", proxy_positions) if proxy_size else None
    partition = config.partition
    client_indices = partition_indices(
        train.labels.numpy(),
        config.federation.num_clients,
        partition.scheme,
        numpy_rng(config.seed, "partition"),
        classes_per_client=partition.classes_per_client,
        min_per_client=partition.min_per_client,
        alpha=partition.alpha,
    )
    return FederatedTask(federated, train, test, proxy, client_indices, data.label_names)


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.name}-{config.allocation.strategy}"


def claim_run_dir(path: Path) -> Path:
    if (path / "metrics.jsonl").exists():
        raise ConfigError(f"config field 'output.dir': {path} already holds a run; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_partition(out_dir: Path, task: FederatedTask, client_groups: np.ndarray, budgets: list[int]) -> None:
    summary = partition_summary(task.train.labels.numpy(), task.client_indices, len(task.label_names))
    with (out_dir / "partition.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["client", "group", "layer_budget", "num_samples", "num_classes", *task.label_names])
        for row in summary:
            group = int(client_groups[row["client"]])
            writer.writerow([row["client"], group, budgets[group], row["num_samples"], row["num_classes"], *row["class_counts"]])


def group_cost_table(clients: list[dict], budgets: list[int]) -> str:
    """Mean per-client cost by capability group: where the heterogeneous savings show."""
    rows = []
    for group, budget in enumerate(budgets):
        trained = [r for r in clients if r["group"] == group and r["local_steps"] > 0]
        if not trained:
            continue
        steps = sum(r["local_steps"] for r in trained)
        rows.append([
            group,
            budget,
            len(trained),
            float(np.mean([len(r["layers"]) for r in trained])),
            float(np.mean([r["trainable_params"] for r in trained])),
            1000 * sum(r["wall_time_s"] for r in trained) / steps,
            float(np.mean([r["activation_bytes"] for r in trained])) / 2**20,
            float(np.mean([r["bytes_up"] for r in trained])) / 2**10,
        ])
    headers = ["group", "budget", "client-rounds", "mean layers", "mean trainable params", "ms / step",
               "activation MiB", "upload KiB"]
    return format_table(headers, rows)


def _read_partition(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return [
        {"client": int(row[0]), "num_samples": int(row[3]), "num_classes": int(row[4]),
         "class_counts": [int(count) for count in row[5:]]}
        for row in rows[1:]
    ]


def write_run_report(out_dir: Path) -> str:
    """Plots and summary.md of a run, from its files alone; returns the result table."""
    config = load_config(path=out_dir / "config.yaml")
    info = json.loads((out_dir / "run_info.json").read_text())
    num_layers, budgets = info["num_layers"], info["group_budgets"]
    rounds = read_jsonl(out_dir / "metrics.jsonl")
    clients = read_jsonl(out_dir / "clients.jsonl")
    allocations = read_jsonl(out_dir / "allocations.jsonl")
    if config.output.plots:
        plots.plot_learning_curves(rounds, out_dir / "learning_curves.png")
        plots.plot_allocation_heatmap(allocations, num_layers, out_dir / "allocation_heatmap.png")
        plots.plot_layer_counts(allocations, num_layers, out_dir / "layer_counts.png")
        plots.plot_fisher_scores(read_jsonl(out_dir / "fisher.jsonl"), out_dir / "fisher_scores.png")
        plots.plot_partition(_read_partition(out_dir / "partition.csv"), out_dir / "partition.png")
    final_eval = rounds[-1].get("eval") if rounds else None
    headers, rows = summary_table_rows(rounds, final_eval)
    config_lines = [
        f"model `{config.model.name}` ({num_layers} layers), LoRA rank {config.lora.rank}, dataset `{config.data.dataset}`",
        f"{config.federation.num_clients} clients, {config.federation.clients_per_round} per round, "
        f"{config.federation.rounds} rounds, partition `{config.partition.scheme}`",
        f"strategy `{config.allocation.strategy}` {json.dumps(config.allocation.params) if config.allocation.params else ''}, "
        f"groups ratio {config.groups.ratio} with layer budgets {budgets}",
        f"seed {config.seed}, device {info['device']}",
    ]
    write_summary(
        out_dir / "summary.md",
        title=f"fedhello run: {config.name}",
        config_lines=config_lines,
        final_eval=final_eval,
        rounds=rounds,
        extra_sections={"Cost per capability group": group_cost_table(clients, budgets)},
    )
    return format_table(headers, rows)


@dataclass
class RunOutcome:
    out_dir: Path
    result: SimulationResult
    summary_table: str


def run_experiment(config: ExperimentConfig, out_dir: Path | None = None) -> RunOutcome:
    strategy = build_strategy(config.allocation.strategy, config.allocation.params)
    task = prepare_task(config)
    out_dir = claim_run_dir(Path(out_dir or config.output.dir or default_run_dir(config)))
    (out_dir / "config.yaml").write_text(config_to_yaml(config))

    progress = tqdm(total=config.federation.rounds, desc="rounds", unit="round", disable=not config.output.progress)

    def show(record: dict) -> None:
        shown = {"loss": f"{record['train_loss']:.3f}"} if record["train_loss"] is not None else {}
        if "eval" in record:
            shown["acc"] = f"{record['eval']['accuracy']:.3f}"
            progress.write(
                f"round {record['round']:>4}  train loss {record['train_loss'] or float('nan'):.4f}  "
                f"{record['eval']['split']} accuracy {record['eval']['accuracy']:.4f}  macro-F1 {record['eval']['macro_f1']:.4f}"
            )
        progress.set_postfix(shown)
        progress.update(1)

    with RunWriter(out_dir, tensorboard=config.output.tensorboard) as writer:
        simulator = Simulator(config, task, strategy, writer, on_round=show)
        write_partition(out_dir, task, simulator.client_groups, simulator.group_budgets)
        (out_dir / "run_info.json").write_text(json.dumps({
            "num_layers": task.federated.layer_map.num_layers,
            "group_budgets": simulator.group_budgets,
            "device": str(task.federated.device),
        }))
        result = simulator.run()
        progress.close()
    save_file({name: tensor.contiguous().cpu() for name, tensor in result.global_state.items()}, out_dir / "adapter.safetensors")
    table = write_run_report(out_dir)
    return RunOutcome(out_dir, result, table)
