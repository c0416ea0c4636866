"""`exclusive`: only clients whose budget covers every layer train; the others sit out."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.registry import register_strategy


@register_strategy
class ExclusiveStrategy(AllocationStrategy):
    name = "exclusive"
    summary = "only full-capability clients train all layers; lower groups sit out"
    honours_memory_budgets = True

    def allocate(self, context: AllocationContext) -> Allocation:
        every_layer = tuple(range(context.num_layers))
        return Allocation(
            {client.client_id: every_layer if client.budget >= context.num_layers else () for client in context.clients}
        )
