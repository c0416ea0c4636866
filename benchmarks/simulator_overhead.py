"""The in-process engine against the physical limit: the same local steps as a bare loop.

Runs the default experiment's model and data (capped for time) for a few rounds with
`rgd` (no Fisher scoring, so every second is sampling, messaging, local training,
checking and aggregation). After each engine round, a bare PyTorch loop replays the
same work: for every client that trained, the same trainable tensors, the same batches
in the same order, AdamW, forward, backward, step — and nothing else (no state loading,
no deltas, no activation meter, no aggregation). The ratio is the engine's round time
(evaluation excluded; it is reported separately as eval_time_s) over the bare loop's.

    python benchmarks/simulator_overhead.py --rounds 4 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, machine_description
from fedhello.allocation.registry import strategy_from_config
from fedhello.config import load_config
from fedhello.experiment import PreparedExperiment
from fedhello.federation.inprocess import InProcessFederation
from fedhello.preparation import prepare_task
from fedhello.seeding import torch_generator
from fedhello.training import local_batches


def bare_round(task, config, outcome) -> float:
    """The round's local steps as a plain loop on the same model; returns its wall seconds."""
    federated = task.federated
    model = federated.model
    settings = task.client_runtime(config).settings
    started = time.perf_counter()
    for record in outcome.clients:
        if record.status != "trained":
            continue
        names = set(federated.layer_map.names_for(record.layers)) | set(federated.head_names)
        parameters = [p for name, p in model.named_parameters() if name in names]
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in names)
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr)
        samples = task.client_indices[record.client]
        generator = torch_generator(config.seed, "data_order", record.round, record.client)
        model.train()
        for positions in local_batches(len(samples), settings, generator):
            loss = model(**task.train.batch(samples[positions])).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(machine_description())
    config = load_config(
        overrides=[
            "allocation.strategy=rgd",
            "fisher.proxy_size=0",
            f"federation.rounds={args.rounds}",
            "evaluation.every=1000",
            "data.max_test_samples=64",
            "data.max_train_samples=3000",
            "output.progress=false",
            "output.tensorboard=false",
        ]
    )
    task = prepare_task(config)
    engine = InProcessFederation(PreparedExperiment.from_task(config, strategy_from_config(config), task))
    engine_s, bare_s = 0.0, 0.0
    for _ in range(args.rounds):
        outcome = engine.run_round()
        engine_s += outcome.record.wall_time_s - outcome.record.eval_time_s
        bare_s += bare_round(task, config, outcome)
    steps = sum(r.local_steps for r in engine.log.clients)
    print(
        f"{args.rounds} rounds, {steps} local steps: engine {engine_s:.1f} s (evaluation excluded), bare loop "
        f"{bare_s:.1f} s"
    )
    print(f"RATIO simulator_vs_bare_loop {engine_s / bare_s:.3f}")
    print(f"MS bare_step {1000 * bare_s / steps:.0f}")


if __name__ == "__main__":
    main()
