"""`straggler`: everyone trains the weakest group's budget, on one fixed pattern set."""

from pydantic import Field

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.patterns import PatternName, pattern_layers
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import PatternParams


class StragglerParams(PatternParams):
    pattern: PatternName = Field("inverted_triangle", description="the pattern whose first k layers everyone trains")


@register_strategy
class StragglerStrategy(AllocationStrategy):
    name = "straggler"
    summary = "every client trains the smallest group budget, the same layers (pattern's first k)"
    Params = StragglerParams
    params: StragglerParams

    def allocate(self, context: AllocationContext) -> Allocation:
        layers = pattern_layers(self.params.pattern, context.num_layers, min(context.group_budgets))
        return Allocation({client.client_id: layers for client in context.clients})
