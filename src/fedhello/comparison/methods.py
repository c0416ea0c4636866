"""Named methods a comparison can run: each is a config change applied to the base config."""

from __future__ import annotations

from typing import Any

from fedhello.allocation.patterns import PATTERNS


def _strategy(name: str, **params: Any) -> dict[str, Any]:
    return {"allocation": {"strategy": name, "params": params}}


BUILTIN_METHODS: dict[str, dict[str, Any]] = {
    "full": _strategy("full"),
    "exclusive": _strategy("exclusive"),
    "straggler": _strategy("straggler"),
    "fedra": _strategy("fedra"),
    "fedra-depth": _strategy("fedra-depth"),
    **{f"gd-{pattern}": _strategy("gd", pattern=pattern) for pattern in PATTERNS},
    **{f"rgd-{pattern}": _strategy("rgd", pattern=pattern) for pattern in PATTERNS},
    "fim": _strategy("fim"),
    "fedhello": _strategy("fedhello"),
    "hetlora": _strategy("hetlora"),
    "flexlora": _strategy("flexlora"),
    "local": _strategy("local"),
}
CENTRALIZED = "centralized"


def centralized_overrides(base: dict[str, Any]) -> dict[str, Any]:
    """One client holding all training data, training every layer.

    It takes as many local steps per round as all sampled clients of the federation
    together, so both see the same number of samples per round.
    """
    federation = base.get("federation", {})
    training = base.get("training", {})
    from fedhello.config import FederationConfig, TrainingConfig

    per_round = federation.get("clients_per_round", FederationConfig.model_fields["clients_per_round"].default)
    steps = training.get("max_local_steps", TrainingConfig.model_fields["max_local_steps"].default)
    return {
        "federation": {"num_clients": 1, "clients_per_round": 1},
        "partition": {"scheme": "iid"},
        "training": {"max_local_steps": None if steps is None else steps * per_round},
        **_strategy("full"),
    }


def known_methods() -> list[str]:
    return [*BUILTIN_METHODS, CENTRALIZED]
