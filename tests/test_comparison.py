"""`fedhello compare` / `fedhello report`: a tiny grid on the real offline assets
(MiniLM-L6 + 20 Newsgroups), checked against the per-run files, plus resumption and
comparison-config validation.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import yaml

import fedhello.runner
from fedhello.cli import main
from fedhello.comparison.grid import Cell, cell_config, cells, load_comparison, run_comparison
from fedhello.comparison.report import write_report
from fedhello.errors import ConfigError
from fedhello.outputs.run_writer import read_jsonl
from fedhello.records import ClientRecord

SHRINK = [
    "seeds=[0,1]",
    "methods=[full,hetlora]",
    "base.federation.rounds=1",
    "base.data.max_train_samples=400",
    "base.data.max_test_samples=100",
    "base.fisher.proxy_size=16",
]
PLOTS = ("accuracy_vs_round.png", "accuracy_vs_bytes.png", "layer_counts.png")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_comparison_grid_table_resume_and_report(tmp_path, monkeypatch):
    comparison = load_comparison("offline-smoke", None, SHRINK)
    grid_dir = tmp_path / "grid"
    run_dirs = run_comparison(comparison, grid_dir, progress=False)
    expected_ids = [cell.cell_id for cell in cells(comparison)]
    assert [d.name for d in run_dirs] == expected_ids
    assert expected_ids == [f"{m}__noniid-4__seed{s}" for m in ("full", "hetlora") for s in (0, 1)]
    table = write_report(grid_dir, comparison.target_accuracy)

    # The table's mean and std come from the runs' own metric files.
    final = {}
    for run_dir in run_dirs:
        cell = Cell.read(run_dir)
        evaluated = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "eval" in r]
        assert evaluated[-1]["round"] == 1 and evaluated[-1]["eval"]["num_samples"] == 100
        final.setdefault(cell.method, []).append(evaluated[-1]["eval"]["accuracy"])
    rows = {row["method"]: row for row in read_csv(grid_dir / "comparison.csv")}
    assert list(rows) == ["full", "hetlora"]
    for method, accuracies in final.items():
        assert len(accuracies) == 2
        assert int(rows[method]["seeds"]) == 2
        assert float(rows[method]["final_accuracy_mean"]) == pytest.approx(np.mean(accuracies), abs=1e-12)
        assert float(rows[method]["final_accuracy_std"]) == pytest.approx(np.std(accuracies, ddof=1), abs=1e-12)
        assert f"{np.mean(accuracies) * 100:.1f} ± {np.std(accuracies, ddof=1) * 100:.1f}" in table

    # A rerun skips completed cells: the experiment runner is never called.
    def refuse(*args, **kwargs):
        raise AssertionError("a completed cell was run again")

    monkeypatch.setattr(fedhello.runner, "run_experiment", refuse)
    assert run_comparison(comparison, grid_dir, progress=False) == run_dirs

    # An incomplete cell (not marked complete, no checkpoint to resume from) is removed and run again, alone.
    monkeypatch.undo()
    real = fedhello.runner.run_experiment
    incomplete = run_dirs[3]
    first_rounds = read_jsonl(incomplete / "metrics.jsonl")
    (incomplete / "status.json").write_text('{"status": "interrupted", "round": 0, "rounds": 2}')
    shutil.rmtree(incomplete / "checkpoint")
    (incomplete / "stale.txt").write_text("left over from an interrupted run")
    calls = []

    def counting(config, out_dir=None):
        calls.append((config.name, out_dir))
        return real(config, out_dir)

    monkeypatch.setattr(fedhello.runner, "run_experiment", counting)
    run_comparison(comparison, grid_dir, progress=False)
    assert calls == [(incomplete.name, incomplete)]
    assert (incomplete / "summary.md").exists() and not (incomplete / "stale.txt").exists()
    monkeypatch.undo()
    rerun_rounds = read_jsonl(incomplete / "metrics.jsonl")
    assert rerun_rounds[-1]["eval"] == first_rounds[-1]["eval"]  # the rerun cell is deterministic

    # `report` rebuilds the same table from the files alone (compute times changed with the rerun).
    table = write_report(grid_dir, comparison.target_accuracy)
    csv_text = (grid_dir / "comparison.csv").read_text()
    for name in ("comparison.md", "comparison.csv", *PLOTS):
        (grid_dir / name).unlink()
    assert write_report(grid_dir, comparison.target_accuracy) == table
    assert (grid_dir / "comparison.csv").read_text() == csv_text
    for name in PLOTS:
        assert (grid_dir / name).stat().st_size > 0

    for name in ("comparison.md", "comparison.csv", *PLOTS):
        (grid_dir / name).unlink()
    assert main(["report", str(grid_dir)]) == 0
    assert (grid_dir / "comparison.csv").read_text() == csv_text
    assert table in (grid_dir / "comparison.md").read_text()
    for name in PLOTS:
        assert (grid_dir / name).exists()

    # A copy of the grid with only run files reports the same table (target from comparison.yaml).
    copy = tmp_path / "copy"
    shutil.copytree(grid_dir / "runs", copy / "runs")
    shutil.copy(grid_dir / "comparison.yaml", copy / "comparison.yaml")
    assert write_report(copy) == table


def test_cell_record_reads_back_typed_and_a_foreign_one_is_refused(tmp_path):
    cell = Cell("fedra", "base", "6:3:1", 2)
    cell.write(tmp_path)
    assert Cell.read(tmp_path) == cell

    (tmp_path / "cell.json").write_text('{"method": "fedra", "partition": "base", "ratio": null}')
    with pytest.raises(ConfigError, match=r"cell\.json: field 'seed': .*not a fedhello comparison cell record$"):
        Cell.read(tmp_path)
    (tmp_path / "cell.json").write_text("method: fedra")
    with pytest.raises(ConfigError, match=r"cell\.json: Invalid JSON.*not a fedhello comparison"):
        Cell.read(tmp_path)


@pytest.mark.parametrize(
    ("override", "field"),
    [("methods=[full,nonsense]", "methods"), ("methods=[]", "methods"), ("seeds=[]", "seeds")],
)
def test_bad_comparison_names_the_field(override, field):
    with pytest.raises(ConfigError, match=field) as caught:
        load_comparison("offline-smoke", None, [override])
    if "nonsense" in override:
        assert "nonsense" in str(caught.value)


def test_unknown_comparison_preset_and_bad_override():
    with pytest.raises(ConfigError, match="no-such-grid"):
        load_comparison("no-such-grid", None, [])
    with pytest.raises(ConfigError, match="field=value"):
        load_comparison("offline-smoke", None, ["seeds"])


def test_cells_order_and_centralized_config():
    comparison = load_comparison(
        "offline-smoke",
        None,
        [
            "methods=[centralized,full]",
            "seeds=[3,4]",
            "partitions=[{name: iid, scheme: iid}, {name: p2, scheme: pathological, classes_per_client: 2}]",
        ],
    )
    grid = cells(comparison)
    assert grid == [
        Cell(method, partition, None, seed)
        for partition in ("iid", "p2")
        for method in ("centralized", "full")
        for seed in (3, 4)
    ]
    assert len({cell.cell_id for cell in grid}) == len(grid)

    full = cell_config(comparison, Cell("full", "p2", None, 4))
    central = cell_config(comparison, Cell("centralized", "p2", None, 4))
    assert full.seed == 4 and full.name == "full__p2__seed4"
    assert full.partition.scheme == "pathological" and full.partition.classes_per_client == 2
    assert full.allocation.strategy == "full"
    assert central.federation.num_clients == 1 and central.federation.clients_per_round == 1
    assert central.partition.scheme == "iid"
    assert central.allocation.strategy == "full"
    assert full.training.max_local_steps is not None
    assert central.training.max_local_steps == full.training.max_local_steps * full.federation.clients_per_round
    assert central.federation.rounds == full.federation.rounds


def test_ratios_multiply_the_grid():
    comparison = load_comparison("offline-smoke", None, ["methods=[full]", "seeds=[0]", "ratios=['1:1:1', '6:3:1']"])
    grid = cells(comparison)
    assert [cell.ratio for cell in grid] == ["1:1:1", "6:3:1"]
    assert grid[1].cell_id == "full__noniid-4__roc6-3-1__seed0"
    assert cell_config(comparison, grid[1]).groups.ratio == [6.0, 3.0, 1.0]


def _fake_run(method: str, seed: int, accuracy: float):
    from fedhello.comparison.report import RunMetrics

    scores = dict.fromkeys(("best_accuracy", "final_accuracy", "late_accuracy", "final_macro_f1"), accuracy)
    return RunMetrics(method, "p", None, seed, scores, None, 0, 0.0, 0.0, [1], [accuracy], [0], [1], [], [], [])


def test_paired_t_interval_on_hand_made_numbers():
    from fedhello.comparison.report import paired_t_interval

    # d = 1..5: mean 3, sd sqrt(2.5), sem sqrt(0.5); t(0.975, 4) = 2.7764451 -> half-width 1.9632432.
    result = paired_t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["n"] == 5 and result["mean"] == pytest.approx(3.0)
    assert result["low"] == pytest.approx(3.0 - 1.9632432, abs=1e-6)
    assert result["high"] == pytest.approx(3.0 + 1.9632432, abs=1e-6)
    assert result["p"] == pytest.approx(0.01324, abs=1e-4) and result["significant"]  # t = 4.2426 on 4 df
    # An interval that straddles zero is not significant: d = (-1, 1, 2), mean 2/3, sem sqrt(7/3)/sqrt(3).
    wide = paired_t_interval([-1.0, 1.0, 2.0])
    half = 4.3026527 * (7 / 3) ** 0.5 / 3**0.5
    assert wide["low"] == pytest.approx(2 / 3 - half, abs=1e-6) and not wide["significant"]
    assert paired_t_interval([0.5])["low"] is None  # one pair: no interval


def test_paired_differences_pair_by_seed():
    from fedhello.comparison.report import paired_differences

    reference = [_fake_run("fedra", s, a) for s, a in enumerate([0.50, 0.40, 0.60, 0.55, 0.45])]
    other = [_fake_run("fedhello", s, a) for s, a in enumerate([0.52, 0.43, 0.61, 0.58, 0.46])]
    unpaired = [_fake_run("fedhello", 9, 0.99)]  # a seed the reference never ran is left out
    (row,) = paired_differences(reference + other + unpaired, "fedra")
    assert row["method"] == "fedhello" and row["n"] == 5
    assert row["mean"] == pytest.approx(0.02)  # differences 2, 3, 1, 3, 1 points
    # sd of (2, 3, 1, 3, 1) points = 1.0; half-width = 2.7764451 * 1.0 / sqrt(5) = 1.2416 points
    assert row["low"] == pytest.approx(0.02 - 0.012416, abs=1e-5) and row["significant"]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("endpoint=loss", "endpoint"),  # classification reports accuracy and macro-F1
        ("endpoint=bleu", "endpoint"),
        ("target_accuracy=0.5", "target_accuracy"),  # with the causal-LM task below
    ],
)
def test_an_endpoint_the_task_does_not_report_is_refused(tmp_path, override, field):
    from fedhello.comparison.grid import load_comparison, run_comparison

    causal = ["base.model.task=causal_lm", "base.data.dataset=chatterbot"] if field == "target_accuracy" else []
    with pytest.raises(ConfigError, match=rf"^comparison field '{field}': ") as caught:
        comparison = load_comparison("offline-smoke", None, [override, *causal])
        run_comparison(comparison, tmp_path / "grid", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "grid").exists()


def test_per_group_trainable_params_and_realised_peak_from_client_records(tmp_path):
    from fedhello.comparison.report import group_classes, group_peak_mib, group_trainable_params

    (tmp_path / "partition.csv").write_text(
        "client,group,layer_budget,num_samples,num_classes,c0\n0,0,3,5,1,5\n1,1,6,5,1,5\n"
    )
    mib = 2**20

    def client(group, steps, params, activation, state):
        return ClientRecord(
            1, 0, group, [0], local_steps=steps, trainable_params=params, activation_bytes=activation, state_bytes=state
        )

    clients = [
        client(0, 2, 10, 3 * mib, mib),
        client(0, 2, 20, 5 * mib, mib // 2),
        client(0, 0, 99, 99 * mib, 0),  # dropped
        client(1, 1, 40, 8 * mib, 2 * mib),
    ]
    num_groups = len(group_classes(tmp_path))
    assert group_trainable_params(clients, num_groups) == [15.0, 40.0]
    assert group_peak_mib(clients, num_groups) == [5.5, 10.0]


def test_late_accuracy_averages_the_last_quarter_of_the_rounds():
    from fedhello.comparison.report import late_mean

    rounds, accuracies = [2, 10, 30, 32, 40], [0.1, 0.3, 0.5, 0.6, 0.7]
    assert late_mean(rounds, accuracies) == pytest.approx((0.6 + 0.7) / 2)  # rounds after 30 of 40
    assert late_mean(rounds[:1], accuracies[:1]) == pytest.approx(0.1)  # a single evaluation is its own late mean


def test_worker_processes_give_the_same_cells_as_one_process(tmp_path, tiny_vit_folder):
    (tmp_path / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny-grid",
                "base": {
                    "model": {"name": str(tiny_vit_folder), "task": "image_classification"},
                    "data": {"dataset": "digits", "max_test_samples": 100},
                    "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 2},
                    "partition": {"scheme": "iid"},
                    "fisher": {"proxy_size": 16},
                    "training": {"max_local_steps": 2},
                    "evaluation": {"every": 1, "subset_size": None},
                    "output": {"tensorboard": False},
                },
                "methods": ["fedra", "hetlora"],
                "seeds": [0, 1],
            }
        )
    )
    comparison = load_comparison(None, tmp_path / "grid.yaml", [])
    serial = run_comparison(comparison, tmp_path / "serial", progress=False)
    parallel = run_comparison(comparison, tmp_path / "parallel", progress=False, workers=2)
    assert [d.name for d in parallel] == [d.name for d in serial] and len(serial) == 4
    for one, other in zip(serial, parallel, strict=True):
        evaluations = [[r["eval"]["accuracy"], r["eval"]["loss"]] for r in read_jsonl(one / "metrics.jsonl")]
        assert evaluations == [[r["eval"]["accuracy"], r["eval"]["loss"]] for r in read_jsonl(other / "metrics.jsonl")]
        assert (other / "summary.md").exists()
