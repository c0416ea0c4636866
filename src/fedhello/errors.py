"""Errors phrased for the user: the CLI prints their one-line message and exits with 2."""


class ConfigError(ValueError):
    """A configuration problem: names the field and what is allowed."""


def pydantic_message(error: dict) -> str:
    """A pydantic error's message without the 'Value error, ' prefix custom validators get."""
    return error["msg"].removeprefix("Value error, ")
