"""The README's privacy table from a finished `benchmarks/privacy_vit_mnist.yaml` grid.

    .venv/bin/python benchmarks/privacy_table.py runs/privacy-vit-mnist

Per cell: final test accuracy and loss, ε reached, the mean planned coverage of each layer
(clients per round asked to train it, from `layer_counts`) and, for DP cells, the median
over rounds of each layer's noise-to-signal ratio. Cells without a final evaluation are
listed as incomplete.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchlib import machine_description
from fedhello.outputs.run_writer import read_jsonl
from fedhello.outputs.summary import format_table


def cell_row(run: Path) -> list[object]:
    cell = json.loads((run / "cell.json").read_text())
    rounds = read_jsonl(run / "metrics.jsonl")
    final = rounds[-1].get("eval") if rounds else None
    if not final or final.get("split") != "test":
        return [cell["method"], "incomplete", "", "", "", ""]
    coverage = np.mean([r["layer_counts"] for r in rounds], axis=0)
    private = [r["privacy"] for r in rounds if r.get("privacy")]
    if private:
        ratios = [[p["layer_noise_to_signal"][layer] for p in private] for layer in range(len(coverage))]
        head = np.median([p["head_noise_to_signal"] for p in private])
        shown = [f"{np.median(values):.0f}" if None not in values else "-" for values in ratios]  # -: never trained
        epsilon, noise = f"{private[-1]['epsilon']:.2f}", " ".join(shown) + f" / head {head:.1f}"
    else:
        epsilon, noise = "∞ (no DP)", ""
    shown_coverage = " ".join(f"{count:.0f}" for count in coverage)
    return [cell["method"], f"{final['accuracy']:.4f}", f"{final['loss']:.3f}", epsilon, shown_coverage, noise]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=Path, help="the comparison's output directory")
    args = parser.parse_args()
    rows = [cell_row(run) for run in sorted((args.grid / "runs").iterdir())]
    headers = [
        "method",
        "final test accuracy",
        "final test loss",
        "ε (δ=1e-4)",
        "mean clients per layer 0-5",
        "median noise/signal per layer 0-5",
    ]
    print(format_table(headers, rows))
    print()
    print(machine_description())


if __name__ == "__main__":
    main()
