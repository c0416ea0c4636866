"""How the coverage rule (`allocation.min_trainers_per_layer`) changes who trains which layer, without training.

Replays the server's rounds of one comparison method (default: `fedra-memory` of
`offline-powered`) for every seed of the grid and each k: the real client sampling,
groups, cost model and allocation streams (`Server.plan_round`), but no local training,
so strategies whose sets depend on the trained model (Fisher scores) are left out. For
each layer it counts client-rounds, rounds it is trained in at all, and rounds a single
client trains it; and the client-rounds the rule leaves idle.

    python benchmarks/coverage_counts.py --threads 1 --k 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter

from benchlib import add_common_arguments, apply_common_arguments, format_table
from fedhello.allocation.groups import CapabilityGroups
from fedhello.allocation.registry import strategy_from_config
from fedhello.comparison.grid import cell_config, cells, load_comparison
from fedhello.experiment import prepare_experiment
from fedhello.federation.inprocess import inprocess_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", default="offline-powered", help="a shipped comparison preset")
    parser.add_argument("--method", default="fedra-memory", help="one of its methods (a strategy without Fisher)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4], help="min_trainers_per_layer values")
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)

    comparison = load_comparison(args.comparison, None, [])
    grid = [cell for cell in cells(comparison) if cell.method == args.method]
    experiment = prepare_experiment(cell_config(comparison, grid[0]))  # model, data and cost model, once
    num_layers = experiment.layout().layer_map.num_layers
    rows = []
    for k in args.k:
        client_rounds, rounds_trained, lone = Counter[int](), Counter[int](), Counter[int]()
        idle = client_total = 0
        for cell in grid:
            config = cell_config(comparison, cell)
            config.allocation.min_trainers_per_layer = k
            seeded = dataclasses.replace(
                experiment,
                config=config,
                strategy=strategy_from_config(config),
                groups=CapabilityGroups.resolve(config, num_layers, experiment.costs),
            )
            server, _ = inprocess_server(seeded)
            while not server.finished:
                plan = server.plan_round()
                counts = Counter(layer for layers in plan.allocation.layers.values() for layer in layers)
                client_rounds.update(counts)
                rounds_trained.update(counts.keys())
                lone.update(layer for layer, count in counts.items() if count == 1)
                idle += len(plan.idle)
                client_total += len(plan.slots)
                server.round = plan.round
        for name, counter, idle_cell in (
            ("client-rounds", client_rounds, f"{idle} of {client_total}"),
            ("rounds trained", rounds_trained, ""),
            ("one-client rounds", lone, ""),
        ):
            rows.append([f"k={k} {name}", *(counter[layer] for layer in range(num_layers)), idle_cell])
    print(f"{args.comparison} / {args.method}: {len(grid)} seeds x {experiment.config.federation.rounds} rounds")
    print(format_table(["", *(f"layer {layer}" for layer in range(num_layers)), "idle client-rounds"], rows))


if __name__ == "__main__":
    main()
