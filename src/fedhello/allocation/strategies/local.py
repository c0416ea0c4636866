"""`local`: clients never aggregate; each trains its own model (all layers) on its own data.

The lower bound of federated learning. Every client keeps its whole LoRA + head state
itself (client-held state, as in FedBN) and sends nothing; evaluation reports the mean
over clients of each client's accuracy on the test samples of the classes it holds.
"""

from __future__ import annotations

from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy
from fedhello.allocation.registry import register_strategy


@register_strategy
class LocalStrategy(AllocationStrategy):
    name = "local"
    summary = "no aggregation: every client keeps and trains its own LoRA + head (all layers)"
    communicates = False
    personal_models = True
    layer_sets_adjustable = False

    def allocate(self, context: AllocationContext) -> Allocation:
        every_layer = tuple(range(context.num_layers))
        return Allocation({client.client_id: every_layer for client in context.clients})
