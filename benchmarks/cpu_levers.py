"""Levers of the default run's wall time on CPU, measured side by side in one run.

On the offline MiniLM-L6 classifier and 20 Newsgroups (sequence length 64):

  start-up        model load, dataset load and tokenisation of the train + test splits
  evaluation      samples/s of the classification task's `evaluate` in fp32 and bf16 autocast at
                  several batch sizes (real test texts), interleaved; projected seconds for
                  the 500-sample subset and the whole 7,528-sample test set
  training step   forward + backward + AdamW of batch 16 x 64 in fp32 and bf16, interleaved;
                  and fp32 with all torch threads against one thread, interleaved
  accuracy        paired: from the same initial adapter, `--train-steps` centralised steps on
                  the same batches in fp32 and in bf16 (one pair per seed), each model then
                  evaluated in fp32 and in bf16 on the same test subset

    python benchmarks/cpu_levers.py --repeats 3 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchlib import (
    add_common_arguments,
    apply_common_arguments,
    format_table,
    interleaved,
    load_minilm,
    machine_description,
    median,
    random_batch,
    time_call,
)
from fedhello.data.datasets import load_dataset
from fedhello.data.tokenize import encode_texts
from fedhello.precision import autocast_for
from fedhello.tasks import EvaluationSettings
from fedhello.training import LocalTrainingSettings, train_locally

MAX_LENGTH = 64
FULL_TEST = 7528
SUBSET = 500


def training_step(federated, batch, optimizer, precision):
    with autocast_for(federated.device, precision):
        loss = federated.model(**batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=256, help="test samples per timed evaluation")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="accuracy pairs (none: skip)")
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--accuracy-samples", type=int, default=500)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)
    print(f"# CPU levers: MiniLM-L6 on 20 Newsgroups, length {MAX_LENGTH}, {args.repeats} interleaved repeats")
    print(machine_description())

    # Start-up costs (each once; the second model load shows the warm file cache).
    load_s = [time_call(load_minilm) for _ in range(2)]
    started = time.perf_counter()
    data = load_dataset("20newsgroups")
    dataset_s = time.perf_counter() - started
    federated = load_minilm()
    tokenizer = federated.preprocessor
    started = time.perf_counter()
    train = encode_texts(tokenizer, data.train_texts, data.train_labels, MAX_LENGTH)
    test = encode_texts(tokenizer, data.test_texts, data.test_labels, MAX_LENGTH)
    tokenise_s = time.perf_counter() - started
    print(
        f"start-up: model load {load_s[0]:.2f} s (again {load_s[1]:.2f} s), dataset load {dataset_s:.2f} s, "
        f"tokenisation of {len(train) + len(test):,} texts {tokenise_s:.2f} s (fast tokenizer: {tokenizer.is_fast})"
    )

    # Evaluation throughput.
    indices = np.arange(args.eval_samples)
    setups = {
        (precision, size): (
            lambda p=precision, s=size: federated.task.evaluate(federated, test, indices, EvaluationSettings(s, p))
        )
        for size in args.batch_sizes
        for precision in ("fp32", "bf16")
    }
    times = interleaved({f"{p} batch {s}": f for (p, s), f in setups.items()}, args.repeats)
    base_name = f"fp32 batch {64 if 64 in args.batch_sizes else args.batch_sizes[0]}"
    base = median(times[base_name])
    rows = []
    for name, values in times.items():
        per_sample = median(values) / args.eval_samples
        rows.append(
            [
                name,
                f"{1 / per_sample:.0f}",
                f"{base / median(values):.2f}",
                f"{SUBSET * per_sample:.1f}",
                f"{FULL_TEST * per_sample:.1f}",
            ]
        )
    print(
        format_table(
            ["evaluation", "samples/s", f"speed-up vs {base_name}", f"s per {SUBSET}", f"s per {FULL_TEST:,}"], rows
        )
    )
    best_bf16 = min((name for name in times if name.startswith("bf16")), key=lambda name: median(times[name]))
    print(f"RATIO eval_bf16_speedup {base / median(times[base_name.replace('fp32', 'bf16')]):.2f}")
    print(f"RATIO eval_best_speedup {base / median(times[best_bf16]):.2f} ({best_bf16})")

    # Training step.
    batch = random_batch(federated.model.config.vocab_size, 16, MAX_LENGTH)
    parameters = federated.set_trainable(federated.exchanged_names)
    optimizer = torch.optim.AdamW(parameters, lr=1e-6)
    federated.model.train()
    step_times = interleaved(
        {p: (lambda p=p: training_step(federated, batch, optimizer, p)) for p in ("fp32", "bf16")}, 2 * args.repeats
    )
    threads = torch.get_num_threads()
    thread_times = {}
    if threads > 1:

        def one_thread_step() -> None:
            torch.set_num_threads(1)
            try:
                training_step(federated, batch, optimizer, "fp32")
            finally:
                torch.set_num_threads(threads)

        thread_times = interleaved(
            {
                f"{threads} threads": lambda: training_step(federated, batch, optimizer, "fp32"),
                "1 thread": one_thread_step,
            },
            2 * args.repeats,
        )
    federated.set_trainable(())
    if thread_times:
        one_ms, many_ms = (1000 * median(thread_times[name]) for name in ("1 thread", f"{threads} threads"))
        print(f"training step fp32: {threads} torch threads {many_ms:.0f} ms, 1 torch thread {one_ms:.0f} ms")
        print(f"RATIO train_threads_speedup {one_ms / many_ms:.2f} ({threads} threads vs 1)")
    fp32_ms, bf16_ms = 1000 * median(step_times["fp32"]), 1000 * median(step_times["bf16"])
    print(f"training step 16 x {MAX_LENGTH}: fp32 {fp32_ms:.0f} ms, bf16 {bf16_ms:.0f} ms")
    print(f"RATIO train_bf16_speedup {fp32_ms / bf16_ms:.2f}")

    # Accuracy, paired by seed.
    if not args.seeds:
        return
    initial = federated.state()
    eval_indices = np.random.default_rng(0).choice(len(test), args.accuracy_samples, replace=False)
    settings = {p: LocalTrainingSettings(3e-3, 0.0, 16, 1, args.train_steps, None, p) for p in ("fp32", "bf16")}
    rows = []
    for seed in args.seeds:
        samples = np.random.default_rng(seed).choice(len(train), 16 * args.train_steps, replace=False)
        predictions = {}
        for train_precision in ("fp32", "bf16"):
            federated.load_state(initial)
            train_locally(
                federated,
                train,
                samples,
                list(federated.exchanged_names),
                settings[train_precision],
                torch.Generator().manual_seed(seed),
            )
            for eval_precision in ("fp32", "bf16"):
                result = federated.task.evaluate(federated, test, eval_indices, EvaluationSettings(64, eval_precision))
                predictions[(train_precision, eval_precision)] = result["accuracy"]
        rows.append(
            [
                seed,
                *(
                    f"{predictions[key]:.3f}"
                    for key in [("fp32", "fp32"), ("fp32", "bf16"), ("bf16", "fp32"), ("bf16", "bf16")]
                ),
            ]
        )
    print(
        f"accuracy on {args.accuracy_samples} test samples after {args.train_steps} centralised steps (batch "
        "16, lr 3e-3):"
    )
    print(format_table(["seed", "train fp32 / eval fp32", "fp32 / bf16", "bf16 / fp32", "bf16 / bf16"], rows))
    columns = np.array([[float(cell) for cell in row[1:]] for row in rows])
    means = columns.mean(0)
    print(f"mean: {' '.join(f'{m:.4f}' for m in means)}")
    print(f"RATIO accuracy_delta_eval_bf16 {means[1] - means[0]:+.4f}")
    print(f"RATIO accuracy_delta_train_and_eval_bf16 {means[3] - means[0]:+.4f}")


if __name__ == "__main__":
    main()
