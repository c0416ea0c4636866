"""Run every benchmark script in benchmarks/ and print all their ratios with the machine description.

Each script runs in its own process (its output streams through) and prints its ratios as
`RATIO <name> <value>` lines and reference timings as `MS <name> <value>` lines; this
script collects those into one summary at the end. Every ratio is measured side by side
within one script run (setups interleaved), never across runs.

To add a benchmark: put the script in benchmarks/, make it print RATIO/MS lines, and add
one entry to SCRIPTS below.

    python benchmarks/run_all.py                 # all of them
    python benchmarks/run_all.py --only fisher_scoring --threads 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script -> extra arguments (kept short enough for a 2-core machine: ~25 minutes in all)
SCRIPTS: dict[str, list[str]] = {
    "allocation_savings.py": ["--steps", "3", "--repeats", "2"],
    "memory_budgets.py": [],
    "fisher_scoring.py": ["--repeats", "3"],
    # bf16 is 6-10x slower than fp32 on AVX2-only CPUs, so the paired bf16 accuracy check
    # (cpu_levers.py --seeds 0 1 2) is left out here; run it by hand on a bf16-capable CPU.
    "simulator_overhead.py": ["--rounds", "3"],
    "client_scaling.py": ["--rounds", "2"],
    "flower_overhead.py": ["--rounds", "3"],
    "profile_round.py": ["--top", "12"],
    "grid_startup.py": ["--rounds", "8"],
    "cpu_levers.py": ["--repeats", "2", "--eval-samples", "64", "--batch-sizes", "32", "64", "128", "--seeds"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (names without .py)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads, passed to every script (default 1: on a shared 2-core machine two OpenMP threads "
        "wait for each other whenever another process holds a core, which makes timings swing by 10x)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import torch

    from benchlib import machine_description

    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [name for name in SCRIPTS if not args.only or name.removesuffix(".py") in args.only]
    summary: list[tuple[str, str, str]] = []
    failures = []
    for script in chosen:
        command = [
            sys.executable,
            str(HERE / script),
            *SCRIPTS[script],
            *(["--threads", str(args.threads)] if args.threads else []),
        ]
        print(f"\n$ {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE.parent
        )
        for line in process.stdout:
            print(line, end="", flush=True)
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("RATIO", "MS"):
                summary.append((script, parts[1], " ".join(parts[2:])))
        if process.wait() != 0:
            failures.append(script)
        print(f"({script}: {time.perf_counter() - started:.0f} s)", flush=True)

    print("\n# Summary")
    print(machine_description())
    full_step = [value for _, name, value in summary if name == "minilm_full_step"]
    if full_step:
        print(f"per full MiniLM step (batch 16 x 64, forward + backward + AdamW): {full_step[0]} ms")
    width = max((len(name) for _, name, _ in summary), default=10)
    for script, name, value in summary:
        print(f"{name.ljust(width)}  {value}  ({script})")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
