"""The LLM benchmark's contrast table (`benchmarks/llm_table.py`): the numbers the docs quote come from it."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def llm_table(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("llm_table")


@pytest.mark.parametrize(
    ("spread", "half_width", "seeds"),
    [(0.01, 0.01, 7), (0.01, 0.005, 18), (0.02, 0.01, 18), (0.02, 0.005, 64), (0.005, 0.005, 7)],
)
def test_seeds_needed_is_the_smallest_n_whose_interval_fits(llm_table, spread, half_width, seeds):
    n = llm_table.seeds_needed(spread, half_width)
    assert n == seeds

    def reached(k: int) -> float:
        return stats.t.ppf(0.975, k - 1) * spread / np.sqrt(k)

    assert reached(n) <= half_width < reached(n - 1)


def test_contrast_row_pairs_by_seed_and_reports_the_interval(llm_table):
    losses = {"fedhello": {0: 2.60, 1: 2.70, 2: 2.65}, "fedra": {0: 2.50, 1: 2.55, 2: 2.60, 3: 9.0}}
    row = llm_table.contrast_row("fedhello", "fedra", "question", losses)
    differences = [0.10, 0.15, 0.05]  # seed 3 has no fedhello cell, so it is not paired
    half = stats.t.ppf(0.975, 2) * np.std(differences, ddof=1) / np.sqrt(3)
    assert row[:4] == ["fedhello", "fedra", "question", 3]
    assert row[4] == f"{0.10:+.3f} [{0.10 - half:+.3f}, {0.10 + half:+.3f}]"  # includes 0: no "*"
    assert row[5] == f"±{half:.3f}" and row[6] == "0.050"
    assert row[7:] == [llm_table.seeds_needed(0.05, 0.01), llm_table.seeds_needed(0.05, 0.005)]

    resolved = {"straggler": {0: 2.68, 1: 2.70, 2: 2.69}, "fedra": {0: 2.58, 1: 2.59, 2: 2.60}}
    assert llm_table.contrast_row("straggler", "fedra", "q", resolved)[4].endswith(" *")
