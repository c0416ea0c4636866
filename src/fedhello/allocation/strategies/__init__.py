"""Built-in allocation strategies; importing this package registers them all."""

from fedhello.allocation.strategies import (  # noqa: F401
    exclusive,
    fedhello,
    fedra,
    fim,
    fisher_per_byte,
    flexlora,
    full,
    gd,
    hetlora,
    local,
    rgd,
    straggler,
)
