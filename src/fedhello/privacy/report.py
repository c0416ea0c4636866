"""The summary's privacy section: ε over the run, and each layer's coverage and noise-to-signal ratio."""

from __future__ import annotations

import numpy as np

from fedhello.outputs.summary import format_table
from fedhello.records import RoundRecord


def privacy_section(rounds: list[RoundRecord]) -> str:
    """Markdown: the guarantee reached, then per layer the mean contributors and noise-to-signal ratio."""
    private = [r.privacy for r in rounds if r.privacy is not None]
    last = private[-1]
    guarantee = (
        f"User-level (ε, δ) = ({last.epsilon:.4g}, {last.delta:g}) after {len(private)} rounds "
        f"(RDP accountant, {len(rounds[-1].clients)} clients sampled without replacement per round), "
        f"noise multiplier {last.noise_multiplier:.4g}, clip norm {last.clip_norm:.4g} in the last round."
    )
    explanation = (
        "Per layer, over the rounds: the clients whose update reached the server (coverage) and the noise-to-signal "
        "ratio ||noise|| / ||sum of clipped updates||. The noise is the same on every layer; fewer contributors "
        "mean less signal."
    )
    num_layers = len(last.layer_contributors)
    rows: list[list] = []
    for layer in range(num_layers):
        counts = [p.layer_contributors[layer] for p in private]
        ratios = [ratio for p in private if (ratio := p.layer_noise_to_signal[layer]) is not None]
        rows.append([layer, float(np.mean(counts)), min(counts), float(np.median(ratios)) if ratios else None])
    head = [p.head_noise_to_signal for p in private if p.head_noise_to_signal is not None]
    if head:
        counts = [p.head_contributors for p in private]
        rows.append(["head", float(np.mean(counts)), min(counts), float(np.median(head))])
    table = format_table(["layer", "mean contributors", "min contributors", "median noise / signal"], rows)
    return f"{guarantee}\n\n{explanation}\n\n{table}"
