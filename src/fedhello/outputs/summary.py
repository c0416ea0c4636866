"""Markdown run summary and the result table shared with the terminal printout."""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

from fedhello.errors import ConfigError
from fedhello.records import HEADLINE_LABELS, METRIC_LABELS, EvalResult, RoundRecord, better

PLOT_FILES: tuple[tuple[str, str], ...] = (
    ("learning_curves.png", "Learning curves"),
    ("allocation_heatmap.png", "Layer allocation per round"),
    ("layer_counts.png", "Training count per layer"),
    ("fisher_scores.png", "Fisher scores"),
    ("partition.png", "Data partition"),
)


def format_cell(value: Any) -> str:
    """Format a table cell: ints as-is, floats with at most 4 decimals, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_table(headers: list[str], rows: list[list]) -> str:
    """Render a GitHub Markdown table; numeric columns are right-aligned."""
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}: {row!r}")

    def cell(v: Any) -> str:
        return format_cell(v).replace("|", "\\|").replace("\n", " ")

    def numeric(col: int) -> bool:
        vals = [r[col] for r in rows if r[col] is not None]
        return bool(vals) and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in vals)

    align = ["---:" if numeric(i) else "---" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_bytes(num_bytes: float) -> str:
    """Human-readable byte count in decimal units, e.g. ``12.35 MB``."""
    units = ("B", "kB", "MB", "GB", "TB")
    value, i = float(num_bytes), 0
    while abs(value) >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{value:.0f} B" if i == 0 else f"{value:.2f} {units[i]}"


def best_eval(rounds: list[RoundRecord], headline: str) -> tuple[int, EvalResult] | None:
    """``(round, eval)`` with the best value of the task's `headline` metric (`LOWER_IS_BETTER` says which way);
    the earliest round wins ties.

    The final full-test-set eval (split ``"test"``) is reported separately, so it only
    competes when no other split was evaluated.
    """
    scored = [(r.round, r.eval, value) for r in rounds if r.eval and (value := r.eval.value(headline)) is not None]
    periodic = [(rnd, ev, value) for rnd, ev, value in scored if ev.split != "test"]
    best: tuple[int, EvalResult, float] | None = None
    for rnd, ev, value in periodic or scored:
        if best is None or better(headline, value, best[2]):
            best = (rnd, ev, value)
    return best[:2] if best else None


def summary_table_rows(
    rounds: list[RoundRecord], final_eval: EvalResult | None, headline: str
) -> tuple[list[str], list[list]]:
    """Headers and rows of the result table (metric, value), led by the task's `headline` metric; absent metrics
    are omitted."""
    rows: list[list] = []
    best = best_eval(rounds, headline)
    if best is not None:
        rnd, ev = best
        rows.append([f"best eval {HEADLINE_LABELS[headline]} ({ev.split})", ev.value(headline)])
        rows.append(["best eval round", rnd])
    if final_eval:
        split = final_eval.split
        final = {key: [f"final {split} {METRIC_LABELS[key]}", value] for key, value in final_eval.metrics().items()}
        final["loss"] = [f"final {split} loss (held-out)", final_eval.loss]
        if headline in final:
            rows.append(final.pop(headline))
        rows += final.values()
    if rounds:
        total_down = sum(r.bytes_down or 0 for r in rounds)
        total_up = sum(r.bytes_up or 0 for r in rounds)
        for label, total in (("total bytes down", total_down), ("total bytes up", total_up)):
            rows.append([label, f"{format_bytes(total)} ({int(total):,} B)"])
        wall = sum(r.wall_time_s or 0.0 for r in rounds)
        rows.append(["total wall time (s)", wall])
        evaluation = sum(r.eval_time_s or 0.0 for r in rounds)
        if wall > 0:
            rows.append(["of which evaluation (s)", f"{evaluation:.1f} ({evaluation / wall:.0%})"])
        privacy = rounds[-1].privacy
        if privacy:
            rows.append([f"privacy ε at δ={privacy.delta:g} (user-level)", privacy.epsilon])
    return ["metric", "value"], rows


def check_round_records(rounds: list[RoundRecord], rounds_done: int, path: Path) -> None:
    """Refuse to summarise an empty record file of a run that ran rounds: the summary would say "no results"."""
    if not rounds and rounds_done > 0:
        raise ConfigError(
            f"{path} holds no round records, but the run's status says {rounds_done} rounds ran; "
            "nothing was rewritten: restore the run's metrics.jsonl"
        )


def _learning_curve_table(rounds: list[RoundRecord], headline: str) -> str:
    evaluated = [(r, r.eval) for r in rounds if r.eval is not None]
    if not evaluated:
        return "_No evaluated rounds._"
    scores = [headline] if headline in METRIC_LABELS else []  # a loss headline is the eval loss column
    rows = [[r.round, r.train_loss, ev.loss, *(ev.value(name) for name in scores)] for r, ev in evaluated]
    return format_table(["round", "train loss", "eval loss", *(f"eval {METRIC_LABELS[name]}" for name in scores)], rows)


def write_summary(
    path: Path | str,
    *,
    title: str,
    config_lines: list[str],
    final_eval: EvalResult | None,
    rounds: list[RoundRecord],
    headline: str,
    extra_sections: dict[str, str] | None = None,
) -> Path:
    """Write the Markdown run summary to ``path`` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    headers, rows = summary_table_rows(rounds, final_eval, headline)
    parts = [f"# {title}", "## Setup", "\n".join(f"- {line}" for line in config_lines) or "_none_"]
    parts += ["## Result", format_table(headers, rows) if rows else "_No results._"]
    parts += ["## Learning curve", _learning_curve_table(rounds, headline)]
    if any(r.privacy for r in rounds):
        from fedhello.privacy.report import privacy_section

        parts += ["## Differential privacy", privacy_section(rounds)]
    for heading, body in (extra_sections or {}).items():
        parts += [f"## {heading}", body.strip()]
    plots = [(name, label) for name, label in PLOT_FILES if (path.parent / name).exists()]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{label}]({name})" for name, label in plots)]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
