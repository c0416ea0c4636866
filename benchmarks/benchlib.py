"""Shared pieces of the benchmark scripts: machine description, interleaved timing, tables.

Every benchmark measures its setups side by side in one process, one repetition of each
setup in turn (the order rotating every round), so that load from other processes on a
shared machine hits every setup alike; ratios are medians over those repetitions.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from fedhello.config import ExperimentConfig
from fedhello.models.federated_model import FederatedModel
from fedhello.tasks import task_for

NUM_LABELS = 20


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    import transformers

    return (
        f"CPU {cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch threads, "
        f"transformers {transformers.__version__}, Python {platform.python_version()}"
    )


def add_common_arguments(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def apply_common_arguments(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def load_minilm(device: torch.device | str = "cpu") -> FederatedModel:
    """The default experiment's model: offline MiniLM-L6 with LoRA r=8 on query/value, 20 labels."""
    config = ExperimentConfig()
    return task_for(config.model.task).load_model(config, NUM_LABELS, torch.device(device))


def random_batch(
    vocab_size: int, batch_size: int, length: int, seed: int = 0, num_labels: int = NUM_LABELS
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(min(1000, vocab_size // 2), vocab_size, (batch_size, length), generator=generator),
        "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
        "labels": torch.randint(0, num_labels, (batch_size,), generator=generator),
    }


def time_call(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved(setups: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each setup, `repeats` times, one call per setup in turn (rotating order)."""
    names = list(setups)
    for _ in range(warmup):
        for name in names:
            setups[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(setups[name]))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[object]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])
