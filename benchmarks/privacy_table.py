"""The Privacy page's tables from a finished `benchmarks/privacy_vit_mnist.yaml` grid.

    .venv/bin/python benchmarks/privacy_table.py runs/privacy-vit-mnist

Cells are grouped by (strategy, target ε), read from each run's own config. Per group, over
the seeds: ε reached, final test accuracy (mean ± sample std), the mean paired difference to
the same strategy without DP and to `fedra` at the same ε, each with a 95% paired-t interval
over the seeds both ran, the mean planned coverage of each layer (clients per round asked to
train it) and, with DP, the median over rounds and seeds of each layer's noise-to-signal
ratio. Cells that have not finished count in the seeds column only; those not started are skipped.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchlib import machine_description
from fedhello.comparison import grid
from fedhello.comparison.report import paired_t_interval
from fedhello.outputs.summary import format_table
from fedhello.run_directory import RunDirectory

REFERENCE_STRATEGY = "fedra"


@dataclass
class Cell:
    strategy: str
    target_epsilon: float | None  # None: no DP
    seed: int
    accuracy: float | None  # final test accuracy; None: incomplete
    epsilon: float | None
    coverage: np.ndarray
    noise_to_signal: list[list[float | None]]  # per DP round, per layer (None: nobody trained it)
    head_noise_to_signal: list[float]


def read_cell(run: Path) -> Cell:
    directory = RunDirectory(run)
    config = directory.config()
    rounds = directory.rounds()
    final = rounds[-1].eval if rounds else None
    private = [r.privacy for r in rounds if r.privacy is not None]
    return Cell(
        strategy=config.allocation.strategy,
        target_epsilon=config.privacy.target_epsilon if config.privacy.enabled else None,
        seed=grid.Cell.read(run).seed,
        accuracy=final.accuracy if final is not None and final.split == "test" else None,
        epsilon=private[-1].epsilon if private else None,
        coverage=np.mean([r.layer_counts for r in rounds], axis=0) if rounds else np.zeros(0),
        noise_to_signal=[p.layer_noise_to_signal for p in private],
        head_noise_to_signal=[p.head_noise_to_signal for p in private if p.head_noise_to_signal is not None],
    )


def paired(cells: list[Cell], reference: list[Cell]) -> str:
    """Mean paired difference in accuracy points over the seeds both completed, with its 95% interval."""
    by_seed = {c.seed: c.accuracy for c in reference if c.accuracy is not None}
    differences = [100 * (c.accuracy - by_seed[c.seed]) for c in cells if c.accuracy is not None and c.seed in by_seed]
    if not differences:
        return ""
    interval = paired_t_interval(differences)
    if interval["low"] is None:
        return f"{interval['mean']:+.2f} (1 seed)"
    mark = " *" if interval["significant"] else ""
    return f"{interval['mean']:+.2f} [{interval['low']:+.2f}, {interval['high']:+.2f}]{mark}"


def noise_column(cells: list[Cell]) -> str:
    ratios = [ratios for c in cells for ratios in c.noise_to_signal]
    if not ratios:
        return ""
    per_layer = [
        f"{np.median(values):.0f}" if None not in (values := [r[layer] for r in ratios]) else "-"  # -: never trained
        for layer in range(len(ratios[0]))
    ]
    head = np.median([value for c in cells for value in c.head_noise_to_signal])
    return " ".join(per_layer) + f" / head {head:.1f}"


def group_row(cells: list[Cell], groups: dict[tuple[str, float | None], list[Cell]]) -> list[object]:
    strategy, target = cells[0].strategy, cells[0].target_epsilon
    done = [c.accuracy for c in cells if c.accuracy is not None]
    accuracy = f"{100 * np.mean(done):.2f} ± {100 * np.std(done, ddof=1) if len(done) > 1 else 0:.2f}" if done else ""
    epsilons = [c.epsilon for c in cells if c.epsilon is not None]
    return [
        strategy,
        f"{max(epsilons):.2f}" if epsilons else "no DP",
        f"{len(done)}/{len(cells)}",
        accuracy,
        paired(cells, groups.get((strategy, None), [])) if target is not None else "",
        paired(cells, groups.get((REFERENCE_STRATEGY, target), [])) if strategy != REFERENCE_STRATEGY else "",
        " ".join(f"{count:.0f}" for count in np.mean([c.coverage for c in cells], axis=0)),
        noise_column(cells),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="the comparison's output directory")
    args = parser.parse_args()
    groups: dict[tuple[str, float | None], list[Cell]] = defaultdict(list)
    started = [run for run in sorted((args.grid / "runs").iterdir()) if (run / "config.yaml").exists()]
    for run in started:
        cell = read_cell(run)
        groups[(cell.strategy, cell.target_epsilon)].append(cell)

    def order(key: tuple[str, float | None]) -> tuple[str, float]:
        return (key[0], -(key[1] if key[1] is not None else np.inf))

    headers = [
        "method",
        "ε (δ=1e-4)",
        "seeds",
        "final test accuracy %",
        "Δ vs no DP (95% CI)",
        f"Δ vs {REFERENCE_STRATEGY} at same ε (95% CI)",
        "mean clients per round, layers 0-5",
        "median noise / signal, layers 0-5 / head",
    ]
    print(format_table(headers, [group_row(groups[key], groups) for key in sorted(groups, key=order)]))
    print()
    print("Δ: mean paired difference in accuracy points over the seeds both ran; * where the interval excludes 0.")
    print(machine_description())


if __name__ == "__main__":
    main()
