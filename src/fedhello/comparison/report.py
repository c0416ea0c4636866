"""Tables and plots of a comparison grid, computed from the runs' files alone.

Everything is computed for the comparison's endpoint (`fedhello.comparison.endpoints`):
accuracy for classification, the held-out loss for instruction tuning (lower is better), or
the one the comparison names. Per run: its best (the lowest for a lower-is-better
endpoint), final and late value (the mean over the evaluations in the last quarter of the
rounds: a single round's accuracy swings by several points under extreme label skew, the
late mean much less), the final value of the task's other metrics (macro-F1; perplexity and
ROUGE-L), the first round reaching the target accuracy, total bytes communicated, total
client compute time, peak client activation memory and per-layer training counts. Per
(method, partition, ratio): mean and sample standard deviation (ddof=1) over seeds. With a
`reference_method`: each method's mean paired difference (method − reference) to it (late
and final endpoint) over the seeds both ran (same partition, groups and sampling), with a
95% paired-t confidence interval. Per capability group: the global model's final accuracy
(or, for instruction tuning, held-out loss) on the test samples of the classes (categories)
that group's clients hold, the group's mean trainable parameters per client-round, and its
realised peak training memory (activations saved for backward + gradients and AdamW state of
the trained tensors; the quantity a memory budget bounds).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy import stats

from fedhello.comparison.endpoints import ENDPOINTS, TARGET_FIELD, Endpoint, comparison_endpoint
from fedhello.comparison.grid import Cell, is_complete
from fedhello.errors import ConfigError
from fedhello.outputs.budget_accounting import realised_peak_bytes
from fedhello.outputs.summary import format_table
from fedhello.records import ClientRecord, EvalResult
from fedhello.run_directory import PARTITION_FILE, RunDirectory
from fedhello.tasks import task_for

COST_METRICS = ("total_bytes", "client_time_s", "peak_activation_mib")


@dataclass(frozen=True)
class ReportLayout:
    """What a comparison of one task's runs tabulates: its endpoint among the task's metrics."""

    endpoint: Endpoint
    metrics: tuple[str, ...]  # the task's comparison metrics

    @classmethod
    def of(
        cls,
        task_kind: str,
        endpoint: str | None,
        target_accuracy: float | None = None,
        target_source: str = TARGET_FIELD,
    ) -> ReportLayout:
        chosen = comparison_endpoint(task_kind, endpoint, target_accuracy, target_source)
        return cls(chosen, task_for(task_kind).comparison_metrics)

    @property
    def score_columns(self) -> list[tuple[str, str]]:
        """(statistic, metric): best, final and late endpoint, then the final value of each other metric."""
        name = self.endpoint.metric
        return [("best", name), ("final", name), ("late", name)] + [
            ("final", metric) for metric in self.metrics if metric != name
        ]

    @property
    def score_names(self) -> list[str]:
        return [f"{statistic}_{metric}" for statistic, metric in self.score_columns]

    @property
    def has_target(self) -> bool:
        return "accuracy" in self.metrics

    @property
    def group_endpoint(self) -> Endpoint:
        """Per capability group: accuracy on its classes, or (instruction tuning) held-out loss on its categories."""
        return ENDPOINTS["accuracy" if self.has_target else "loss"]


@dataclass
class RunMetrics:
    method: str
    partition: str
    ratio: str | None
    seed: int
    scores: dict[str, float | None]  # ReportLayout.score_names -> value (None: the runs did not report it)
    rounds_to_target: int | None
    total_bytes: int
    client_time_s: float
    peak_activation_mib: float
    eval_rounds: list[int]
    eval_values: list[float]  # the endpoint at each evaluation
    cumulative_bytes: list[int]
    layer_counts: list[int]
    group_metric: list[float | None]  # ReportLayout.group_endpoint on each capability group's classes
    group_trainable_params: list[float | None]
    group_peak_mib: list[float | None]

    @property
    def group(self) -> tuple[str, str, str | None]:
        return (self.method, self.partition, self.ratio)

    def row(self, layout: ReportLayout) -> dict[str, Any]:
        """The run's line of runs.csv."""
        return {
            "method": self.method,
            "partition": self.partition,
            "ratio": self.ratio,
            "seed": self.seed,
            **self.scores,
            **({"rounds_to_target": self.rounds_to_target} if layout.has_target else {}),
            **{name: getattr(self, name) for name in COST_METRICS},
        }


def _metric_series(run_dir: Path, evaluated: list[tuple[int, EvalResult]], metric: str) -> list[float]:
    values = [getattr(evaluation, metric) for _, evaluation in evaluated]
    if any(value is None for value in values):
        raise ConfigError(
            f"comparison field 'endpoint': {run_dir} did not record {metric} at every evaluation; choose another"
        )
    return [float(value) for value in values]


def run_metrics(run_dir: Path, target_accuracy: float | None, layout: ReportLayout) -> RunMetrics:
    cell = Cell.read(run_dir)
    records = RunDirectory(run_dir)
    rounds = records.rounds()
    clients = records.clients()
    evaluated = [(r.round, r.eval) for r in rounds if r.eval is not None]
    eval_rounds = [r for r, _ in evaluated]
    endpoint = layout.endpoint
    values = _metric_series(run_dir, evaluated, endpoint.metric)
    cumulative = np.cumsum([r.bytes_down + r.bytes_up for r in rounds])
    reached = [
        round_number
        for round_number, evaluation in evaluated
        if target_accuracy is not None and float(evaluation.accuracy or 0.0) >= target_accuracy
    ]
    final_eval = evaluated[-1][1]
    scores: dict[str, float | None] = {}
    for statistic, metric in layout.score_columns:
        if metric != endpoint.metric:
            value = getattr(final_eval, metric)
            scores[f"final_{metric}"] = None if value is None else float(value)
        elif statistic == "best":
            scores[f"best_{metric}"] = min(values) if endpoint.lower_is_better else max(values)
        else:
            scores[f"{statistic}_{metric}"] = values[-1] if statistic == "final" else late_mean(eval_rounds, values)
    classes = group_classes(run_dir)
    group_metric = group_accuracies(classes, final_eval) if layout.has_target else group_losses(classes, final_eval)
    num_groups = max([len(classes)] + [c.group + 1 for c in clients])
    return RunMetrics(
        method=cell.method,
        partition=cell.partition,
        ratio=cell.ratio,
        seed=cell.seed,
        scores=scores,
        rounds_to_target=reached[0] if reached else None,
        total_bytes=int(cumulative[-1]),
        client_time_s=float(sum(c.wall_time_s for c in clients)),
        peak_activation_mib=max(c.activation_bytes for c in clients) / 2**20,
        eval_rounds=eval_rounds,
        eval_values=values,
        cumulative_bytes=[int(cumulative[r - 1]) for r in eval_rounds],
        layer_counts=np.sum([r.layer_counts for r in rounds], axis=0).astype(int).tolist(),
        group_metric=group_metric,
        group_trainable_params=group_trainable_params(clients, num_groups),
        group_peak_mib=group_peak_mib(clients, num_groups),
    )


LATE_FRACTION = 0.25


def late_mean(rounds: list[int], accuracies: list[float]) -> float:
    """Mean accuracy of the evaluations after the first (1 - LATE_FRACTION) of the rounds (the final one included)."""
    last_round = rounds[-1]
    late = [accuracy for r, accuracy in zip(rounds, accuracies, strict=True) if r > (1 - LATE_FRACTION) * last_round]
    return float(np.mean(late))


def group_classes(run_dir: Path) -> list[set[int]]:
    """The classes (instruction categories) each capability group's clients hold (partition.csv)."""
    if not (run_dir / PARTITION_FILE).exists():
        return []
    groups: dict[int, set[int]] = defaultdict(set)
    for row in RunDirectory(run_dir).partition():
        groups[row["group"]] |= {label for label, count in enumerate(row["class_counts"]) if count > 0}
    return [groups.get(group, set()) for group in range(max(groups) + 1)] if groups else []


def _pooled(numerator: list, denominator: list, classes: set[int]) -> float | None:
    """sum(numerator) / sum(denominator) over `classes` (None if they hold nothing)."""
    held = [label for label in classes if label < len(denominator)]
    total = sum(denominator[label] for label in held)
    return sum(numerator[label] for label in held) / total if total else None


def group_accuracies(classes: list[set[int]], final_eval: EvalResult) -> list[float | None]:
    """Final accuracy on the test samples of the classes held by each capability group's clients (`group_classes`)."""
    correct, total = final_eval.class_correct, final_eval.class_total
    if correct is None or total is None:
        return []
    return [_pooled(correct, total, held) for held in classes]


def group_losses(classes: list[set[int]], final_eval: EvalResult) -> list[float | None]:
    """Final held-out loss per answer token on the test pairs of the categories each group's clients hold."""
    loss, tokens = final_eval.class_loss, final_eval.class_tokens
    if loss is None or tokens is None:
        return []
    return [_pooled(loss, tokens, held) for held in classes]


def _per_group(clients: list[ClientRecord], num_groups: int, value, reduce) -> list[float | None]:
    """`reduce` of `value(client record)` over each of `num_groups` capability groups' trained client-rounds."""
    result: list[float | None] = []
    for group in range(num_groups):
        trained = [value(c) for c in clients if c.group == group and c.local_steps > 0]
        result.append(float(reduce(trained)) if trained else None)
    return result


def group_trainable_params(clients: list[ClientRecord], num_groups: int) -> list[float | None]:
    """Mean trainable parameters per trained client-round, by capability group."""
    return _per_group(clients, num_groups, lambda c: c.trainable_params, np.mean)


def group_peak_mib(clients: list[ClientRecord], num_groups: int) -> list[float | None]:
    """Largest realised training memory (activations + gradient/AdamW state) of a trained client-round, by group."""
    return _per_group(clients, num_groups, lambda c: realised_peak_bytes(c) / 2**20, max)


def paired_t_interval(differences: list[float], confidence: float = 0.95) -> dict:
    """Mean of paired differences, its two-sided `confidence` interval (Student t, n - 1 df) and p-value."""
    values = np.asarray(differences, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None, "p": None, "significant": False}
    sem = float(values.std(ddof=1)) / np.sqrt(n)
    if sem == 0:
        low = high = mean
        p = 0.0 if mean != 0 else 1.0
    else:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem
        low, high = mean - half, mean + half
        p = float(2 * stats.t.sf(abs(mean) / sem, n - 1))
    return {"n": n, "mean": mean, "low": low, "high": high, "p": p, "significant": bool(low > 0 or high < 0)}


def paired_differences(runs: list[RunMetrics], reference: str, metric: str = "final_accuracy") -> list[dict]:
    """Per (method, partition, ratio): `metric` minus the reference method's on the same seeds."""
    by_cell = {
        (run.method, run.partition, run.ratio, run.seed): value
        for run in runs
        if (value := run.scores.get(metric)) is not None
    }
    rows = []
    for method, partition, ratio in dict.fromkeys(run.group for run in runs):
        if method == reference:
            continue
        seeds = sorted(
            seed
            for (m, p, r, seed) in by_cell
            if (m, p, r) == (method, partition, ratio) and (reference, partition, ratio, seed) in by_cell
        )
        if not seeds:
            continue
        differences = [
            by_cell[(method, partition, ratio, s)] - by_cell[(reference, partition, ratio, s)] for s in seeds
        ]
        rows.append(
            {
                "method": method,
                "partition": partition,
                "ratio": ratio or "",
                "reference": reference,
                "metric": metric,
                **paired_t_interval(differences),
            }
        )
    return rows


def paired_table(rows: list[dict], endpoint: Endpoint = ENDPOINTS["accuracy"]) -> str:
    """Differences (in points for a percentage); * marks a 95% interval that excludes zero."""
    unit = "points" if endpoint.scale == 100 else f"{endpoint.short}; {endpoint.direction}"
    headers = [
        "method",
        "partition",
        "ratio",
        "paired seeds",
        f"Δ vs {rows[0]['reference']} ({unit})",
        "95% CI",
        "p",
        "",
    ]

    def signed(value: float) -> str:
        return f"{endpoint.scale * value:+.{endpoint.paired_digits}f}"

    body = []
    for row in rows:
        interval = "n/a (one seed)" if row["low"] is None else f"[{signed(row['low'])}, {signed(row['high'])}]"
        p = "" if row["p"] is None else f"{row['p']:.3f}"
        body.append(
            [
                row["method"],
                row["partition"],
                row["ratio"],
                row["n"],
                signed(row["mean"]),
                interval,
                p,
                "*" if row["significant"] else "",
            ]
        )
    return format_table(headers, body)


def _seed_values(runs: list[RunMetrics], per_group: str, group: int) -> list[float]:
    """One group's entry of the per-group list `per_group` of every run that has it."""
    values = (getattr(run, per_group) for run in runs)
    return [value[group] for value in values if group < len(value) and value[group] is not None]


def group_table(runs: list[RunMetrics], endpoint: Endpoint = ENDPOINTS["accuracy"]) -> str:
    """Per method: each group's `endpoint` on its classes, trainable parameters and realised peak memory."""
    num_groups = max((len(run.group_metric) for run in runs), default=0)
    if num_groups == 0:
        return ""
    members: dict[tuple, list[RunMetrics]] = defaultdict(list)
    for run in runs:
        members[run.group].append(run)
    columns = (  # (per-group field, header, summary over seeds)
        ("group_metric", f"{endpoint.short}{endpoint.unit}", lambda v: endpoint.mean_std(*mean_std(v))),
        ("group_trainable_params", "trainable params", lambda v: f"{np.mean(v):,.0f}"),
        ("group_peak_mib", "peak MiB", lambda v: f"{max(v):,.1f}"),
    )
    headers = [
        "method",
        "partition",
        "ratio",
        *[f"group {g} {header}" for _, header, _ in columns for g in range(num_groups)],
    ]
    body = []
    for (method, partition, ratio), group_runs in members.items():
        cells = []
        for field, _, summary in columns:
            for g in range(num_groups):
                values = _seed_values(group_runs, field, g)
                cells.append(summary(values) if values else "—")
        body.append([method, partition, ratio or "", *cells])
    return format_table(headers, body)


def completed_runs(grid_dir: Path) -> list[Path]:
    return [run_dir for run_dir in sorted((grid_dir / "runs").glob("*")) if is_complete(run_dir)]


def collect_runs(
    run_dirs: list[Path], target_accuracy: float | None, layout: ReportLayout, method_order: list[str] | None = None
) -> list[RunMetrics]:
    """The completed runs, ordered by the comparison's method order, then partition, ratio and seed."""
    runs = [run_metrics(run_dir, target_accuracy, layout) for run_dir in run_dirs]
    order = {method: index for index, method in enumerate(method_order or [])}
    return sorted(
        runs, key=lambda run: (order.get(run.method, len(order)), run.method, run.partition, run.ratio or "", run.seed)
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise(runs: list[RunMetrics], layout: ReportLayout) -> list[dict]:
    """One row per (method, partition, ratio), in first-seen order; a metric no run reported is None."""
    groups: dict[tuple, list[RunMetrics]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    rows = []
    for (method, partition, ratio), members in groups.items():
        row: dict = {"method": method, "partition": partition, "ratio": ratio or "", "seeds": len(members)}
        for metric in layout.score_names:
            values = [value for run in members if (value := run.scores[metric]) is not None]
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(values) if values else (None, None)
        for metric in COST_METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([getattr(run, metric) for run in members])
        if layout.has_target:
            reached = [run.rounds_to_target for run in members if run.rounds_to_target is not None]
            row["rounds_to_target_mean"] = float(np.mean(reached)) if reached else None
            row["target_reached"] = f"{len(reached)}/{len(members)}"
        rows.append(row)
    return rows


def _pm(row: dict, metric: str, scale: float = 1.0, digits: int = 2) -> str:
    return f"{row[f'{metric}_mean'] * scale:.{digits}f} ± {row[f'{metric}_std'] * scale:.{digits}f}"


def markdown_table(rows: list[dict], target_accuracy: float | None, layout: ReportLayout) -> str:
    show_ratio = any(row["ratio"] for row in rows)
    target = (
        [f"rounds to {target_accuracy:.0%}" if target_accuracy else "rounds to target"] if layout.has_target else []
    )
    headers = [
        "method",
        "partition",
        *(["ratio"] if show_ratio else []),
        "seeds",
        *[
            f"{statistic} {ENDPOINTS[metric].short}{ENDPOINTS[metric].unit}"
            for statistic, metric in layout.score_columns
        ],
        *target,
        "MB communicated",
        "client compute s",
        "peak activation MiB",
    ]
    body = []
    for row in rows:
        scores = [
            "—" if row[f"{name}_mean"] is None else ENDPOINTS[metric].mean_std(row[f"{name}_mean"], row[f"{name}_std"])
            for name, (_, metric) in zip(layout.score_names, layout.score_columns, strict=True)
        ]
        if layout.has_target:
            rounds = "—" if row["rounds_to_target_mean"] is None else f"{row['rounds_to_target_mean']:.1f}"
            scores.append(f"{rounds} ({row['target_reached']})")
        body.append(
            [
                row["method"],
                row["partition"],
                *([row["ratio"]] if show_ratio else []),
                row["seeds"],
                *scores,
                _pm(row, "total_bytes", 1e-6, 1),
                _pm(row, "client_time_s", 1, 0),
                f"{row['peak_activation_mib_mean']:.0f}",
            ]
        )
    return format_table(headers, body)


def write_csv(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _panels(runs: list[RunMetrics]) -> list[tuple[str, str | None]]:
    return list(dict.fromkeys((run.partition, run.ratio) for run in runs))


def _methods(runs: list[RunMetrics]) -> list[str]:
    return list(dict.fromkeys(run.method for run in runs))


def method_colors(runs: list[RunMetrics]) -> dict[str, tuple]:
    """Distinct colours for up to 20 methods (tab20), so no two methods share one."""
    palette = colormaps["tab20"]
    return {method: palette(index % 20) for index, method in enumerate(_methods(runs))}


def _band(members: list[RunMetrics]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    length = min(len(run.eval_rounds) for run in members)
    x = np.asarray(members[0].eval_rounds[:length], dtype=float)
    y = np.asarray([run.eval_values[:length] for run in members], dtype=float)
    return x, y.mean(0), y.std(0)


def plot_endpoint(runs: list[RunMetrics], path: Path, versus: str, endpoint: Endpoint) -> Path:
    """Mean endpoint with a ±1 std band over seeds, per method; one panel per partition/ratio."""
    panels = _panels(runs)
    figure = Figure(figsize=(6.5 * len(panels) + 1.8, 4.6))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    colors = method_colors(runs)
    for axis, (partition, ratio) in zip(axes, panels, strict=True):
        for method in colors:
            members = [r for r in runs if r.method == method and r.partition == partition and r.ratio == ratio]
            if not members:
                continue
            rounds, mean, std = _band(members)
            if versus == "round":
                x = rounds
            else:
                x = np.mean([run.cumulative_bytes[: len(mean)] for run in members], axis=0) / 1e6
            linestyle = "--" if method in ("full", "centralized", "local") else "-"
            axis.plot(x, mean, marker="o", markersize=3, color=colors[method], linestyle=linestyle, label=method)
            axis.fill_between(x, mean - std, mean + std, color=colors[method], alpha=0.15)
        axis.set_title(f"{partition}" + (f", RoC {ratio}" if ratio else ""))
        axis.set_xlabel("round" if versus == "round" else "MB communicated (down + up)")
        axis.set_ylabel(endpoint.axis)
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_layer_counts(runs: list[RunMetrics], path: Path) -> Path:
    """Mean per-layer training counts (client-rounds) per method, first partition/ratio."""
    partition, ratio = _panels(runs)[0]
    methods = [m for m in _methods(runs) if any(r.method == m for r in runs)]
    num_layers = len(runs[0].layer_counts)
    figure = Figure(figsize=(max(7.0, 0.6 * len(methods) * num_layers / 3), 4.2))
    axis = figure.subplots()
    width = 0.8 / len(methods)
    colors = method_colors(runs)
    for index, method in enumerate(methods):
        members = [r for r in runs if r.method == method and r.partition == partition and r.ratio == ratio]
        if not members:
            continue
        counts = np.mean([run.layer_counts for run in members], axis=0)
        axis.bar(
            np.arange(num_layers) + index * width - 0.4 + width / 2, counts, width, label=method, color=colors[method]
        )
    axis.set_xticks(range(num_layers))
    axis.set_xlabel("layer (0 = input side)")
    axis.set_ylabel("client-rounds that trained the layer")
    axis.set_title(f"Per-layer training counts ({partition})")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def write_report(grid_dir: Path, target_accuracy: float | None = None) -> str:
    """Regenerate comparison.md/.csv, runs.csv and the plots from the grid's run files."""
    saved = (
        yaml.safe_load((grid_dir / "comparison.yaml").read_text()) if (grid_dir / "comparison.yaml").exists() else {}
    )
    target_source = "report --target"
    if target_accuracy is None:
        target_accuracy = saved.get("target_accuracy")
        target_source = TARGET_FIELD
    method_order = [m if isinstance(m, str) else m["name"] for m in saved.get("methods", [])]
    run_dirs = completed_runs(grid_dir)
    if not run_dirs:
        raise FileNotFoundError(
            f"{grid_dir} holds no completed comparison runs (runs/*/cell.json, marked complete in status.json)"
        )
    layout = ReportLayout.of(
        RunDirectory(run_dirs[0]).config().model.task, saved.get("endpoint"), target_accuracy, target_source
    )
    endpoint = layout.endpoint
    runs = collect_runs(run_dirs, target_accuracy, layout, method_order)
    rows = summarise(runs, layout)
    table = markdown_table(rows, target_accuracy, layout)
    write_csv(rows, grid_dir / "comparison.csv")
    write_csv([run.row(layout) for run in runs], grid_dir / "runs.csv")
    plots = {versus: f"{endpoint.metric}_vs_{versus}.png" for versus in ("round", "bytes")}
    for versus, name in plots.items():
        plot_endpoint(runs, grid_dir / name, versus, endpoint)
    plot_layer_counts(runs, grid_dir / "layer_counts.png")
    reference = saved.get("reference_method")
    sections = ""
    if reference:
        late, final = (paired_differences(runs, reference, f"{stat}_{endpoint.metric}") for stat in ("late", "final"))
        if late:
            write_csv(late + final, grid_dir / "paired.csv")
            direction = (
                "; lower is better, so a negative difference favours the method" if endpoint.lower_is_better else ""
            )
            name = endpoint.name
            sections += (
                f"## Paired differences to `{reference}`\n\nMean over the seeds both methods ran of "
                f"(method − {reference}), in {endpoint.difference_unit}, with a 95% paired-t confidence interval; `*` "
                f"marks an interval that excludes zero{direction}. Late {name} (the mean over the evaluations in the "
                f"last quarter of the rounds) is the less noisy endpoint; final {name} is the last evaluation "
                "alone.\n\n"
                f"Late {name}:\n\n{paired_table(late, endpoint)}\n\n"
                f"Final {name}:\n\n{paired_table(final, endpoint)}\n\n"
            )
    group_endpoint = layout.group_endpoint
    groups = group_table(runs, group_endpoint)
    if groups:
        held = (
            "the test samples of the classes"
            if group_endpoint.metric == "accuracy"
            else "the test pairs of the categories"
        )
        sections += (
            f"## Per capability group\n\nFinal {group_endpoint.description} of the global model on {held} held "
            "by each group's clients (mean ± std over seeds), each group's mean trainable parameters per "
            "client-round (LoRA, plus the head when it is trained), and its realised peak training memory over all "
            "seeds (activations saved for backward + gradients and AdamW state of the trained tensors, what a "
            f"memory budget bounds).\n\n{groups}\n\n"
        )
    others = [ENDPOINTS[metric].description for metric in layout.metrics if metric != endpoint.metric]
    finals = f" The final value of {' and '.join(others)} is also shown." if not layout.has_target else ""
    best = "best evaluation over rounds (best" + (", the lowest)" if endpoint.lower_is_better else ")")
    (grid_dir / "comparison.md").write_text(
        f"# Comparison: {grid_dir.name}\n\nMean ± sample std over seeds; {endpoint.description} is the last "
        f"evaluation (final), the {best}, or the mean over the evaluations in the last quarter of the rounds "
        f"(late).{finals}\n\n{table}\n\n{sections}"
        f"![{endpoint.name} vs round]({plots['round']})\n\n![{endpoint.name} vs bytes]({plots['bytes']})\n\n"
        "![per-layer training counts](layer_counts.png)\n"
    )
    return f"{table}\n\n{sections}".rstrip()
