"""`fedra`: FedRA, random layer sets with equal weights; `fedra-depth`: the same draw, run as published.

`fedra` is the Fed-HeLLo paper's re-implementation: a client runs the full model and
trains its drawn layers, the other LoRA layers applied frozen. FedRA as published (Su
et al.; code leondada/FedRA) gives a client only its drawn blocks: it runs a shallower
sub-model of them (embeddings, its blocks in their original order, final norm, head), so
its forward pass, activations and memory shrink with its budget, and the server puts each
trained block back at its global index.
"""

import numpy as np

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import sample_allocation


@register_strategy
class FedRAStrategy(AllocationStrategy):
    name = "fedra"
    summary = "each client samples `budget` layers uniformly at random every round"
    honours_memory_budgets = True

    def allocate(self, context: AllocationContext) -> Allocation:
        weights = np.full(context.num_layers, 1.0 / context.num_layers)
        return Allocation(sample_allocation(context, weights))


@register_strategy
class FedRADepthStrategy(FedRAStrategy):
    name = "fedra-depth"
    summary = "fedra's draw, but each client runs a shallower sub-model of only its sampled blocks (FedRA as published)"
    depth_reduced = True  # the server prices its layer sets as sub-models (`CostModel.for_depth_reduced`)
