"""`gd`: GD-HLA, deterministic geometric patterns (SPEC §2.1)."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.patterns import pattern_layers
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import PatternParams


@register_strategy
class GDStrategy(AllocationStrategy):
    name = "gd"
    summary = "each client trains the first `budget` layers of a geometric pattern (fixed sets)"
    Params = PatternParams

    def allocate(self, context: AllocationContext) -> Allocation:
        return Allocation(
            {
                client.client_id: pattern_layers(self.params.pattern, context.num_layers, client.budget)
                for client in context.clients
            }
        )
