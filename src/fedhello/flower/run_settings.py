"""How a fedhello config and run directory reach the Flower apps.

`flwr run` hands both apps the run config declared in the app's pyproject.toml; the
fedhello config travels there base64-encoded (run-config values must be flat strings).
The Python simulation API has no run config, so the launcher sets environment
variables instead, which Flower's worker processes inherit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedhello.config import ExperimentConfig, build_config, config_to_yaml, parse_yaml
from fedhello.errors import EngineError
from fedhello.resources.cost_model import CostModel

CONFIG_KEY = "fedhello-config"
OUT_DIR_KEY = "out-dir"
RESUME_KEY = "resume"
ENGINE_KEY = "engine"
COSTS_KEY = "fedhello-costs"
CONFIG_ENV = "FEDHELLO_FLOWER_CONFIG"
OUT_DIR_ENV = "FEDHELLO_FLOWER_OUT_DIR"
RESUME_ENV = "FEDHELLO_FLOWER_RESUME"
ENGINE_ENV = "FEDHELLO_FLOWER_ENGINE"
# How the run was launched (recorded in run_info.json; `fedhello resume` relaunches the same way).
SIMULATION, LOCAL_DEPLOYMENT, DEPLOYMENT = "flower-sim", "flower-local", "flower-deployment"
COSTS_ENV = "FEDHELLO_FLOWER_COSTS"


def encode_config(config: ExperimentConfig) -> str:
    return base64.b64encode(config_to_yaml(config).encode()).decode()


def config_key(encoded: str) -> str:
    """Cache key of a loaded task: processes that receive the same config share it."""
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def _setting(run_config: Mapping[str, Any], key: str, env: str) -> str:
    return str(run_config.get(key) or os.environ.get(env, ""))


def encoded_config(run_config: Mapping[str, Any]) -> str:
    encoded = _setting(run_config, CONFIG_KEY, CONFIG_ENV)
    if not encoded:
        raise EngineError(f"no fedhello config: set run-config key {CONFIG_KEY!r} (see `fedhello flower-app`)")
    return encoded


def decode_config(encoded: str) -> ExperimentConfig:
    return build_config(parse_yaml(base64.b64decode(encoded).decode(), "fedhello config from the Flower run config"))


def out_dir_from(run_config: Mapping[str, Any]) -> Path:
    value = _setting(run_config, OUT_DIR_KEY, OUT_DIR_ENV)
    if not value:
        raise EngineError(f"no run directory: set run-config key {OUT_DIR_KEY!r}")
    return Path(value)


def encode_costs(costs: CostModel | None) -> str:
    """The launcher's measured cost model, so the ServerApp does not probe again ("" when none)."""
    return "" if costs is None else base64.b64encode(json.dumps(costs.to_json()).encode()).decode()


def costs_from(run_config: Mapping[str, Any]) -> CostModel | None:
    encoded = _setting(run_config, COSTS_KEY, COSTS_ENV)
    return CostModel.from_json(json.loads(base64.b64decode(encoded))) if encoded else None


def resume_from(run_config: Mapping[str, Any]) -> bool:
    """Whether the ServerApp continues the run directory's last checkpoint instead of starting it."""
    return _setting(run_config, RESUME_KEY, RESUME_ENV).lower() == "true"


def engine_from(run_config: Mapping[str, Any]) -> str:
    return _setting(run_config, ENGINE_KEY, ENGINE_ENV) or DEPLOYMENT
