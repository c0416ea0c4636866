"""Per-round cost of Flower's simulation and deployment engines against the in-process engine, side by side.

The same small run on each engine (3 clients, 2 per round, evaluation every round), for a
4-layer random-init ViT on scikit-learn digits (local compute is small, so the engine's own
cost shows) and for the default MiniLM-L6 on 20 Newsgroups (600 training samples). Per
round: the median of the rounds' `wall_time_s` (planning, messaging, client training,
aggregation, evaluation). Deployment runs twice: a ClientApp that trains in its own
process (Flower starts one per message) and the long-lived node worker (`fedhello node`,
the ClientApp only forwards). Then one deployment message is taken apart: what a fresh
ClientApp process pays (process start and imports, measured as subprocesses), model load,
data load and encoding (first message) or the cached samples (later ones), training, reply
encoding; and the waits Flower's own loops add, with the source lines that set them.

    nice python benchmarks/flower_overhead.py --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, format_table, machine_description
from fedhello.config import ExperimentConfig, load_config
from fedhello.federation.client import Client, ClientRuntime
from fedhello.federation.messages import TrainInstruction
from fedhello.flower import codec
from fedhello.flower.deployment import LocalDeployment, write_flower_app
from fedhello.models.pretrained_vit import save_random_vit
from fedhello.node_preparation import NodeSamples, shared_model
from fedhello.outputs.run_writer import read_jsonl
from fedhello.runner import run_experiment

# Where Flower 1.42 itself waits (site-packages/flwr/...): (seconds, file:line, what).
FLOWER_WAITS = (
    (3.0, "supernode/start_client_internal.py:263", "SuperNode sleeps between pulls when it has no message (fixed)"),
    (
        0.1,
        "supercore/superexec/run_superexec.py:50,277",
        "SuperExec polls for an app process to start (default 1.0; fedhello sets FLWR_SUPEREXEC_TASK_POLL_INTERVAL)",
    ),
    (0.5, "supernode/start_client_internal.py:470", "SuperNode polls for the ClientApp's reply before pushing it"),
    (
        3.0,
        "superlink/grid/http_grid.py:412",
        "Grid.send_and_receive sleeps between pulls (fedhello's GridEngine pulls every 0.1 s instead)",
    ),
)
ENGINES = ("inprocess", "flower-sim", "deployment (process per message)", "deployment (node worker)")


def experiment(model: str, rounds: int, vit_folder: Path) -> ExperimentConfig:
    common = [
        "federation.num_clients=3",
        "federation.clients_per_round=2",
        f"federation.rounds={rounds}",
        "partition.scheme=iid",
        "fisher.proxy_size=32",
        "evaluation.every=1",
        "output.progress=false",
        "output.tensorboard=false",
        "output.plots=false",
        "flower.round_timeout_s=300",
    ]
    if model == "tiny ViT":
        specific = [
            f"model.name={vit_folder}",
            "model.task=image_classification",
            "data.dataset=digits",
            "evaluation.subset_size=null",
        ]
    else:
        specific = [
            "data.max_train_samples=600",
            "data.max_test_samples=200",
            "training.max_local_steps=4",
            "training.batch_size=16",
        ]
    return load_config(overrides=[*common, *specific])


def median_round(run_dir: Path) -> float:
    return statistics.median(record["wall_time_s"] for record in read_jsonl(run_dir / "metrics.jsonl"))


def deployment_round(config: ExperimentConfig, work: Path, *, workers: bool) -> float:
    run_dir = work / "run"
    app_dir = write_flower_app(config, run_dir, work / "app")
    with LocalDeployment(work / "flower", config.federation.num_clients, workers=workers) as deployment:
        result = deployment.run_app(app_dir)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    return median_round(run_dir)


def engine_round(engine: str, config: ExperimentConfig, work: Path) -> float:
    if engine.startswith("deployment"):
        return deployment_round(config, work, workers=engine.endswith("worker)"))
    run_experiment(config, work / "run", engine=engine)
    return median_round(work / "run")


def import_seconds(module: str) -> float:
    """A fresh interpreter importing `module` (what a new ClientApp process pays before any message)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def message_breakdown(config: ExperimentConfig, cache_dir: Path) -> dict[str, float]:
    """One training message's parts, timed in this process (imports are timed as subprocesses)."""
    parts: dict[str, float] = {
        "python + flwr.clientapp import": import_seconds("flwr.clientapp"),
        "import the forwarding ClientApp": import_seconds("fedhello.flower.client_app"),
        "import the training code (torch, transformers)": import_seconds("fedhello.flower.node_client"),
    }
    samples = NodeSamples(config, 0, None, cache_dir)
    started = time.perf_counter()
    label_names = samples.label_names()
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    federated, initial = shared_model(config, len(label_names))
    parts["model load"] = time.perf_counter() - started
    path, _, _ = samples.cached("train")
    started = time.perf_counter()
    train = samples.encode(federated, "train", label_names, path)
    parts["data load + encode (first message)"] = read_s + time.perf_counter() - started
    started = time.perf_counter()
    samples.cached("train")
    parts["cached samples (later messages)"] = time.perf_counter() - started
    runtime = ClientRuntime.from_config(config, federated, train, None, {0: torch.arange(len(train)).numpy()})
    layers = tuple(range(federated.layer_map.num_layers))
    instruction = TrainInstruction(1, 0, 0, layers, None, dict(initial), True)
    started = time.perf_counter()
    reply = Client(0).fit(instruction, runtime)
    parts["training"] = time.perf_counter() - started
    started = time.perf_counter()
    codec.encode_reply(reply)
    parts["reply encoding"] = time.perf_counter() - started
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=["tiny ViT", "MiniLM-L6"], choices=["tiny ViT", "MiniLM-L6"])
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(machine_description())
    rows, breakdowns = [], {}
    with tempfile.TemporaryDirectory() as work:
        vit_folder = save_random_vit(Path(work) / "vit")
        for model in args.models:
            config = experiment(model, args.rounds, vit_folder)
            seconds = {}
            for index, engine in enumerate(ENGINES):
                seconds[engine] = engine_round(engine, config, Path(work) / f"{model}-{index}".replace(" ", "-"))
                print(f"{model}, {engine}: {seconds[engine]:.2f} s / round", flush=True)
            base = seconds["inprocess"]
            rows.append(
                [model, *(f"{seconds[e]:.2f}" for e in ENGINES), *(f"{seconds[e] / base:.1f}x" for e in ENGINES[1:])]
            )
            breakdowns[model] = message_breakdown(config, Path(work) / f"cache-{model}".replace(" ", "-"))
    print()
    print("Seconds per round (median) and ratio to in-process:")
    headers = ["model", *ENGINES, *(f"{engine} / in-process" for engine in ENGINES[1:])]
    print(format_table(headers, rows))
    print()
    print("One deployment training message, by part (seconds):")
    parts = list(next(iter(breakdowns.values())))
    print(
        format_table(
            ["part", *breakdowns], [[part, *(f"{b[part]:.2f}" for b in breakdowns.values())] for part in parts]
        )
    )
    print()
    print("Flower 1.42's own waits (flwr sources):")
    print(format_table(["seconds", "source", "what"], [[f"{s:.1f}", src, what] for s, src, what in FLOWER_WAITS]))
    for model_row in rows:
        print(f"RATIO {model_row[0].replace(' ', '_')}_deployment_worker_vs_inprocess {model_row[-1].rstrip('x')}")


if __name__ == "__main__":
    main()
