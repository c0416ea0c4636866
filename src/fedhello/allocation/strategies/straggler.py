"""`straggler`: everyone trains the weakest group's budget, on one fixed pattern set."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy, StrategyParams
from fedhello.allocation.patterns import PatternName, pattern_layers
from fedhello.allocation.registry import register_strategy


class StragglerParams(StrategyParams):
    pattern: PatternName = "inverted_triangle"


@register_strategy
class StragglerStrategy(AllocationStrategy):
    name = "straggler"
    summary = "every client trains the smallest group budget, the same layers (pattern's first k)"
    Params = StragglerParams

    def allocate(self, context: AllocationContext) -> Allocation:
        layers = pattern_layers(self.params.pattern, context.num_layers, min(context.group_budgets))
        return Allocation({client.client_id: layers for client in context.clients})
