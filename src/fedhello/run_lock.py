"""One writer per run directory: an exclusive OS lock on `<dir>/.fedhello.lock`.

The lock is `fcntl.flock` on an open file, so the kernel drops it when the holding process
ends in any way (SIGKILL included): a killed run never leaves a stale lock. The file
itself stays and holds the last holder's PID, which the refusal names. `fedhello run`,
`resume` and `compare` (for the grid, and each cell's run) take it before they write.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedhello.errors import ConfigError

LOCK_FILE = ".fedhello.lock"


def _holder(handle: int) -> str:
    try:
        text = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "a process whose PID it did not record"


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the directory's lock (creating the directory if needed) until the block ends or the process dies.

    Raises `ConfigError` naming the holder's PID if another process holds it.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"cannot write in {directory} ({error.strerror}); choose a writable directory") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{directory} is being written by another fedhello process ({_holder(handle)}); "
                "wait for it to finish or stop it, or choose another directory"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # closing the only descriptor releases the lock
