"""Fisher scoring: batched per-sample gradients (vmap) against one backward per sample.

Side by side in one run, on the offline MiniLM-L6 classifier (LoRA r=8 with random
non-zero factors, eval mode) and one proxy set of random token batches:

  loop            one ordinary forward + backward per sample (batch of one)
  vmap sdpa       torch.func vmap(grad) with the model's fused attention (no vmap rule:
                  torch runs that op one sample at a time)
  vmap eager      the same with eager attention, what fedhello's scoring uses
  batched floor   one plain batched forward + backward of the summed objective (no
                  per-sample gradients at all): the compute a batched method cannot beat

Setups are timed in turn (rotating order), `--repeats` times; ratios are loop / setup of
the medians. It also checks that every method's layer scores match the loop's.

    python benchmarks/fisher_scoring.py --samples 32 --length 64 --repeats 3
"""

from __future__ import annotations

import argparse

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
)
from fedhello.fisher import attention_implementation, layer_scores, per_sample_gradients, per_sample_gradients_loop


def vmap_gradients(federated, batch, names, chunk, attention):
    parts = [
        per_sample_gradients(
            federated,
            {key: value[start : start + chunk] for key, value in batch.items()},
            names,
            "log_likelihood",
            attention,
        )
        for start in range(0, len(batch["labels"]), chunk)
    ]
    return {name: torch.cat([part[name] for part in parts]) for name in names}


def batched_floor(federated, batch, names, attention):
    federated.set_trainable(names)
    with attention_implementation(federated.model, attention):
        logits = federated.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.log_softmax(logits, -1).gather(1, batch["labels"][:, None]).sum().backward()
    federated.set_trainable(())


def scores_of(federated, gradients):
    return layer_scores({name: value.pow(2).mean(0) for name, value in gradients.items()}, federated.layer_map)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=32, help="proxy samples")
    parser.add_argument("--length", type=int, default=64, help="tokens per sample")
    parser.add_argument("--chunk", type=int, default=16, help="samples per vmap call (fisher.batch_size)")
    parser.add_argument("--repeats", type=int, default=3)
    add_common_arguments(parser)
    args = parser.parse_args()
    apply_common_arguments(args)

    federated = load_minilm()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name in federated.layer_map.all_names:
            parameter = federated.parameters_by_name()[name]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    federated.model.eval()
    batch = random_batch(federated.model.config.vocab_size, args.samples, args.length)
    batch["attention_mask"][1, args.length // 2 :] = 0  # one padded sample
    names = list(federated.layer_map.all_names)
    implementation = federated.model.config._attn_implementation

    setups = {
        "loop (one backward per sample)": lambda: per_sample_gradients_loop(federated, batch, names, "log_likelihood"),
        f"vmap, {implementation} attention": lambda: vmap_gradients(federated, batch, names, args.chunk, None),
        "vmap, eager attention (fedhello)": lambda: vmap_gradients(federated, batch, names, args.chunk, "eager"),
        "batched floor (no per-sample grads)": lambda: batched_floor(federated, batch, names, None),
    }
    reference = scores_of(federated, setups["loop (one backward per sample)"]())
    differences = {}
    for name in list(setups)[1:3]:
        scores = scores_of(federated, setups[name]())
        differences[name] = float(np.max(np.abs(scores - reference) / np.abs(reference)))
    times = interleaved(setups, args.repeats, warmup=0)

    loop_s = median(times["loop (one backward per sample)"])
    rows = [
        [
            name,
            f"{median(values):.3f}",
            f"{loop_s / median(values):.2f}",
            f"{differences[name]:.1e}" if name in differences else "-",
        ]
        for name, values in times.items()
    ]
    print(
        f"# Fisher scoring: MiniLM-L6, {args.samples} proxy samples x {args.length} tokens, vmap chunk "
        f"{args.chunk}, {args.repeats} interleaved repeats"
    )
    print(machine_description())
    print(format_table(["setup", "s (median)", "loop / setup", "max rel. score diff"], rows))
    print(f"RATIO fisher_vmap_eager_speedup {loop_s / median(times['vmap, eager attention (fedhello)']):.2f}")
    print(f"RATIO fisher_vmap_sdpa_speedup {loop_s / median(times[f'vmap, {implementation} attention']):.2f}")
    print(f"RATIO fisher_batched_floor_speedup {loop_s / median(times['batched floor (no per-sample grads)']):.2f}")


if __name__ == "__main__":
    main()
