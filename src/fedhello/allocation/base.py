"""What an allocation strategy receives and returns.

A strategy decides, each round, which LoRA layers each sampled client trains. It sees
the round, the clients with their capability group and layer budget (and, for memory
budgets, the bytes and the model's cost model that prices a layer set), a random stream
of its own, and (when it asks for it) a function that scores layers on the current global
model. It returns a layer set per client; an empty set means the client sits out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, ValidationError

from fedhello.aggregation import ClientUpdate, aggregate
from fedhello.config import NoBooleanNumbers, Weighting
from fedhello.errors import ConfigError, pydantic_location, pydantic_message
from fedhello.models.layers import LayerMap
from fedhello.records import CoverageRecord, FisherRecord
from fedhello.resources.cost_model import CostModel
from fedhello.tensor_state import TensorState


@dataclass(frozen=True)
class ClientSlot:
    """A client sampled this round, with its capability group and layer budget.

    With a memory budget, `memory_bytes` bounds the peak training memory of its layer set
    (`CostModel.peak_bytes`) and `budget` is the most layers that can fit.
    """

    client_id: int
    group: int
    budget: int
    memory_bytes: int | None = None


@dataclass
class AllocationContext:
    """`round` counts from 1; `layer_scores` returns one importance score per layer on the current global model.

    `costs` prices layer sets as the strategy's clients run them (as sub-models for a `depth_reduced` strategy);
    it is set whenever a group has a memory budget or the strategy asks for it.
    """

    round: int
    total_rounds: int
    num_layers: int
    clients: Sequence[ClientSlot]
    group_budgets: Sequence[int]
    rng: np.random.Generator
    layer_scores: Callable[[], np.ndarray] | None = None
    costs: CostModel | None = None


@dataclass
class Allocation:
    """Each client's layer set; `ranks` (rank-heterogeneous methods only) caps a client's LoRA rank.

    `fisher` is set in rounds that refreshed Fisher scores; `info` holds what else a
    strategy wants to show (its sampling weights, which weights it used); `coverage` is what
    the server's coverage rule changed (`fedhello.allocation.coverage`), when it is on.
    """

    layers: dict[int, tuple[int, ...]]
    info: dict[str, Any] = field(default_factory=dict)
    ranks: dict[int, int] = field(default_factory=dict)
    fisher: FisherRecord | None = None
    coverage: CoverageRecord | None = None


@dataclass
class StrategyState:
    """Everything a strategy carries from one round to the next: tensors and JSON-able values."""

    tensors: TensorState = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelLayout:
    """What a strategy may need to know about the model: its LoRA tensors, head and layer-set costs."""

    layer_map: LayerMap
    head_names: tuple[str, ...]
    initial_state: TensorState
    costs: CostModel | None = None


class StrategyParams(NoBooleanNumbers):
    """Base of every strategy's parameter schema: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AllocationStrategy(ABC):
    """Base class; subclasses set `name`, `summary`, a nested `Params` schema and `allocate`.

    Layer-allocation strategies only implement `allocate`. Methods that change what a
    client receives or how updates are combined (rank-heterogeneous LoRA) also override
    `downlink` and `aggregate`. A strategy with state across rounds (Fisher weights,
    pruned ranks, full products) exposes it through `state_dict`/`load_state_dict`, so
    the server's state is one serialisable object. With `personal_models`, every client
    keeps its whole model and nothing is aggregated (evaluation uses the clients' own).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    communicates: ClassVar[bool] = True
    personal_models: ClassVar[bool] = False
    uses_layer_scores: ClassVar[bool] = False  # needs the server's Fisher proxy set
    uses_costs: ClassVar[bool] = False  # needs the cost model even with layer-count budgets
    # Keeps every client's layer set within a memory budget (`strategy_utils.within_budget`); a strategy that
    # does not is refused with memory budgets, whose bound it would break.
    honours_memory_budgets: ClassVar[bool] = False
    # Clients run a shallower sub-model of only their allocated blocks (FedRA as published) instead of the full
    # model with the other LoRA layers frozen; `TrainInstruction.depth_reduced` tells the client, and the server
    # prices its layer sets as such sub-models.
    depth_reduced: ClassVar[bool] = False
    # Its layer sets may be pruned and refilled by the coverage rule (`allocation.min_trainers_per_layer`); False
    # where every client trains every layer and the method lies elsewhere (ranks, personal models).
    layer_sets_adjustable: ClassVar[bool] = True

    def __init__(self, params: StrategyParams) -> None:
        self.params = params
        self._layout: ModelLayout | None = None

    def bind(self, layout: ModelLayout) -> None:
        """Called once by the driver before the first round."""
        self._layout = layout

    @property
    def layout(self) -> ModelLayout:
        """The model layout given to `bind`."""
        if self._layout is None:
            raise RuntimeError(f"strategy {self.name!r} is used before bind()")
        return self._layout

    def downlink(self, global_state: TensorState, client: ClientSlot, rank: int | None) -> TensorState:
        """The tensors a client starts its local training from (by default the global state).

        Called once per trained client and round before `aggregate`; a strategy may keep
        what it sent until then.
        """
        return global_state

    def aggregate(
        self, global_state: TensorState, updates: Sequence[ClientUpdate], weighting: Weighting
    ) -> TensorState:
        """The next global state (by default heterogeneous per-tensor FedAvg)."""
        return aggregate(global_state, updates, weighting)[0]

    def evaluation_state(self, global_state: TensorState) -> TensorState:
        """The tensors the global model is evaluated with (by default the global state).

        A strategy whose global model is not a rank-r LoRA (FlexLoRA's full ΔW) may add
        `merged_delta_key(a_name)` entries: full-size ΔW per module, which evaluation
        merges into the base weights temporarily in place of that module's B·A.
        """
        return global_state

    def state_dict(self) -> StrategyState:
        """What decides this strategy's next rounds (empty for stateless strategies)."""
        return StrategyState()

    def load_state_dict(self, state: StrategyState) -> None:  # noqa: B027 - optional hook, a no-op when stateless
        """Restore what `state_dict` returned (after `bind`)."""

    @classmethod
    def parse_params(cls, raw: dict[str, Any]) -> StrategyParams:
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            # Union members add their type name to the location ('fim_start.int'); keep field names and indices.
            location = ".".join(
                str(part) for part in error["loc"] if isinstance(part, int) or part in cls.Params.model_fields
            ) or pydantic_location(error)
            if error["type"] == "extra_forbidden":
                allowed = ", ".join(cls.Params.model_fields) or "none"
                raise ConfigError(
                    f"unknown config field 'allocation.params.{location}' for strategy {cls.name!r}; allowed: {allowed}"
                ) from None
            raise ConfigError(f"config field 'allocation.params.{location}': {pydantic_message(error)}") from None

    @abstractmethod
    def allocate(self, context: AllocationContext) -> Allocation:
        """Return each sampled client's layer set for this round."""
