"""Run plots, drawn on standalone ``Figure`` objects (Agg, no global pyplot state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from fedhello.records import HEADLINE_LABELS, LOWER_IS_BETTER, AllocationRecord, FisherRecord, RoundRecord

DPI = 120
# The scores drawn after the headline metric where an evaluation reports them (perplexity, exp of the loss, is not).
SCORE_COLORS: dict[str, str] = {"accuracy": "tab:green", "macro_f1": "tab:orange", "rouge_l": "tab:purple"}
TIER_MARKERS: dict[int, str] = {0: "v", 1: "o", 2: "^"}
TIER_NAMES: dict[int, str] = {0: "low", 1: "mid", 2: "high"}


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # Figure.savefig picks the Agg canvas from the .png suffix; nothing touches pyplot.
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def allocation_matrix(
    allocations: list[AllocationRecord], num_layers: int, num_rounds: int | None = None
) -> np.ndarray:
    """Count clients that trained each layer per round.

    Returns an int array of shape ``[num_layers, num_rounds]`` where column ``r`` is
    round ``r``; ``num_rounds`` defaults to the largest logged round + 1.
    """
    if num_rounds is None:
        num_rounds = max((a.round for a in allocations), default=-1) + 1
    mat = np.zeros((num_layers, num_rounds), dtype=np.int64)
    for alloc in allocations:
        r = alloc.round
        if not 0 <= r < num_rounds:
            raise ValueError(f"round {r} outside [0, {num_rounds})")
        for client in alloc.clients:
            for layer in set(client.layers):
                if not 0 <= layer < num_layers:
                    raise ValueError(f"layer {layer} outside [0, {num_layers})")
                mat[layer, r] += 1
    return mat


def plot_learning_curves(rounds: list[RoundRecord], path: Path | str, headline: str) -> Path | None:
    """Train loss (left) and the evaluation (right) against round: the task's `headline` metric first, then the
    scores reported with it (accuracy / macro-F1, ROUGE-L). Beside a lower-is-better headline (the held-out loss
    of instruction tuning) the scores are drawn against a second axis on the right."""
    if not rounds:
        return None
    fig = Figure(figsize=(11, 4))
    ax_loss, ax_eval = fig.subplots(1, 2)

    loss_pts = [(r.round, r.train_loss) for r in rounds if r.train_loss is not None]
    if loss_pts:
        ax_loss.plot(*zip(*loss_pts, strict=True), marker=".", color="tab:blue")
    ax_loss.set(title="Train loss", xlabel="round", ylabel="loss")
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.grid(alpha=0.3)

    evals = [(r.round, r.eval) for r in rounds if r.eval is not None]
    periodic = [(rd, ev) for rd, ev in evals if ev.split != "test"]
    final = [(rd, ev) for rd, ev in evals if ev.split == "test"]
    lower_is_better = headline in LOWER_IS_BETTER
    axes = [ax_eval]
    for key, color in {headline: "tab:red", **SCORE_COLORS}.items():  # a headline that is no score in red
        label = HEADLINE_LABELS[key]
        pts = [(rd, value) for rd, ev in periodic if (value := ev.value(key)) is not None]
        test_pts = [(rd, value) for rd, ev in final if (value := ev.value(key)) is not None]
        if not pts and not test_pts:
            continue
        ax = ax_eval
        if lower_is_better and key != headline:  # scores beside a loss headline: their own axis, on the right
            if len(axes) == 1:
                axes.append(ax_eval.twinx())
                axes[1].set_ylabel("score")
            ax = axes[1]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, color=color, label=label)
        if test_pts:
            ax.scatter(
                *zip(*test_pts, strict=True),
                marker="*",
                s=180,
                color=color,
                edgecolors="black",
                zorder=3,
                label=f"test {label}",
            )
    if evals:
        handles = [handle for ax in axes for handle in ax.get_legend_handles_labels()[0]]
        if lower_is_better:  # below the axes: curves on two axes leave no corner that is free for sure
            axes[-1].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2)
        else:
            axes[-1].legend(handles=handles, loc="lower right")
    else:
        ax_eval.text(0.5, 0.5, "no evaluation", ha="center", va="center", transform=ax_eval.transAxes)
    ax_eval.set(title="Evaluation", xlabel="round", ylabel=HEADLINE_LABELS[headline] if lower_is_better else "score")
    ax_eval.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_eval.grid(alpha=0.3)
    return _save(fig, path)


def plot_allocation_heatmap(allocations: list[AllocationRecord], num_layers: int, path: Path | str) -> Path | None:
    """Heatmap of clients training each layer (y, input side at bottom) per round (x)."""
    if not allocations:
        return None
    mat = allocation_matrix(allocations, num_layers)
    # Skip the leading all-empty columns when rounds are numbered from 1 (or later).
    first = min(a.round for a in allocations)
    mat = mat[:, first:]
    fig = Figure(figsize=(max(6.0, min(16.0, 0.15 * mat.shape[1] + 4)), max(3.5, min(10.0, 0.25 * num_layers + 2))))
    ax = fig.subplots()
    im = ax.imshow(
        mat,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        extent=(first - 0.5, first + mat.shape[1] - 0.5, -0.5, num_layers - 0.5),
        vmin=0,
    )
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("clients training the layer")
    cbar.locator = MaxNLocator(integer=True)
    cbar.update_ticks()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="LoRA layer allocation per round", xlabel="round", ylabel="layer (0 = input side)")
    return _save(fig, path)


def plot_layer_counts(allocations: list[AllocationRecord], num_layers: int, path: Path | str) -> Path | None:
    """Bar chart of how often each layer was trained over the whole run."""
    if not allocations:
        return None
    totals = allocation_matrix(allocations, num_layers).sum(axis=1)
    fig = Figure(figsize=(max(6.0, min(16.0, 0.3 * num_layers + 3)), 4))
    ax = fig.subplots()
    ax.bar(np.arange(num_layers), totals, color="tab:blue")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="Client-rounds per LoRA layer", xlabel="layer (0 = input side)", ylabel="times trained")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_fisher_scores(fisher_records: list[FisherRecord], path: Path | str) -> Path | None:
    """Fisher score per layer, one line per refresh round; marker shape = tier."""
    if not fisher_records:
        return None
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    n = len(fisher_records)
    handles: list[Line2D] = []
    for i, rec in enumerate(fisher_records):
        scores = np.asarray(rec.scores, dtype=float)
        layers = np.arange(len(scores))
        color = cmap(i / max(n - 1, 1))
        (line,) = ax.plot(layers, scores, color=color, linewidth=1.2, label=f"round {rec.round}")
        handles.append(line)
        tiers = np.asarray(rec.tiers or [], dtype=int)
        for tier, marker in TIER_MARKERS.items():
            sel = tiers == tier
            if sel.any():
                ax.scatter(layers[sel], scores[sel], marker=marker, color=color, s=36, zorder=3)
    if any(rec.tiers for rec in fisher_records):
        handles += [
            Line2D([], [], linestyle="", marker=m, color="gray", label=f"tier {TIER_NAMES[t]}")
            for t, m in TIER_MARKERS.items()
        ]
    ax.legend(handles=handles, fontsize="small", ncol=max(1, len(handles) // 12 + 1))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title="Fisher importance per layer", xlabel="layer (0 = input side)", ylabel="score")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_partition(summary: list[dict], path: Path | str) -> Path | None:
    """Stacked bars of per-client class counts (the data partition)."""
    if not summary:
        return None
    num_classes = max(len(row["class_counts"]) for row in summary)
    counts = np.zeros((len(summary), num_classes), dtype=np.int64)
    for i, row in enumerate(summary):
        counts[i, : len(row["class_counts"])] = row["class_counts"]
    bottoms = np.cumsum(counts, axis=1) - counts
    x = np.arange(len(summary))
    cmap = colormaps["tab20"] if num_classes <= 20 else colormaps["viridis"]
    fig = Figure(figsize=(max(6.0, min(18.0, 0.25 * len(summary) + 4)), 4.5))
    ax = fig.subplots()
    for c in range(num_classes):
        color = cmap(c % 20) if num_classes <= 20 else cmap(c / (num_classes - 1))
        ax.bar(x, counts[:, c], bottom=bottoms[:, c], color=color, width=0.85, label=str(c))
    ax.set_xticks(
        x,
        [str(row["client"]) for row in summary],
        fontsize="small",
        rotation=90 if len(summary) > 20 else 0,
    )
    if num_classes <= 20:
        ax.legend(title="class", fontsize="x-small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set(title="Samples per client by class", xlabel="client", ylabel="samples")
    return _save(fig, path)
