"""`rgd`: RGD-HLA, layers drawn per client per round with the pattern's count profile as weights."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy, StrategyParams
from fedhello.allocation.patterns import PatternName, profile_weights, sample_layers
from fedhello.allocation.registry import register_strategy


class RGDParams(StrategyParams):
    pattern: PatternName = "bottleneck"


def sample_allocation(context: AllocationContext, weights) -> dict[int, tuple[int, ...]]:
    """Each client draws its budget of layers from `weights`, without replacement."""
    return {client.client_id: sample_layers(context.rng, weights, client.budget) for client in context.clients}


@register_strategy
class RGDStrategy(AllocationStrategy):
    name = "rgd"
    summary = "each client samples `budget` layers, weighted by the pattern's count profile"
    Params = RGDParams

    def allocate(self, context: AllocationContext) -> Allocation:
        weights = profile_weights(self.params.pattern, context.num_layers, context.group_budgets)
        return Allocation(sample_allocation(context, weights), {"weights": weights.tolist()})
