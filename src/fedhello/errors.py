"""Errors phrased for the user: the CLI prints their one-line message and exits with 2."""

import errno

from pydantic_core import ErrorDetails

# The errno values of a full disk (or quota): a run stops as `failed` at its last checkpoint.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class ConfigError(ValueError):
    """A configuration problem: names the field and what is allowed."""


class NodeDataError(ConfigError):
    """A node's own data file or one of its rows is unusable: names the file, the row and what is wrong."""


class EngineError(RuntimeError):
    """A distributed engine could not run (Flower processes, nodes, the app); the CLI prints it and exits with 1."""


class RunInterrupted(Exception):
    """Ctrl-C stopped a run cleanly; the message says how to resume it."""


def pydantic_location(error: ErrorDetails) -> str:
    """A pydantic error's field path, dotted ('groups.budgets.0'); '' for an error of the whole value."""
    return ".".join(str(part) for part in error["loc"])


def pydantic_message(error: ErrorDetails) -> str:
    """A pydantic error's message without the 'Value error, ' prefix custom validators get."""
    return error["msg"].removeprefix("Value error, ")
