"""Driver for one experiment: prepare data and model, run an engine, write the run directory.

Everything that can reject the configuration (including checks that need the data or
the model, such as budgets against the number of layers) runs before the run
directory is created, so a bad config leaves nothing half-written. Every engine writes
the same run directory through `RunWriter` and `finish_run`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fedhello.allocation.registry import strategy_from_config
from fedhello.config import ExperimentConfig, config_to_yaml, load_config
from fedhello.data.partition import partition_summary
from fedhello.errors import ConfigError
from fedhello.federation.inprocess import build_inprocess_engine
from fedhello.federation.server import Server
from fedhello.outputs import RunWriter, plots
from fedhello.outputs.run_writer import read_jsonl
from fedhello.outputs.summary import format_table, summary_table_rows, write_summary
from fedhello.preparation import FederatedTask, prepare_task
from fedhello.records import EvalResult, RoundRecord
from fedhello.tensor_state import TensorState


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
    final_eval: EvalResult | None
    global_state: TensorState
    summary_table: str


def progress_reporter(config: ExperimentConfig) -> tuple[tqdm, Callable[[RoundRecord], None]]:
    """A progress bar over rounds and a callback that advances it and prints each evaluation."""
    progress = tqdm(total=config.federation.rounds, desc="rounds", unit="round", disable=not config.output.progress)

    def show(record: RoundRecord) -> None:
        shown = {"loss": f"{record.train_loss:.3f}"} if record.train_loss is not None else {}
        if record.dropped:
            shown["dropped"] = str(len(record.dropped))
        if record.eval is not None:
            shown["acc"] = f"{record.eval.accuracy:.3f}"
            loss = record.train_loss if record.train_loss is not None else float("nan")
            progress.write(
                f"round {record.round:>4}  train loss {loss:.4f}  "
                f"{record.eval.split} accuracy {record.eval.accuracy:.4f}  macro-F1 {record.eval.macro_f1:.4f}"
            )
        progress.set_postfix(shown)
        progress.update(1)

    return progress, show


def write_run_info(out_dir: Path, task: FederatedTask, server: Server, engine: str) -> None:
    write_partition(out_dir, task, server.client_groups, server.group_budgets)
    (out_dir / "run_info.json").write_text(json.dumps({
        "num_layers": server.num_layers,
        "group_budgets": server.group_budgets,
        "device": str(task.federated.device),
        "engine": engine,
    }))


def finish_run(out_dir: Path, global_state: TensorState) -> str:
    save_file({name: tensor.contiguous().cpu() for name, tensor in global_state.items()}, out_dir / "adapter.safetensors")
    return write_run_report(out_dir)


ENGINES = ("inprocess", "flower-sim", "flower-local")


def run_experiment(config: ExperimentConfig, out_dir: Path | None = None, engine: str = "inprocess") -> RunOutcome:
    """One experiment on the chosen engine, written to its run directory.

    inprocess: server and clients in this process; flower-sim: Flower's simulation engine;
    flower-local: a real Flower deployment (SuperLink + one SuperNode per client) on loopback.
    """
    if engine != "inprocess":
        return _run_on_flower(config, Path(out_dir or config.output.dir or default_run_dir(config)), engine)
    strategy = strategy_from_config(config)
    task = prepare_task(config)
    out_dir = claim_run_dir(Path(out_dir or config.output.dir or default_run_dir(config)))
    (out_dir / "config.yaml").write_text(config_to_yaml(config))
    progress, show = progress_reporter(config)
    with RunWriter(out_dir, tensorboard=config.output.tensorboard) as writer:
        engine = build_inprocess_engine(config, task, strategy, writer, on_round=show)
        server = engine.server
        write_run_info(out_dir, task, server, "inprocess")
        last = engine.run()
        progress.close()
    table = finish_run(out_dir, server.global_state)
    return RunOutcome(out_dir, last.eval if last else None, server.global_state, table)


def _run_on_flower(config: ExperimentConfig, out_dir: Path, engine: str) -> RunOutcome:
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError(f"engine {engine!r} needs Flower: pip install -e '.[flower]'") from None
    strategy_from_config(config)
    prepare_task(config)  # every config check that needs the data or the model, before anything starts
    if (out_dir / "metrics.jsonl").exists():
        raise ConfigError(f"config field 'output.dir': {out_dir} already holds a run; choose another --out")
    if engine == "flower-sim":
        from fedhello.flower.simulation import run_flower_simulation

        run_flower_simulation(config, out_dir)
    else:
        from fedhello.flower.deployment import run_local_deployment

        run_local_deployment(config, out_dir, out_dir / "flower")
    rounds = read_jsonl(out_dir / "metrics.jsonl")
    final = RoundRecord.from_json(rounds[-1]).eval if rounds else None
    headers, rows = summary_table_rows(rounds, rounds[-1].get("eval") if rounds else None)
    return RunOutcome(out_dir, final, load_file(out_dir / "adapter.safetensors"), format_table(headers, rows))
