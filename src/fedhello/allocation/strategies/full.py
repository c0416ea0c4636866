"""`full`: homogeneous FedAvg-LoRA; every client trains every layer (no resource limits)."""

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.registry import register_strategy


@register_strategy
class FullStrategy(AllocationStrategy):
    name = "full"
    summary = "every client trains all LoRA layers (upper reference, ignores budgets)"

    def allocate(self, context: AllocationContext) -> Allocation:
        every_layer = tuple(range(context.num_layers))
        return Allocation({client.client_id: every_layer for client in context.clients})
