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
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from fedhello.allocation.base import AllocationStrategy
from fedhello.allocation.registry import strategy_from_config
from fedhello.checkpoint import (
    is_complete,
    load_checkpoint,
    read_status,
    save_checkpoint,
    truncate_records,
    write_status,
)
from fedhello.config import ExperimentConfig, config_to_yaml, load_config
from fedhello.data.partition import partition_summary
from fedhello.errors import ConfigError, RunInterrupted
from fedhello.federation.client import Client
from fedhello.federation.inprocess import InProcessEngine, build_inprocess_engine
from fedhello.federation.server import Server
from fedhello.models.export import save_peft_adapter
from fedhello.models.federated_model import FederatedModel
from fedhello.outputs import RunWriter, plots
from fedhello.outputs.budget_accounting import budget_table
from fedhello.outputs.run_writer import read_jsonl
from fedhello.outputs.summary import format_table, summary_table_rows, write_summary
from fedhello.preparation import FederatedTask, prepare_task
from fedhello.records import METRIC_LABELS, EvalResult, RoundRecord
from fedhello.resources.probe import COST_FILE
from fedhello.tensor_state import TensorState


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{config.name}-{config.allocation.strategy}"


# What may already be in a directory a run claims: a comparison cell's label, Flower's node homes.
PRE_EXISTING = {"cell.json", "flower"}


def check_run_dir(path: Path) -> None:
    """Refuse a run directory that is a file, unwritable, another run, or a non-empty foreign folder."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config field 'output.dir': {path} is a file, not a directory; choose another --out")
    if path.is_dir():
        entries = {entry.name for entry in path.iterdir()}
        if "metrics.jsonl" in entries or "config.yaml" in entries:
            raise ConfigError(
                f"config field 'output.dir': {path} already holds a run; choose another --out "
                f"(or continue an interrupted one with `fedhello resume {path}`)"
            )
        if entries - PRE_EXISTING:
            raise ConfigError(
                f"config field 'output.dir': {path} is not empty and not a fedhello run directory; "
                "choose a new or empty --out"
            )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config field 'output.dir': cannot create {path} ({existing} is not a writable directory)")


def claim_run_dir(path: Path, rounds: int = 0) -> Path:
    """Create the run directory, marked as a running run (see `fedhello.checkpoint`)."""
    check_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"config field 'output.dir': cannot create {path} ({error.strerror})") from None
    write_status(path, "running", 0, rounds)
    return path


def write_partition(out_dir: Path, task: FederatedTask, client_groups: np.ndarray, budgets: list[int]) -> None:
    summary = partition_summary(task.train.classes.numpy(), task.client_indices, len(task.label_names))
    with (out_dir / "partition.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["client", "group", "layer_budget", "num_samples", "num_classes", *task.label_names])
        for row in summary:
            group = int(client_groups[row["client"]])
            writer.writerow(
                [row["client"], group, budgets[group], row["num_samples"], row["num_classes"], *row["class_counts"]]
            )


def group_cost_table(clients: list[dict], budgets: list[int]) -> str:
    """Mean per-client cost by capability group: where the heterogeneous savings show."""
    rows = []
    for group, budget in enumerate(budgets):
        trained = [r for r in clients if r["group"] == group and r["local_steps"] > 0]
        if not trained:
            continue
        steps = sum(r["local_steps"] for r in trained)
        rows.append(
            [
                group,
                budget,
                len(trained),
                float(np.mean([len(r["layers"]) for r in trained])),
                float(np.mean([r["trainable_params"] for r in trained])),
                1000 * sum(r["wall_time_s"] for r in trained) / steps,
                float(np.mean([r["activation_bytes"] for r in trained])) / 2**20,
                float(np.mean([r["bytes_up"] for r in trained])) / 2**10,
            ]
        )
    headers = [
        "group",
        "budget",
        "client-rounds",
        "mean layers",
        "mean trainable params",
        "ms / step",
        "activation MiB",
        "upload KiB",
    ]
    return format_table(headers, rows)


def _read_partition(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    return [
        {
            "client": int(row[0]),
            "num_samples": int(row[3]),
            "num_classes": int(row[4]),
            "class_counts": [int(count) for count in row[5:]],
        }
        for row in rows[1:]
    ]


def write_run_report(out_dir: Path) -> str:
    """Plots and summary.md of a run, from its files alone; returns the result table."""
    config = load_config(path=out_dir / "config.yaml")
    info = json.loads((out_dir / "run_info.json").read_text())
    num_layers, budgets = info["num_layers"], info["group_budgets"]
    memory = info.get("group_memory_bytes") or [None] * len(budgets)
    rounds = read_jsonl(out_dir / "metrics.jsonl")
    clients = read_jsonl(out_dir / "clients.jsonl")
    allocations = read_jsonl(out_dir / "allocations.jsonl")
    if config.output.plots:
        plots.plot_learning_curves(rounds, out_dir / "learning_curves.png")
        plots.plot_allocation_heatmap(allocations, num_layers, out_dir / "allocation_heatmap.png")
        plots.plot_layer_counts(allocations, num_layers, out_dir / "layer_counts.png")
        plots.plot_fisher_scores(read_jsonl(out_dir / "fisher.jsonl"), out_dir / "fisher_scores.png")
        plots.plot_partition(_read_partition(out_dir / "partition.csv"), out_dir / "partition.png")
    status = read_status(out_dir)
    incomplete = status is not None and status.get("status") != "complete"
    final_eval = rounds[-1].get("eval") if rounds and not incomplete else None
    headers, rows = summary_table_rows(rounds, final_eval)
    budgets_by_group = budget_table(clients, config.groups.budgets, budgets, memory)
    if incomplete:
        rows.insert(
            0,
            [
                "run status",
                f"INCOMPLETE ({status.get('status')}): {len(rounds)} of "
                f"{config.federation.rounds} rounds; continue with `fedhello resume {out_dir}`",
            ],
        )
    config_lines = [
        f"model `{config.model.name}` ({num_layers} layers), LoRA rank {config.lora.rank}, dataset "
        f"`{config.data.dataset}`",
        f"{config.federation.num_clients} clients, {config.federation.clients_per_round} per round, "
        f"{config.federation.rounds} rounds, partition `{config.partition.scheme}`",
        f"strategy `{config.allocation.strategy}` "
        f"{json.dumps(config.allocation.params) if config.allocation.params else ''}, "
        f"groups ratio {config.groups.ratio} with layer budgets {budgets}",
        f"seed {config.seed}, device {info['device']}",
    ]
    write_summary(
        out_dir / "summary.md",
        title=f"fedhello run: {config.name}" + (" (INCOMPLETE)" if incomplete else ""),
        config_lines=config_lines,
        final_eval=final_eval,
        rounds=rounds,
        extra_sections={
            "Cost per capability group": group_cost_table(clients, budgets),
            "Budgets per capability group": budgets_by_group,
        },
    )
    return format_table(headers, rows) + "\n\nBudgets per capability group:\n" + budgets_by_group


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
            for dropped in record.dropped:
                progress.write(f"round {record.round:>4}  client {dropped.client} excluded: {dropped.reason}")
        if record.status == "empty":
            progress.write(f"round {record.round:>4}  no update survived: the global model is unchanged")
        if record.eval is not None:
            metrics = record.eval.metrics()
            shown[METRIC_LABELS[record.eval.headline]] = f"{metrics[record.eval.headline]:.3f}"
            loss = "no client trained" if record.train_loss is None else f"train loss {record.train_loss:.4f}"
            shown_metrics = "  ".join(f"{METRIC_LABELS[name]} {value:.4f}" for name, value in metrics.items())
            progress.write(f"round {record.round:>4}  {loss}  {record.eval.split} {shown_metrics}")
        progress.set_postfix(shown)
        progress.update(1)

    return progress, show


def write_run_info(out_dir: Path, task: FederatedTask, server: Server, engine: str) -> None:
    write_partition(out_dir, task, server.client_groups, server.group_budgets)
    if task.costs is not None:
        task.costs.save(out_dir / COST_FILE)
    (out_dir / "run_info.json").write_text(
        json.dumps(
            {
                "num_layers": server.num_layers,
                "group_budgets": server.group_budgets,
                "group_memory_bytes": server.group_memory,
                "device": str(task.federated.device),
                "engine": engine,
            }
        )
    )


def finish_run(out_dir: Path, global_state: TensorState, federated: FederatedModel) -> str:
    """Save the final adapter (also in PEFT's format, `adapter/`), mark the run complete, write its report."""
    save_file(
        {name: tensor.contiguous().cpu() for name, tensor in global_state.items()}, out_dir / "adapter.safetensors"
    )
    save_peft_adapter(federated, global_state, out_dir / "adapter")
    rounds = load_config(path=out_dir / "config.yaml").federation.rounds
    write_status(out_dir, "complete", rounds, rounds)
    return write_run_report(out_dir)


ENGINES = ("inprocess", "flower-sim", "flower-local")


def run_experiment(config: ExperimentConfig, out_dir: Path | None = None, engine: str = "inprocess") -> RunOutcome:
    """One experiment on the chosen engine, written to its run directory.

    inprocess: server and clients in this process; flower-sim: Flower's simulation engine;
    flower-local: a real Flower deployment (SuperLink + one SuperNode per client) on loopback.
    """
    out_dir = Path(out_dir or config.output.dir or default_run_dir(config))
    if engine != "inprocess":
        return _run_on_flower(config, out_dir, engine)
    check_run_dir(out_dir)
    strategy = strategy_from_config(config)
    task = prepare_task(config, strategy_uses_costs=strategy.uses_costs)
    claim_run_dir(out_dir, config.federation.rounds)
    (out_dir / "config.yaml").write_text(config_to_yaml(config))
    return _run_inprocess(config, task, strategy, out_dir, resume=False)


def resume_experiment(run_dir: Path) -> RunOutcome:
    """Continue an interrupted in-process run from its last complete checkpoint."""
    config_path = run_dir / "config.yaml"
    if not run_dir.is_dir() or not config_path.is_file():
        raise ConfigError(f"{run_dir} is not a fedhello run directory (no config.yaml); nothing to resume")
    if is_complete(run_dir):
        raise ConfigError(f"{run_dir} is a complete run; nothing to resume (`fedhello report {run_dir}` shows it)")
    info = run_dir / "run_info.json"
    if info.exists() and json.loads(info.read_text()).get("engine", "inprocess") != "inprocess":
        raise ConfigError(f"{run_dir} was run on Flower; only in-process runs can be resumed")
    config = load_config(path=config_path)
    strategy = strategy_from_config(config)
    task = prepare_task(config, strategy_uses_costs=strategy.uses_costs, cost_cache=run_dir / COST_FILE)
    return _run_inprocess(config, task, strategy, run_dir, resume=True)


def _checkpoint(out_dir: Path, config_text: str, engine: InProcessEngine) -> None:
    clients = {client_id: client.state for client_id, client in engine.clients.items() if client.state}
    save_checkpoint(out_dir, config_text, engine.server.strategy.name, engine.server.state_dict(), clients)


def _run_inprocess(
    config: ExperimentConfig, task: FederatedTask, strategy: AllocationStrategy, out_dir: Path, resume: bool
) -> RunOutcome:
    config_text = (out_dir / "config.yaml").read_text()
    total = config.federation.rounds
    checkpoint = None
    if resume:
        layout_state = dict(task.layout().initial_state.items())
        checkpoint = load_checkpoint(out_dir, config_text, strategy.name, layout_state)
        truncate_records(out_dir, checkpoint.records if checkpoint else {})
    start = checkpoint.round if checkpoint else 0
    progress, show = progress_reporter(config)
    progress.update(start)
    try:
        with RunWriter(
            out_dir, tensorboard=config.output.tensorboard, resume_after=start if checkpoint else None
        ) as writer:
            engine = build_inprocess_engine(config, task, strategy, writer, on_round=show)
            server = engine.server
            if checkpoint is not None:
                server.load_state_dict(checkpoint.server)
                engine.clients.update({client: Client(client, state) for client, state in checkpoint.clients.items()})
            else:
                write_run_info(out_dir, task, server, "inprocess")
                _checkpoint(out_dir, config_text, engine)
            write_status(out_dir, "running", server.round, total)
            last = None
            while not server.finished:
                last = engine.run_round().record
                if server.round % config.checkpoint.every == 0 or server.finished:
                    writer.sync()
                    _checkpoint(out_dir, config_text, engine)
                    write_status(out_dir, "running", server.round, total)
            progress.close()
    except KeyboardInterrupt:
        progress.close()
        state = read_status(out_dir) or {}
        write_status(out_dir, "interrupted", int(state.get("round", 0)), total)
        raise RunInterrupted(
            f"interrupted; {out_dir} is checkpointed at round {state.get('round', 0)} of {total}. "
            f"Continue with: fedhello resume {out_dir}"
        ) from None
    except BaseException as error:
        state = read_status(out_dir) or {}
        write_status(out_dir, "failed", int(state.get("round", 0)), total, f"{type(error).__name__}: {error}")
        raise
    if last is None:  # resumed after the last round's checkpoint: the final records are already written
        rounds = read_jsonl(out_dir / "metrics.jsonl")
        last = RoundRecord.from_json(rounds[-1]) if rounds else None
    table = finish_run(out_dir, server.global_state, task.federated)
    return RunOutcome(out_dir, last.eval if last else None, server.global_state, table)


def _run_on_flower(config: ExperimentConfig, out_dir: Path, engine: str) -> RunOutcome:
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError(f"engine {engine!r} needs Flower: pip install -e '.[flower]'") from None
    check_run_dir(out_dir)
    strategy = strategy_from_config(config)
    prepare_task(
        config, strategy_uses_costs=strategy.uses_costs
    )  # every config check that needs the data or the model, before anything starts
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
