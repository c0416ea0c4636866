"""Memory sizes as people write them: "350MiB", "1.5GiB", "800MB".

Binary units (KiB, MiB, GiB: powers of 1024) and decimal units (kB, MB, GB: powers of
1000) are both accepted, spelled exactly so, because "MB" and "MiB" differ by 5% and a
budget should mean one thing. A bare number is refused: it would read as a layer count.
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)\s*$")


def parse_memory(text: str) -> int:
    """Bytes of a size such as '350MiB' or '1.5 GiB'; ValueError naming the allowed units otherwise."""
    match = _SIZE.match(text)
    if match is None or match.group(2) not in UNITS:
        raise ValueError(f"{text!r} is not a memory size; write a number and one of {', '.join(UNITS)} (e.g. '350MiB')")
    amount = float(match.group(1))
    size = int(amount * UNITS[match.group(2)])
    if amount > 0 and size < 1:
        raise ValueError(
            f"memory size {text!r} is less than one byte ('B' means bytes); write the budget with its unit, "
            "e.g. '500MB' or '350MiB'"
        )
    if size < 1:
        raise ValueError(f"memory size {text!r} must be positive, e.g. '350MiB'")
    return size


def format_mib(num_bytes: float) -> str:
    """Bytes as MiB with one decimal, the unit budgets are usually written in."""
    return f"{num_bytes / 2**20:.1f} MiB"
