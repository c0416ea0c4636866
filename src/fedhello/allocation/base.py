"""What an allocation strategy receives and returns.

A strategy decides, each round, which LoRA layers each sampled client trains. It sees
the round, the clients with their capability group and layer budget, a random stream of
its own, and (when it asks for it) a function that scores layers on the current global
model. It returns a layer set per client; an empty set means the client sits out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fedhello.aggregation import ClientUpdate, TensorState, aggregate
from fedhello.errors import ConfigError, pydantic_message
from fedhello.models.layers import LayerMap


@dataclass(frozen=True)
class ClientSlot:
    """A client sampled this round, with its capability group and layer budget."""

    client_id: int
    group: int
    budget: int


@dataclass
class AllocationContext:
    """`round` counts from 1; `layer_scores` returns one importance score per layer on the current global model."""

    round: int
    total_rounds: int
    num_layers: int
    clients: Sequence[ClientSlot]
    group_budgets: Sequence[int]
    rng: np.random.Generator
    layer_scores: Callable[[], np.ndarray] | None = None


@dataclass
class Allocation:
    """Each client's layer set; `ranks` (rank-heterogeneous methods only) caps a client's LoRA rank."""

    layers: dict[int, tuple[int, ...]]
    info: dict[str, Any] = field(default_factory=dict)
    ranks: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelLayout:
    """What a strategy may need to know about the model: its LoRA tensors and head."""

    layer_map: LayerMap
    head_names: tuple[str, ...]
    initial_state: TensorState


class StrategyParams(BaseModel):
    """Base of every strategy's parameter schema: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AllocationStrategy(ABC):
    """Base class; subclasses set `name`, `summary`, a nested `Params` schema and `allocate`.

    Layer-allocation strategies only implement `allocate`. Methods that change what a
    client receives or how updates are combined (rank-heterogeneous LoRA, purely local
    training) also override `downlink`, `aggregate`, and, when every client keeps its
    own model, `personal_states`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    communicates: ClassVar[bool] = True
    uses_layer_scores: ClassVar[bool] = False  # needs the server's Fisher proxy set

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self.layout: ModelLayout | None = None

    def bind(self, layout: ModelLayout) -> None:
        """Called once by the driver before the first round."""
        self.layout = layout

    def downlink(self, global_state: TensorState, client: ClientSlot, rank: int | None) -> TensorState:
        """The tensors a client starts its local training from (by default the global state)."""
        return global_state

    def aggregate(
        self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: str
    ) -> TensorState:
        """The next global state (by default heterogeneous per-tensor FedAvg)."""
        return aggregate(global_state, updates, weighting)[0]

    def personal_states(self) -> dict[int, TensorState] | None:
        """Per-client models to evaluate instead of the global one (None: evaluate the global model)."""
        return None

    @classmethod
    def parse_params(cls, raw: dict[str, Any]) -> StrategyParams:
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            # Union members add their type name to the location ('fim_start.int'); keep field names and indices.
            location = ".".join(
                str(part) for part in error["loc"] if isinstance(part, int) or part in cls.Params.model_fields
            ) or ".".join(str(part) for part in error["loc"])
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(cls.Params.model_fields) or "none"
                raise ConfigError(
                    f"unknown config field 'allocation.params.{location}' for strategy {cls.name!r}; allowed: {allowed}"
                ) from None
            raise ConfigError(f"config field 'allocation.params.{location}': {pydantic_message(error)}") from None

    @abstractmethod
    def allocate(self, context: AllocationContext) -> Allocation:
        """Return each sampled client's layer set for this round."""


def rounds_from(value: int | float, total_rounds: int) -> int:
    """A round count given as an integer, or as a fraction of the run (0.1 of 500 rounds = 50)."""
    return value if isinstance(value, int) else max(1, round(value * total_rounds))


def sorted_layers(layers: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    return tuple(sorted(int(layer) for layer in layers))
