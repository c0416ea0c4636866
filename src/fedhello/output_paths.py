"""Checks on a folder a command will create or write (run, comparison and Flower app directories)."""

from __future__ import annotations

import os
from pathlib import Path

from fedhello.errors import ConfigError


def check_creatable(path: Path, what: str) -> None:
    """Refuse `path` unless it is, or can be made, a folder: its nearest existing ancestor must be a writable folder.

    `what` names the option or config field in the message, e.g. "config field 'output.dir'".
    """
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: cannot create {path} ({existing} is not a writable directory)")
