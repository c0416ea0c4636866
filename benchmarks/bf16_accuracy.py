"""Accuracy effect of bf16 autocast on CPU: short federated runs, fp32 vs bf16, over seeds.

Each seed runs the same experiment twice, once with full-precision forward passes and once
with bf16 autocast in local training and evaluation (the Fisher scoring stays fp32 in
both). The config has no precision field yet, so this script selects the precision by
wrapping `fedhello.training.autocast_for` for the duration of a run. Runs are paired by
seed (same partition, same clients, same initial adapter), so the per-seed difference is
the effect of the precision alone (plus the run-to-run drift that rounding causes).

    python benchmarks/bf16_accuracy.py --seeds 0 1 2 --set federation.rounds=10

Slow (minutes per run): not part of run_all.py unless --with-accuracy is given there.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import fedhello.evaluation
import fedhello.training
from fedhello.config import load_config
from fedhello.runner import run_experiment


def run_with_precision(overrides: list[str], seed: int, precision: str, out_root: Path) -> tuple[float, float]:
    """(final test accuracy, wall seconds) of one run with the given autocast precision."""
    original = fedhello.training.autocast_for

    def patched(device: torch.device, _requested: str = "auto"):
        return original(device, precision)

    fedhello.training.autocast_for = patched
    fedhello.evaluation.autocast_for = patched
    try:
        config = load_config(None, None, [*overrides, f"seed={seed}", "output.tensorboard=false"])
        started = time.perf_counter()
        outcome = run_experiment(config, out_root / f"seed{seed}-{precision}")
        return float(outcome.final_eval.accuracy), time.perf_counter() - started
    finally:
        fedhello.training.autocast_for = original
        fedhello.evaluation.autocast_for = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, list[tuple[float, float]]] = {"fp32": [], "bf16": []}
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                accuracy, wall = run_with_precision(args.set, seed, precision, Path(out))
                results[precision].append((accuracy, wall))
                print(f"seed {seed} {precision}: final test accuracy {accuracy:.4f}, wall {wall:.1f} s", flush=True)
    print(f"overrides: {' '.join(args.set) or '(none)'}; torch threads {torch.get_num_threads()}")
    for precision, rows in results.items():
        accuracies = [accuracy for accuracy, _ in rows]
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        print(
            f"{precision}: mean accuracy {statistics.mean(accuracies):.4f} (sd {spread:.4f}), mean wall "
            f"{statistics.mean(w for _, w in rows):.1f} s"
        )
    differences = [b[0] - f[0] for f, b in zip(results["fp32"], results["bf16"], strict=True)]
    print(
        f"bf16 - fp32 accuracy per seed: {', '.join(f'{d:+.4f}' for d in differences)}; mean "
        f"{statistics.mean(differences):+.4f}"
    )


if __name__ == "__main__":
    main()
