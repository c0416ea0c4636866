"""`local`: clients never aggregate; each trains its own model (all layers) on its own data.

The lower bound of federated learning. Evaluation reports the mean over clients of each
client's accuracy on the test samples of the classes it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedhello.aggregation import ClientUpdate, TensorState
from fedhello.allocation.base import Allocation, AllocationContext, AllocationStrategy, ClientSlot
from fedhello.allocation.registry import register_strategy


@register_strategy
class LocalStrategy(AllocationStrategy):
    name = "local"
    summary = "no aggregation: every client keeps and trains its own LoRA + head (all layers)"
    communicates = False

    def __init__(self, params) -> None:
        super().__init__(params)
        self._states: dict[int, TensorState] = {}
        self._downlinked: dict[int, TensorState] = {}

    def allocate(self, context: AllocationContext) -> Allocation:
        every_layer = tuple(range(context.num_layers))
        return Allocation({client.client_id: every_layer for client in context.clients})

    def downlink(self, global_state: TensorState, client: ClientSlot, rank: int | None) -> TensorState:
        start = self._states.get(client.client_id, global_state)
        self._downlinked[client.client_id] = start
        return start

    def aggregate(self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: str) -> TensorState:
        for update in updates:
            start = self._downlinked[update.client_id]
            self._states[update.client_id] = {
                name: start[name] + update.deltas[name] if name in update.deltas else tensor
                for name, tensor in start.items()
            }
        return global_state

    def personal_states(self) -> dict[int, TensorState]:
        return self._states
