"""Tests for fedhello.outputs: run writer files, TensorBoard, plots and summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from fedhello.outputs import (
    METRICS_CSV_COLUMNS,
    RunWriter,
    allocation_matrix,
    format_table,
    plot_allocation_heatmap,
    plot_fisher_scores,
    plot_layer_counts,
    plot_learning_curves,
    plot_partition,
    read_jsonl,
    summary_table_rows,
    write_summary,
)
from fedhello.records import AllocationRecord, EvalResult, FisherRecord, RoundRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _round(r: int, *, acc: float | None = None, split: str = "subset") -> dict:
    rec = {
        "round": r,
        "train_loss": 2.0 - 0.1 * r,
        "clients": [r, r + 10, r + 20],
        "bytes_down": 1000 * r,
        "bytes_up": 500 * r,
        "wall_time_s": 1.5,
        "eval_time_s": 0.3 if acc is not None else 0.0,
        "layer_counts": [3, 2, 1, 0],
    }
    if acc is not None:
        rec["eval"] = {
            "split": split,
            "accuracy": acc,
            "macro_f1": acc - 0.05,
            "micro_f1": acc,
            "loss": 1.0 / acc,
            "num_samples": 100,
        }
    return rec


ROUNDS = [
    _round(1),
    _round(2, acc=0.40),
    _round(3),
    _round(4, acc=0.6125),
    _round(5, acc=0.55, split="test"),
]

ALLOCATIONS = [
    {
        "round": 0,
        "clients": [
            {"client": 0, "group": 0, "layers": [0, 1, 2, 3]},
            {"client": 1, "group": 1, "layers": [2, 3]},
        ],
    },
    {
        "round": 2,
        "clients": [
            {"client": 2, "group": 2, "layers": [3]},
            {"client": 0, "group": 0, "layers": [0, 3]},
            {"client": 1, "group": 1, "layers": [1, 3]},
        ],
    },
]

FISHER = [
    {"round": 0, "scores": [0.1, 0.5, 0.2, 0.9], "tiers": [0, 1, 0, 2], "weights": [0.1, 0.3, 0.1, 0.5]},
    {"round": 5, "scores": [0.2, 0.4, 0.3, 0.8], "tiers": [0, 1, 1, 2], "weights": [0.1, 0.3, 0.2, 0.4]},
]

# The same records as the plots and tables read them back (`RunDirectory`).
ROUND_RECORDS = [RoundRecord.from_json(record) for record in ROUNDS]
ALLOCATION_RECORDS = [AllocationRecord.from_json(record) for record in ALLOCATIONS]
FISHER_RECORDS = [FisherRecord.from_json(record) for record in FISHER]


def _is_png(path: Path) -> bool:
    return path.stat().st_size > len(PNG_MAGIC) and path.read_bytes()[:8] == PNG_MAGIC


def test_run_writer_metrics_jsonl_and_csv(tmp_path: Path) -> None:
    with RunWriter(tmp_path / "run", tensorboard=False) as writer:
        for rec in ROUNDS:
            writer.log_round(rec)
        assert writer.rounds == ROUNDS
        # Flushed per write: readable before close.
        assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == len(ROUNDS)
        assert not (tmp_path / "run" / "clients.jsonl").exists()

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == ROUNDS

    with (tmp_path / "run" / "metrics.csv").open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = [dict(zip(header, row, strict=True)) for row in reader]
    assert header == list(METRICS_CSV_COLUMNS)
    assert len(rows) == len(ROUNDS)

    eval_cols = ["eval_split", "eval_accuracy", "eval_macro_f1", "eval_micro_f1", "eval_loss"]
    for rec, row in zip(ROUNDS, rows, strict=True):
        assert int(row["round"]) == rec["round"]
        assert float(row["train_loss"]) == pytest.approx(rec["train_loss"])
        assert int(row["num_clients"]) == 3
        assert row["clients"].split() == [str(c) for c in rec["clients"]]
        assert int(row["bytes_down"]) == rec["bytes_down"]
        assert int(row["bytes_up"]) == rec["bytes_up"]
        assert float(row["wall_time_s"]) == pytest.approx(rec["wall_time_s"])
        ev = rec.get("eval")
        if ev is None:
            assert all(row[c] == "" for c in eval_cols)
        else:
            assert row["eval_split"] == ev["split"]
            assert float(row["eval_accuracy"]) == pytest.approx(ev["accuracy"])
            assert float(row["eval_macro_f1"]) == pytest.approx(ev["macro_f1"])
            assert float(row["eval_micro_f1"]) == pytest.approx(ev["micro_f1"])
            assert float(row["eval_loss"]) == pytest.approx(ev["loss"])


def test_run_writer_side_logs_round_trip(tmp_path: Path) -> None:
    clients = [
        {
            "round": 1,
            "client": c,
            "group": c % 3,
            "layers": [0, 1],
            "trainable_params": 4096,
            "local_steps": 10,
            "num_samples": 50 + c,
            "train_loss": 1.0 + c,
            "wall_time_s": 0.5,
            "bytes_down": 100,
            "bytes_up": 50,
            "activation_bytes": 1 << 20,
        }
        for c in range(3)
    ]
    with RunWriter(tmp_path, tensorboard=False) as writer:
        writer.log_clients(clients[:2])
        writer.log_clients(clients[2:])
        for alloc in ALLOCATIONS:
            writer.log_allocation(alloc)
        # numpy values from the simulator must serialise as plain JSON.
        writer.log_fisher({**FISHER[0], "scores": np.array(FISHER[0]["scores"]), "round": np.int64(0)})
        writer.log_fisher(FISHER[1])

    assert read_jsonl(tmp_path / "clients.jsonl") == clients
    assert read_jsonl(tmp_path / "allocations.jsonl") == ALLOCATIONS
    assert read_jsonl(tmp_path / "fisher.jsonl") == FISHER
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    assert not (tmp_path / "metrics.jsonl").exists()


def test_run_writer_tensorboard_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunWriter(tmp_path) as writer:
        for rec in ROUNDS:
            writer.log_round(rec)

    tb_dir = tmp_path / "tensorboard"
    assert list(tb_dir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "train/loss",
        "comm/bytes_down",
        "comm/bytes_up",
        "time/round_s",
        "eval/accuracy",
        "eval/macro_f1",
        "eval/micro_f1",
        "eval/loss",
    }
    assert expected <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5]
    accs = acc.Scalars("eval/accuracy")
    assert [e.step for e in accs] == [2, 4, 5]
    assert [e.value for e in accs] == pytest.approx([0.40, 0.6125, 0.55])


def test_allocation_matrix_exact() -> None:
    expected = np.array(
        [
            [1, 0, 1],
            [1, 0, 1],
            [2, 0, 0],
            [2, 0, 3],
        ]
    )
    np.testing.assert_array_equal(allocation_matrix(ALLOCATION_RECORDS, 4), expected)
    padded = allocation_matrix(ALLOCATION_RECORDS, 4, num_rounds=5)
    assert padded.shape == (4, 5)
    np.testing.assert_array_equal(padded[:, :3], expected)
    assert not padded[:, 3:].any()
    with pytest.raises(ValueError):
        allocation_matrix(ALLOCATION_RECORDS, 3)
    assert allocation_matrix([], 4).shape == (4, 0)


def test_plots_write_png(tmp_path: Path) -> None:
    partition = [
        {"client": 0, "num_samples": 30, "num_classes": 2, "class_counts": [10, 20, 0]},
        {"client": 1, "num_samples": 15, "num_classes": 3, "class_counts": [5, 5, 5]},
    ]
    written = [
        plot_learning_curves(ROUND_RECORDS, tmp_path / "learning_curves.png", "accuracy"),
        plot_allocation_heatmap(ALLOCATION_RECORDS, 4, tmp_path / "allocation_heatmap.png"),
        plot_layer_counts(ALLOCATION_RECORDS, 4, tmp_path / "layer_counts.png"),
        plot_fisher_scores(FISHER_RECORDS, tmp_path / "fisher_scores.png"),
        plot_partition(partition, tmp_path / "partition.png"),
    ]
    for path in written:
        assert path is not None and _is_png(path), path


def test_plots_empty_inputs_write_nothing(tmp_path: Path) -> None:
    assert plot_learning_curves([], tmp_path / "a.png", "accuracy") is None
    assert plot_allocation_heatmap([], 4, tmp_path / "b.png") is None
    assert plot_layer_counts([], 4, tmp_path / "c.png") is None
    assert plot_fisher_scores([], tmp_path / "d.png") is None
    assert plot_partition([], tmp_path / "e.png") is None
    assert list(tmp_path.iterdir()) == []


def test_format_table() -> None:
    table = format_table(["name", "acc"], [["a|b", 0.53124999], ["c", 2]])
    assert table.splitlines() == [
        "| name | acc |",
        "| --- | ---: |",
        "| a\\|b | 0.5312 |",
        "| c | 2 |",
    ]
    with pytest.raises(ValueError):
        format_table(["x"], [[1, 2]])


def test_summary_rows_and_markdown(tmp_path: Path) -> None:
    final_eval = EvalResult("test", 1.8, 100, accuracy=0.55, macro_f1=0.5, micro_f1=0.55)
    headers, rows = summary_table_rows(ROUND_RECORDS, final_eval, "accuracy")
    table = {row[0]: row[1] for row in rows}
    assert headers == ["metric", "value"]
    assert table["best eval accuracy (subset)"] == 0.6125
    assert table["best eval round"] == 4
    assert table["final test accuracy"] == 0.55
    assert table["final test macro-F1"] == 0.5
    assert table["total wall time (s)"] == pytest.approx(7.5)
    assert table["of which evaluation (s)"] == "0.9 (12%)"  # three evaluated rounds of 0.3 s
    assert "15,000 B" in table["total bytes down"]

    plot_learning_curves(ROUND_RECORDS, tmp_path / "learning_curves.png", "accuracy")
    path = write_summary(
        tmp_path / "summary.md",
        title="Run X",
        config_lines=["model: tiny", "clients: 20"],
        final_eval=final_eval,
        rounds=ROUND_RECORDS,
        headline="accuracy",
        extra_sections={"Notes": "Hello notes."},
    )
    text = path.read_text()
    assert text.startswith("# Run X\n")
    assert "- model: tiny" in text
    assert "| best eval accuracy (subset) | 0.6125 |" in text
    assert "| best eval round | 4 |" in text
    # learning-curve row of the best round: train loss, eval loss, accuracy
    assert "| 4 | 1.6 | 1.6327 | 0.6125 |" in text
    assert "| 3 |" not in text  # round 3 had no eval
    assert "## Notes\n\nHello notes." in text
    assert "![Learning curves](learning_curves.png)" in text
    assert "allocation_heatmap.png" not in text


def test_best_eval_prefers_periodic_over_final_test() -> None:
    rounds = [_round(1, acc=0.3), _round(2, acc=0.5), _round(3, acc=0.9, split="test")]
    _, rows = summary_table_rows([RoundRecord.from_json(r) for r in rounds], None, "accuracy")
    table = {row[0]: row[1] for row in rows}
    assert table["best eval accuracy (subset)"] == 0.5
    assert table["best eval round"] == 2
    assert not any(label.startswith("final") for label in table)
    # With only test-split evals, those are the best available.
    test_only = [_round(1, acc=0.2, split="test"), _round(2, acc=0.4, split="test")]
    _, rows = summary_table_rows([RoundRecord.from_json(r) for r in test_only], None, "accuracy")
    assert {row[0]: row[1] for row in rows}["best eval round"] == 2
