"""ROUGE-L, the score instruction tuning reports for generated answers against references.

It uses Google's `rouge-score` package (the reference implementation, with its Porter
stemmer) rather than a reimplementation, so numbers compare with published ones.
"""

from __future__ import annotations

from rouge_score.rouge_scorer import RougeScorer


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure over aligned prediction/reference pairs (0.0 for no pairs)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return 0.0
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in zip(predictions, references, strict=True)
    ]
    return sum(scores) / len(scores)
