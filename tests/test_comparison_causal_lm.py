"""`fedhello compare` on instruction tuning: a tiny random Llama grid, end to end through the CLI.

The report's endpoint is the held-out loss (lower is better): its table, paired differences
and per-group losses are checked against the runs' own metrics.jsonl and partition.csv.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import yaml

from fedhello.cli import main
from fedhello.outputs.run_writer import read_jsonl
from test_causal_lm import tiny_instructions, tiny_llama_folder  # noqa: F401 (fixtures)

SEEDS = (0, 1)
METHODS = ("fedra", "full")


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def grid_file(tmp_path, folder) -> str:
    grid = {
        "name": "tiny-lm",
        "base": {
            "model": {"name": str(folder), "task": "causal_lm", "max_length": 32},
            "data": {"dataset": "tiny-instructions"},
            "lora": {"target_modules": ["q_proj", "v_proj"]},
            "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 2},
            "partition": {"scheme": "pathological", "classes_per_client": 1, "min_per_client": 2},
            "groups": {"budgets": [2, 3, 4]},
            "fisher": {"proxy_size": 6, "batch_size": 6},
            "training": {"lr": 0.02, "batch_size": 6, "max_local_steps": 2},
            "evaluation": {
                "every": 1,
                "subset_size": None,
                "final_size": None,
                "batch_size": 9,
                "generate_samples": 2,
                "max_new_tokens": 4,
            },
            "output": {"tensorboard": False},
        },
        "methods": list(METHODS),
        "seeds": list(SEEDS),
        "reference_method": "fedra",
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def group_losses_by_hand(run_dir, final_eval) -> dict[int, float]:
    """Each group's held-out loss: its clients' categories' summed answer-token loss over their answer tokens."""
    rows = read_csv(run_dir / "partition.csv")
    categories = [name for name in rows[0] if name not in ("client", "group", "layer_budget", "num_samples")][1:]
    held: dict[int, set[int]] = {}
    for row in rows:
        held.setdefault(int(row["group"]), set()).update(i for i, c in enumerate(categories) if int(row[c]) > 0)
    return {
        group: sum(final_eval["class_loss"][c] for c in cats) / sum(final_eval["class_tokens"][c] for c in cats)
        for group, cats in held.items()
    }


def test_a_causal_lm_grid_reports_held_out_loss_paired_intervals_and_group_losses(
    tmp_path,
    tiny_llama_folder,  # noqa: F811
    tiny_instructions,  # noqa: F811
    one_torch_thread,
    capsys,
) -> None:
    out = tmp_path / "grid"
    assert main(["compare", "--config", grid_file(tmp_path, tiny_llama_folder), "--out", str(out), "--quiet"]) == 0

    final, late, groups = {}, {}, {}
    for method in METHODS:
        for seed in SEEDS:
            run_dir = out / "runs" / f"{method}__base__seed{seed}"
            evaluated = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval" in r]
            assert [r["round"] for r in evaluated] == [1, 2]
            last = evaluated[-1]["eval"]
            # The per-category record adds up to the held-out loss (loss per answer token).
            assert sum(last["class_loss"]) / sum(last["class_tokens"]) == pytest.approx(last["loss"], rel=1e-12)
            assert math.isfinite(last["loss"]) and last["perplexity"] == pytest.approx(math.exp(last["loss"]))
            final[method, seed] = last["loss"]
            late[method, seed] = last["loss"]  # the last quarter of 2 rounds holds round 2 alone
            groups[method, seed] = group_losses_by_hand(run_dir, last)

    rows = {row["method"]: row for row in read_csv(out / "comparison.csv")}
    assert list(rows) == list(METHODS)
    for method in METHODS:
        losses = [final[method, seed] for seed in SEEDS]
        assert float(rows[method]["final_loss_mean"]) == pytest.approx(np.mean(losses), abs=1e-12)
        assert float(rows[method]["final_loss_std"]) == pytest.approx(np.std(losses, ddof=1), abs=1e-12)
        assert float(rows[method]["late_loss_mean"]) == pytest.approx(np.mean(losses), abs=1e-12)
        assert rows[method]["final_perplexity_mean"] and rows[method]["final_rouge_l_mean"]
        assert "final_accuracy_mean" not in rows[method] and "target_reached" not in rows[method]

    # Paired differences (method − reference) with a 95% interval centred on the mean per-seed difference.
    paired = {(row["method"], row["metric"]): row for row in read_csv(out / "paired.csv")}
    assert set(paired) == {("full", "late_loss"), ("full", "final_loss")}
    for metric, values in (("final_loss", final), ("late_loss", late)):
        row = paired["full", metric]
        differences = [values["full", seed] - values["fedra", seed] for seed in SEEDS]
        assert int(row["n"]) == 2 and float(row["mean"]) == pytest.approx(np.mean(differences), abs=1e-12)
        low, high = float(row["low"]), float(row["high"])
        assert (low + high) / 2 == pytest.approx(np.mean(differences), abs=1e-12) and low <= high

    report = (out / "comparison.md").read_text()
    assert "held-out loss (mean loss per answer token on the test pairs; lower is better)" in report
    assert "| final loss |" in report and "## Paired differences to `fedra`" in report
    assert "lower is better, so a negative difference favours the method" in report
    mean_difference = np.mean([final["full", seed] - final["fedra", seed] for seed in SEEDS])
    assert f"| {mean_difference:+.4f} |" in report.split("Final held-out loss:")[1]

    # Per capability group: the held-out loss on the categories the group's clients hold, mean ± std over seeds.
    group_section = report.split("## Per capability group")[1]
    assert "group 0 loss" in group_section and "the test pairs of the categories held" in group_section
    fedra_row = next(line for line in group_section.splitlines() if line.startswith("| fedra "))
    for group in sorted(groups["fedra", 0]):
        values = [groups["fedra", seed][group] for seed in SEEDS]
        assert f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" in fedra_row

    for name in ("loss_vs_round.png", "loss_vs_bytes.png", "layer_counts.png"):
        assert (out / name).stat().st_size > 0

    # A target accuracy means nothing for held-out loss: the error names the flag it came from.
    report_before = (out / "comparison.md").read_bytes()
    assert main(["report", str(out), "--target", "0.5"]) != 0
    assert "report --target: causal_lm runs report no accuracy" in capsys.readouterr().err
    assert (out / "comparison.md").read_bytes() == report_before
