"""The held-out loss is the headline of an instruction-tuning run (issue 20).

The causal-LM task declares the held-out loss (mean loss per answer token on the test
pairs) as its headline metric, lower is better: the summary's best round, the progress
line and the learning-curve plot lead with it, with or without generated answers
(`evaluation.generate_samples`); perplexity and ROUGE-L are secondary. Classification
still leads with accuracy.
"""

from __future__ import annotations

import math

import pytest

from fedhello.checkpoint import read_status
from fedhello.config import load_config
from fedhello.lifecycle import progress_reporter
from fedhello.outputs.plots import plot_learning_curves
from fedhello.outputs.run_writer import read_jsonl
from fedhello.outputs.summary import best_eval, format_cell, summary_table_rows
from fedhello.records import EvalResult, RoundRecord
from fedhello.runner import run_experiment
from fedhello.tasks import task_for
from test_causal_lm import lm_config, tiny_instructions, tiny_llama_folder  # noqa: F401 (fixtures)


def result_rows(summary: str) -> list[str]:
    return summary.split("## Result", 1)[1].split("##", 1)[0].strip().splitlines()[2:]


@pytest.mark.parametrize("generate_samples", [0, 2])
def test_the_summary_leads_with_the_lowest_held_out_loss(
    tiny_llama_folder,  # noqa: F811
    tiny_instructions,  # noqa: F811
    tmp_path,
    one_torch_thread,
    capsys,
    generate_samples,
) -> None:
    config = lm_config(
        tiny_llama_folder,
        f"evaluation.generate_samples={generate_samples}",
        "federation.rounds=4",
        "evaluation.every=1",
        "evaluation.subset_size=6",
        "allocation.strategy=fedra",
        "output.plots=true",
    )
    config.output.progress = True  # the progress line printed the (missing) headline metric and crashed
    outcome = run_experiment(config, tmp_path / "run")
    assert read_status(tmp_path / "run")["status"] == "complete"
    final = outcome.final_eval
    assert final.perplexity == pytest.approx(math.exp(final.loss))
    assert (final.rouge_l is not None) == (generate_samples > 0)

    # By hand from metrics.jsonl: the subset evaluation with the lowest loss (the final test one is reported apart).
    evals = [(record["round"], record["eval"]) for record in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    subset = [(rnd, ev) for rnd, ev in evals if ev["split"] == "subset"]
    assert [rnd for rnd, _ in subset] == [1, 2, 3] and evals[-1][1]["split"] == "test"
    best_round, best = min(subset, key=lambda item: item[1]["loss"])
    rows = result_rows((tmp_path / "run" / "summary.md").read_text())
    assert rows[:3] == [
        f"| best eval held-out loss (subset) | {format_cell(best['loss'])} |",
        f"| best eval round | {best_round} |",
        f"| final test loss (held-out) | {format_cell(final.loss)} |",
    ]
    assert any(row.startswith("| final test perplexity |") for row in rows)
    assert any(row.startswith("| final test ROUGE-L |") for row in rows) == (generate_samples > 0)
    assert (tmp_path / "run" / "learning_curves.png").exists()
    assert outcome.summary_table.splitlines()[2] == rows[0]  # what the CLI prints
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.startswith("round    1")]
    assert lines and f"subset held-out loss {subset[0][1]['loss']:.4f}" in lines[0]


def lm_round(rnd: int, loss: float, rouge_l: float, split: str = "subset") -> RoundRecord:
    evaluation = {"split": split, "loss": loss, "num_samples": 9, "perplexity": math.exp(loss), "rouge_l": rouge_l}
    return RoundRecord.from_json({"round": rnd, "eval": evaluation})


def test_the_lowest_loss_is_best_whatever_rouge_l_says(tmp_path) -> None:
    headline = task_for("causal_lm").headline_metric
    assert headline == "loss" == task_for("causal_lm").comparison_metrics[0]  # compare's endpoint, one source
    rounds = [lm_round(1, 2.0, 0.9), lm_round(2, 1.0, 0.1), lm_round(3, 1.0, 0.2), lm_round(4, 1.5, 0.4)]
    best = best_eval(rounds, headline)
    assert best is not None and best[0] == 2  # lowest loss, earliest of the tie; not the highest ROUGE-L (round 1)
    final = EvalResult("test", 1.25, 9, rouge_l=0.4, perplexity=math.exp(1.25))
    _, rows = summary_table_rows(rounds, final, headline)
    assert rows[:5] == [
        ["best eval held-out loss (subset)", 1.0],
        ["best eval round", 2],
        ["final test loss (held-out)", 1.25],
        ["final test ROUGE-L", 0.4],
        ["final test perplexity", math.exp(1.25)],
    ]
    assert plot_learning_curves([*rounds, lm_round(5, 0.9, 0.3, split="test")], tmp_path / "curves.png", headline)


def test_classification_still_leads_with_the_highest_accuracy() -> None:
    headline = task_for("sequence_classification").headline_metric
    assert headline == "accuracy"
    evaluations = [
        {"split": "subset", "loss": loss, "num_samples": 9, "accuracy": acc}
        for loss, acc in ((0.5, 0.4), (0.9, 0.7), (0.7, 0.7))
    ]
    rounds = [RoundRecord.from_json({"round": rnd, "eval": ev}) for rnd, ev in enumerate(evaluations, start=1)]
    best = best_eval(rounds, headline)
    assert best is not None and best[0] == 2  # highest accuracy, not lowest loss
    _, rows = summary_table_rows(rounds, EvalResult("test", 0.75, 9, accuracy=0.5), headline)
    assert rows[:4] == [
        ["best eval accuracy (subset)", 0.7],
        ["best eval round", 2],
        ["final test accuracy", 0.5],
        ["final test loss (held-out)", 0.75],
    ]


def test_the_progress_line_leads_with_the_headline(capsys) -> None:
    config = load_config(overrides=["model.task=causal_lm", "data.dataset=tiny-instructions"])
    progress, show = progress_reporter(config, 0)
    show(lm_round(1, 1.5, 0.25))
    progress.close()
    assert progress.postfix == "held-out loss=1.500"
    printed = capsys.readouterr()
    assert "round    1  no client trained  subset held-out loss 1.5000  ROUGE-L 0.2500  perplexity 4.4817" in (
        printed.out + printed.err
    )
