"""Built-in allocation strategies; importing this package registers them all."""

from fedhello.allocation.strategies import (  # noqa: F401
    exclusive,
    fedhello,
    fedra,
    fisher_per_byte,
    fim,
    flexlora,
    full,
    gd,
    hetlora,
    local,
    rgd,
    straggler,
)
