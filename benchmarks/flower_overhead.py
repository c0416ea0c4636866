"""Per-round overhead of Flower's simulation and deployment engines against the in-process engine.

The same tiny run on each engine (a 4-layer random-init ViT on scikit-learn digits, 3
clients, 2 per round, so local compute is small and the engine's own cost shows): the
per-round wall time (median of the rounds' `wall_time_s`, which covers planning,
messaging, client training, aggregation and evaluation) and the start-up time (whole
run minus its rounds: model and data loading, Ray or process start). The engines run
one after the other, in-process first and last, so drift on a shared machine shows.

    python benchmarks/flower_overhead.py --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, machine_description
from fedhello.config import load_config
from fedhello.outputs.run_writer import read_jsonl
from fedhello.runner import run_experiment


def tiny_vit(folder: Path) -> Path:
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=8,
        patch_size=2,
        num_channels=1,
        num_labels=10,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5]).save_pretrained(folder)
    return folder


def measure(engine: str, folder: Path, out: Path, rounds: int) -> tuple[float, float]:
    config = load_config(
        overrides=[
            f"model.name={folder}",
            "model.task=image_classification",
            "data.dataset=digits",
            "federation.num_clients=3",
            "federation.clients_per_round=2",
            f"federation.rounds={rounds}",
            "partition.scheme=iid",
            "fisher.proxy_size=32",
            "evaluation.every=1",
            "evaluation.subset_size=null",
            "output.progress=false",
            "output.tensorboard=false",
            "output.plots=false",
        ]
    )
    started = time.perf_counter()
    run_experiment(config, out, engine=engine)
    total = time.perf_counter() - started
    per_round = [record["wall_time_s"] for record in read_jsonl(out / "metrics.jsonl")]
    return statistics.median(per_round), total - sum(per_round)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(machine_description())
    with tempfile.TemporaryDirectory() as work:
        folder = tiny_vit(Path(work) / "vit")
        results = {}
        for index, engine in enumerate(("inprocess", "flower-sim", "flower-local", "inprocess")):
            results.setdefault(engine, []).append(measure(engine, folder, Path(work) / f"run{index}", args.rounds))
    baseline = statistics.mean(per_round for per_round, _ in results["inprocess"])
    print("| engine | s / round | start-up s | per-round vs in-process |")
    print("| --- | --- | --- | --- |")
    for engine, runs in results.items():
        per_round = statistics.mean(r for r, _ in runs)
        startup = statistics.mean(s for _, s in runs)
        print(f"| {engine} | {per_round:.2f} | {startup:.1f} | {per_round / baseline:.1f}x |")
    for engine in ("flower-sim", "flower-local"):
        print(f"RATIO {engine}_round_vs_inprocess {results[engine][0][0] / baseline:.2f}")
    print(f"MS inprocess_round {1000 * baseline:.0f}")


if __name__ == "__main__":
    main()
