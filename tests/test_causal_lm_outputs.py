"""Causal-LM runs report the held-out loss, and run without generated answers (issue 20).

`evaluation.generate_samples=0` means "no ROUGE-L": the headline metric then falls back to
perplexity (lower is better), and the summary leads with the held-out answer loss, the
headline of instruction tuning.
"""

from __future__ import annotations

import math

import pytest

from fedhello.checkpoint import read_status
from fedhello.outputs.summary import best_eval, format_cell, summary_table_rows
from fedhello.records import EvalResult, RoundRecord, headline_metric
from fedhello.runner import run_experiment
from test_causal_lm import lm_config, tiny_instructions, tiny_llama_folder  # noqa: F401 (fixtures)


def test_no_generated_answers_runs_to_the_end_and_reports_the_held_out_loss(
    tiny_llama_folder,  # noqa: F811
    tiny_instructions,  # noqa: F811
    tmp_path,
    one_torch_thread,
) -> None:
    config = lm_config(
        tiny_llama_folder, "evaluation.generate_samples=0", "federation.rounds=3", "allocation.strategy=fedra"
    )
    config.output.progress = True  # the progress line printed the (missing) headline metric and crashed
    outcome = run_experiment(config, tmp_path / "run")
    assert read_status(tmp_path / "run")["status"] == "complete"
    final = outcome.final_eval
    assert final.rouge_l is None and final.generated_samples in (None, 0)
    assert final.perplexity == pytest.approx(math.exp(final.loss))
    assert final.headline == "perplexity"
    summary = (tmp_path / "run" / "summary.md").read_text()
    result = summary.split("## Result", 1)[1].split("##", 1)[0]
    first_row = result.strip().splitlines()[2]
    assert first_row == f"| final {final.split} loss (held-out) | {format_cell(final.loss)} |", result
    assert "perplexity" in result and "eval loss" in summary  # the learning curve shows the held-out loss too


def test_the_summary_shows_the_held_out_loss_for_every_task() -> None:
    lm = EvalResult("test", 1.25, 9, rouge_l=0.4, perplexity=math.exp(1.25))
    classification = EvalResult("test", 0.75, 9, accuracy=0.5)
    lm_rows = summary_table_rows([], lm)[1]
    assert lm_rows[0] == ["final test loss (held-out)", 1.25]  # instruction tuning: the headline
    assert ["final test ROUGE-L", 0.4] in lm_rows
    classification_rows = summary_table_rows([], classification)[1]
    assert classification_rows[0] == ["final test accuracy", 0.5]
    assert ["final test loss (held-out)", 0.75] in classification_rows


def test_perplexity_is_the_headline_without_answers_and_lower_is_better() -> None:
    rounds = [
        RoundRecord.from_json(
            {"round": 1, "eval": {"split": "eval", "loss": 2.0, "num_samples": 9, "perplexity": 7.4}}
        ),
        RoundRecord.from_json(
            {"round": 2, "eval": {"split": "eval", "loss": 1.0, "num_samples": 9, "perplexity": 2.7}}
        ),
        RoundRecord.from_json(
            {"round": 3, "eval": {"split": "eval", "loss": 1.5, "num_samples": 9, "perplexity": 4.5}}
        ),
    ]
    assert rounds[0].eval is not None and rounds[0].eval.headline == "perplexity"
    best = best_eval(rounds)
    assert best is not None and best[0] == 2
    assert headline_metric({"accuracy": 0.5, "perplexity": 3.0}) == "accuracy"
    assert headline_metric({"rouge_l": 0.2, "perplexity": 3.0}) == "rouge_l"
