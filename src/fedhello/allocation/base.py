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

from fedhello.errors import ConfigError, pydantic_message


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
    layers: dict[int, tuple[int, ...]]
    info: dict[str, Any] = field(default_factory=dict)


class StrategyParams(BaseModel):
    """Base of every strategy's parameter schema: unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AllocationStrategy(ABC):
    """Base class; subclasses set `name`, `summary`, a nested `Params` schema and `allocate`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams) -> None:
        self.params = params

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
