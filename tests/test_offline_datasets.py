"""Offline asset loaders return the documented sizes and label sets."""

from __future__ import annotations

import numpy as np

from fedhello.config import load_config
from fedhello.data.datasets import load_dataset


def test_rotten_tomatoes_sizes_and_labels():
    data = load_dataset("rotten-tomatoes")
    assert data.label_names == ("rotten", "fresh")
    assert (len(data.train_texts), len(data.test_texts)) == (10_227, 2_581)
    counts = np.bincount(data.train_labels, minlength=2) + np.bincount(data.test_labels, minlength=2)
    assert counts.tolist() == [5_405, 7_403]  # rotten, fresh: the whole corpus
    assert load_config(preset="rotten-tomatoes").data.dataset == "rotten-tomatoes"
