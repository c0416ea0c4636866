"""`gd`: GD-HLA, deterministic geometric patterns (SPEC §2.1).

Under a memory budget a client walks the pattern's order (the order layers join it as the
budget grows) and takes every layer that still fits, so patterns that start at layer 0
(triangle, bottleneck) skip the shallow layers a small budget cannot pay for.
"""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.patterns import pattern_layers, pattern_order
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import PatternParams, fill_in_order


@register_strategy
class GDStrategy(AllocationStrategy):
    name = "gd"
    summary = "each client trains the first `budget` layers of a geometric pattern (fixed sets)"
    honours_memory_budgets = True
    Params = PatternParams
    params: PatternParams

    def allocate(self, context: AllocationContext) -> Allocation:
        order = pattern_order(self.params.pattern, context.num_layers)
        return Allocation(
            {
                client.client_id: pattern_layers(self.params.pattern, context.num_layers, client.budget)
                if client.memory_bytes is None
                else fill_in_order(order, client, context.costs)
                for client in context.clients
            }
        )
