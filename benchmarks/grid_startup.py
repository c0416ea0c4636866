"""Per-cell start-up of a comparison grid: what a cell spends before its first round.

Runs a short grid (the `offline-all` preset cut to a few methods, one seed and few
rounds) in one process and reports, per cell, its start-up (cell wall time minus the
time inside its rounds: dataset and model loading, tokenisation, writing the run
directory, plots and summary) as a share of the cell's wall time. Tokenisation is cached
per process, so cells after the first tokenise nothing new.

    python benchmarks/grid_startup.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, machine_description
from fedhello.comparison.grid import cell_config, cells, load_comparison
from fedhello.outputs.run_writer import read_jsonl
from fedhello.runner import run_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["fedhello", "fedra", "full"])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per cell (offline-all has 8)")
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(machine_description())
    comparison = load_comparison(
        "offline-all",
        None,
        [
            f"methods={args.methods}",
            "seeds=[0]",
            f"base.federation.rounds={args.rounds}",
            "base.output.progress=false",
            "base.output.plots=true",
        ],
    )
    shares = []
    print("| cell | wall s | start-up s | start-up share |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as work:
        for cell in cells(comparison):
            config = cell_config(comparison, cell)
            out = Path(work) / cell.cell_id
            started = time.perf_counter()
            run_experiment(config, out)
            wall = time.perf_counter() - started
            startup = wall - sum(record["wall_time_s"] for record in read_jsonl(out / "metrics.jsonl"))
            shares.append(startup / wall)
            print(f"| {cell.cell_id} | {wall:.1f} | {startup:.1f} | {startup / wall:.1%} |")
    print(f"RATIO grid_first_cell_startup_share {shares[0]:.3f}")
    print(f"RATIO grid_later_cells_startup_share {max(shares[1:]):.3f}")


if __name__ == "__main__":
    main()
