"""The LLM benchmark's contrasts, with the half-width each reached and the seeds a target would need.

    .venv/bin/python benchmarks/llm_table.py runs/compare-offline-llm

`fedhello report` compares every method with the grid's reference (`fedra`). The questions
of the benchmark are also pairs without `fedra` in them: a memory-aware strategy against
`fedra` under the same memory budgets, the coverage rule against the same strategy without
it, one geometric pattern against another. For each contrast this prints, over the seeds
both methods finished, the mean paired difference in final held-out loss with its 95%
paired-t interval, the interval's half-width, the paired standard deviation s, and the
seeds a 95% interval of half-width 0.01 and 0.005 would need at that s (the smallest n
with t(0.975, n-1) * s / sqrt(n) <= h). Contrasts whose methods the grid lacks are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from benchlib import machine_description
from fedhello.comparison.grid import Cell, is_complete
from fedhello.comparison.report import paired_t_interval
from fedhello.outputs.summary import format_table
from fedhello.run_directory import RunDirectory

# (method, baseline, the question it answers)
CONTRASTS = [
    ("full", "fedra", "all 30 layers everywhere vs random layer budgets"),
    ("fedhello", "fedra", "Fed-HeLLo's Fisher-guided allocation vs random layers"),
    ("straggler", "fedra", "everyone trains the top 15 vs random layer budgets"),
    ("gd-inverted_triangle", "fedra", "top layers (geometric) vs random layers"),
    ("gd-bottleneck", "gd-inverted_triangle", "middle layers vs top layers"),
    ("rgd-inverted_triangle", "gd-inverted_triangle", "randomised vs fixed pattern (inverted triangle)"),
    ("rgd-bottleneck", "gd-bottleneck", "randomised vs fixed pattern (bottleneck)"),
    ("hetlora", "fedra", "heterogeneous ranks on all layers vs heterogeneous layers"),
    ("flexlora", "hetlora", "FlexLoRA's SVD redistribution vs HetLoRA's zero-padding"),
    ("fedra-depth", "fedra", "FedRA as published (sub-model) vs full model, some layers frozen"),
    ("fedra-memory", "fedra", "memory budgets vs layer budgets"),
    ("fisher-per-byte", "fedra-memory", "Fisher per byte vs random, same memory budgets"),
    ("fedra-memory-covered", "fedra-memory", "the coverage rule (k = 2) vs none, memory budgets"),
]
TARGET_HALF_WIDTHS = (0.01, 0.005)


def final_losses(grid: Path) -> dict[str, dict[int, float]]:
    """Per method, per seed: the final held-out loss of every finished cell."""
    losses: dict[str, dict[int, float]] = {}
    for run in sorted((grid / "runs").iterdir()):
        if not is_complete(run):
            continue
        cell = Cell.read(run)
        final = [r.eval for r in RunDirectory(run).rounds() if r.eval is not None][-1]
        losses.setdefault(cell.method, {})[cell.seed] = float(final.loss)
    return losses


def seeds_needed(spread: float, half_width: float) -> int:
    """The smallest n >= 2 whose 95% paired-t interval at standard deviation `spread` is within `half_width`."""
    n = 2
    while stats.t.ppf(0.975, n - 1) * spread / np.sqrt(n) > half_width:
        n += 1
    return n


def contrast_row(method: str, baseline: str, question: str, losses: dict[str, dict[int, float]]) -> list[object]:
    seeds = sorted(set(losses[method]) & set(losses[baseline]))
    differences = [losses[method][seed] - losses[baseline][seed] for seed in seeds]
    interval = paired_t_interval(differences)
    if interval["low"] is None:
        return [method, baseline, question, len(seeds), f"{interval['mean']:+.3f}", "", "", "", ""]
    spread = float(np.std(differences, ddof=1))
    mark = " *" if interval["significant"] else ""
    return [
        method,
        baseline,
        question,
        len(seeds),
        f"{interval['mean']:+.3f} [{interval['low']:+.3f}, {interval['high']:+.3f}]{mark}",
        f"±{(interval['high'] - interval['low']) / 2:.3f}",
        f"{spread:.3f}",
        *(seeds_needed(spread, h) if spread > 0 else 2 for h in TARGET_HALF_WIDTHS),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="the comparison's output directory")
    args = parser.parse_args()
    losses = final_losses(args.grid)
    headers = [
        "method",
        "baseline",
        "question",
        "paired seeds",
        "Δ final held-out loss (95% CI)",
        "half-width",
        "paired s",
        *(f"seeds for ±{h}" for h in TARGET_HALF_WIDTHS),
    ]
    rows = [
        contrast_row(method, baseline, question, losses)
        for method, baseline, question in CONTRASTS
        if method in losses and baseline in losses
    ]
    print(format_table(headers, rows))
    print()
    print("Δ: method − baseline over the seeds both finished (lower is better); * where the interval excludes 0.")
    print(machine_description())


if __name__ == "__main__":
    main()
