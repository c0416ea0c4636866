"""A run's report — plots and summary.md — from its run directory alone (`fedhello report` reruns it)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from fedhello.outputs import plots
from fedhello.outputs.budget_accounting import budget_table
from fedhello.outputs.run_writer import METRICS_JSONL
from fedhello.outputs.summary import check_round_records, format_table, summary_table_rows, write_summary
from fedhello.records import ClientRecord
from fedhello.tasks import task_for

if TYPE_CHECKING:
    from fedhello.run_directory import RunDirectory


def group_cost_table(clients: list[ClientRecord], budgets: list[int]) -> str:
    """Mean per-client cost by capability group: where the heterogeneous savings show."""
    rows = []
    for group, budget in enumerate(budgets):
        trained = [record for record in clients if record.group == group and record.local_steps > 0]
        if not trained:
            continue
        steps = sum(record.local_steps for record in trained)
        rows.append(
            [
                group,
                budget,
                len(trained),
                float(np.mean([len(record.layers) for record in trained])),
                float(np.mean([record.trainable_params for record in trained])),
                1000 * sum(record.wall_time_s for record in trained) / steps,
                float(np.mean([record.activation_bytes for record in trained])) / 2**20,
                float(np.mean([record.bytes_up for record in trained])) / 2**10,
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


def write_run_report(run_dir: RunDirectory) -> str:
    """Plots and summary.md of a run, from its files alone; returns the result table."""
    config = run_dir.config()
    info = run_dir.info()
    num_layers, budgets = info.num_layers, info.group_budgets
    memory = info.group_memory_bytes or [None] * len(budgets)
    clients = run_dir.clients()
    rounds = run_dir.rounds()
    check_round_records(rounds, run_dir.checkpointed_round(), run_dir / METRICS_JSONL)
    fisher = run_dir.fisher()  # every record is read (and checked) before anything is rewritten
    allocations = run_dir.allocations()
    headline = task_for(config.model.task).headline_metric
    if config.output.plots:
        plots.plot_learning_curves(rounds, run_dir / "learning_curves.png", headline)
        plots.plot_allocation_heatmap(allocations, num_layers, run_dir / "allocation_heatmap.png")
        plots.plot_layer_counts(allocations, num_layers, run_dir / "layer_counts.png")
        plots.plot_fisher_scores(fisher, run_dir / "fisher_scores.png")
        plots.plot_partition(run_dir.partition(), run_dir / "partition.png")
    status = run_dir.status()
    state = status.get("status") if status is not None else None
    incomplete = state is not None and state != "complete"
    final_eval = rounds[-1].eval if rounds and not incomplete else None
    headers, rows = summary_table_rows(rounds, final_eval, headline)
    budgets_by_group = budget_table(clients, config.groups.budgets, budgets, memory)
    if incomplete:
        rows.insert(
            0,
            [
                "run status",
                f"INCOMPLETE ({state}): {len(rounds)} of "
                f"{config.federation.rounds} rounds; continue with `fedhello resume {run_dir.path}`",
            ],
        )
    params = json.dumps(config.allocation.params) if config.allocation.params else ""
    config_lines = [
        f"model `{config.model.name}` ({num_layers} layers), LoRA rank {config.lora.rank}, "
        f"dataset `{config.data.dataset}`",
        f"{config.federation.num_clients} clients, {config.federation.clients_per_round} per round, "
        f"{config.federation.rounds} rounds, partition `{config.partition.scheme}`",
        f"strategy `{config.allocation.strategy}` {params}, groups ratio {config.groups.ratio} "
        f"with layer budgets {budgets}",
        f"seed {config.seed}, device {info.device}, engine {info.engine}",
    ]
    write_summary(
        run_dir / "summary.md",
        title=f"fedhello run: {config.name}" + (" (INCOMPLETE)" if incomplete else ""),
        config_lines=config_lines,
        final_eval=final_eval,
        rounds=rounds,
        headline=headline,
        extra_sections={
            "Cost per capability group": group_cost_table(clients, budgets),
            "Budgets per capability group": budgets_by_group,
        },
    )
    return format_table(headers, rows) + "\n\nBudgets per capability group:\n" + budgets_by_group
