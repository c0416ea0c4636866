"""Errors phrased for the user: the CLI prints their one-line message and exits with 2."""


class ConfigError(ValueError):
    """A configuration problem: names the field and what is allowed."""
