"""Task kinds, registered by name (`model.task` in the config)."""

from __future__ import annotations

import importlib

from fedhello.errors import ConfigError
from fedhello.tasks.base import EvaluationSettings, Task

TASK_MODULES = {
    "sequence_classification": ("fedhello.tasks.sequence_classification", "SequenceClassificationTask"),
    "image_classification": ("fedhello.tasks.image_classification", "ImageClassificationTask"),
    "causal_lm": ("fedhello.tasks.causal_lm", "CausalLMTask"),
}


def task_for(kind: str) -> Task:
    """The task of a `model.task` value (modules are imported on demand: each pulls its model classes)."""
    if kind not in TASK_MODULES:
        raise ConfigError(f"config field 'model.task': unknown task {kind!r}; available: {', '.join(TASK_MODULES)}")
    module, class_name = TASK_MODULES[kind]
    return getattr(importlib.import_module(module), class_name)()


__all__ = ["TASK_MODULES", "EvaluationSettings", "Task", "task_for"]
