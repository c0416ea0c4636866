"""Peak memory and round time at 10, 100 and 1,000 simulated clients, 5 per round.

Per-client state is only tensors a client keeps (none for `rgd` with an aggregated
head) plus its sample indices, so memory should not grow with the number of clients.
Each client count runs in a fresh subprocess (so peak RSS is that run's own) on the
default model and 20 Newsgroups with an IID split (1,000 clients need about 11 samples
each, so one local step per round where 10 clients take five: compare the time per
local step), for a few rounds without evaluation.

    python benchmarks/client_scaling.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import add_common_arguments, apply_common_arguments, machine_description


def one_run(num_clients: int, rounds: int) -> dict:
    from fedhello.allocation.registry import strategy_from_config
    from fedhello.config import load_config
    from fedhello.experiment import PreparedExperiment
    from fedhello.federation.inprocess import InProcessFederation
    from fedhello.preparation import prepare_task

    config = load_config(
        overrides=[
            "allocation.strategy=rgd",
            "fisher.proxy_size=0",
            "partition.scheme=iid",
            f"federation.num_clients={num_clients}",
            "federation.clients_per_round=5",
            f"federation.rounds={rounds}",
            "evaluation.every=1000",
            "data.max_test_samples=32",
            "output.progress=false",
            "output.tensorboard=false",
        ]
    )
    engine = InProcessFederation(
        PreparedExperiment.from_task(config, strategy_from_config(config), prepare_task(config))
    )
    times = [engine.run_round().record for _ in range(rounds)]
    steps = sum(record.local_steps for record in engine.log.clients)
    return {
        "clients": num_clients,
        "round_s": sum(r.wall_time_s - r.eval_time_s for r in times) / rounds,
        "step_ms": 1000 * sum(r.wall_time_s - r.eval_time_s for r in times) / steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    if args.child is not None:
        print(json.dumps(one_run(args.child, args.rounds)))
        return
    print(machine_description())
    results = []
    for count in args.counts:
        command = [sys.executable, __file__, "--child", str(count), "--rounds", str(args.rounds)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
    print("| clients | s / round (5 clients train) | ms / local step (round time / steps) | peak RSS MiB |")
    print("| ---: | ---: | ---: | ---: |")
    for result in results:
        print(
            f"| {result['clients']} | {result['round_s']:.1f} | {result['step_ms']:.0f} | "
            f"{result['peak_rss_mib']:.0f} |"
        )
    first, last = results[0], results[-1]
    print(
        f"RATIO rss_{last['clients']}_vs_{first['clients']}_clients {last['peak_rss_mib'] / first['peak_rss_mib']:.3f}"
    )
    print(f"RATIO step_time_{last['clients']}_vs_{first['clients']}_clients {last['step_ms'] / first['step_ms']:.3f}")


if __name__ == "__main__":
    main()
