"""`fedra`: FedRA, random layer sets with equal weights."""

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
