"""Profile of one simulated round of the default experiment (torch.profiler).

One round with a Fisher refresh and an evaluation on the 500-sample subset, so every
phase appears: Fisher scoring, client training, aggregation, evaluation. Prints the
wall time per phase and the operators with the most self CPU time.

    python benchmarks/profile_round.py --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, machine_description
from fedhello.allocation.registry import strategy_from_config
from fedhello.config import load_config
from fedhello.experiment import PreparedExperiment
from fedhello.federation import client, model_runtime, server
from fedhello.federation.inprocess import InProcessFederation
from fedhello.preparation import prepare_task

PHASES = {
    "fisher scoring": (model_runtime.GlobalModelRuntime, "score_layers"),
    "evaluation": (model_runtime.GlobalModelRuntime, "evaluate"),
    "client training": (client.Client, "fit"),
    "plan (sampling, allocation, instructions)": (server.Server, "plan_round"),
    "finish (checks, aggregation, evaluation)": (server.Server, "finish_round"),
}


def instrument(totals: dict[str, float]) -> None:
    for phase, (owner, name) in PHASES.items():
        original = getattr(owner, name)

        def timed(*args, _original=original, _phase=phase, **kwargs):
            started = time.perf_counter()
            with record_function(_phase):
                result = _original(*args, **kwargs)
            totals[_phase] += time.perf_counter() - started
            return result

        setattr(owner, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=15)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(machine_description())
    config = load_config(
        overrides=[
            "allocation.params.fim_start=1",
            "evaluation.every=1",
            "federation.rounds=20",
            "output.progress=false",
            "output.tensorboard=false",
        ]
    )
    task = prepare_task(config)
    engine = InProcessFederation(PreparedExperiment.from_task(config, strategy_from_config(config), task))
    totals: dict[str, float] = defaultdict(float)
    instrument(totals)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        record = engine.run_round().record
    print(f"round wall time {record.wall_time_s:.1f} s (evaluation {record.eval_time_s:.1f} s)")
    print("| phase | s | share of round |")
    print("| --- | ---: | ---: |")
    for phase in PHASES:
        print(f"| {phase} | {totals[phase]:.2f} | {totals[phase] / record.wall_time_s:.0%} |")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
