"""`rgd`: RGD-HLA, layers drawn per client per round with the pattern's count profile as weights."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.patterns import profile_weights
from fedhello.allocation.registry import register_strategy
from fedhello.allocation.strategy_utils import PatternParams, sample_allocation


@register_strategy
class RGDStrategy(AllocationStrategy):
    name = "rgd"
    summary = "each client samples `budget` layers, weighted by the pattern's count profile"
    honours_memory_budgets = True
    Params = PatternParams
    params: PatternParams

    def allocate(self, context: AllocationContext) -> Allocation:
        weights = profile_weights(self.params.pattern, context.num_layers, context.group_budgets)
        return Allocation(sample_allocation(context, weights), {"weights": weights.tolist()})
