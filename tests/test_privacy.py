"""Differential privacy: clipping bound, noise scale, accounting against dp-accounting, runs and resume.

Runs use the tiny random-init ViT on the offline `digits` dataset of test_reliability.py.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.privacy_accountant import NeighboringRelation
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fedhello import cli
from fedhello.aggregation import ClientUpdate
from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.federation.server import Server
from fedhello.outputs.run_writer import read_jsonl
from fedhello.privacy.accounting import epsilon, solve_noise_multiplier
from fedhello.privacy.adaptive import adaptive_noise_split
from fedhello.privacy.clipping import clip_update, update_norm
from fedhello.privacy.mechanism import PlannedContributions, PrivateAggregator
from fedhello.runner import run_experiment
from test_reliability import KILLER, assert_same_run, tiny_config_data, write_config

SHAPES = {"layer0.a": (4, 16), "layer0.b": (16, 4), "layer1.a": (4, 16), "layer1.b": (16, 4), "head": (10, 16)}
LAYER_OF = {"layer0.a": 0, "layer0.b": 0, "layer1.a": 1, "layer1.b": 1}


def private_config(folder, mode="client", **privacy):
    return tiny_config_data(
        folder,
        training={"lr": 0.02, "max_local_steps": 2, "head": "aggregate", "weighting": "uniform"},
        privacy={"mode": mode, "clip_norm": 0.5, "noise_multiplier": 0.8, "delta": 1e-3, **privacy},
    )


# --------------------------------------------------------------------------- clipping


@settings(max_examples=200, deadline=None)
@given(
    names=st.sets(st.sampled_from(sorted(SHAPES)), min_size=1),
    scale=st.floats(1e-4, 1e4),
    clip_norm=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31),
)
def test_no_clipped_update_exceeds_the_clip_norm(names, scale, clip_norm, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    deltas = {name: torch.randn(SHAPES[name], generator=generator) * scale for name in sorted(names)}
    clipped, within = clip_update(deltas, clip_norm)
    assert set(clipped) == set(deltas)
    assert update_norm(clipped) <= clip_norm
    assert within == (update_norm(deltas) <= clip_norm)
    if within:
        assert all(torch.equal(clipped[name], deltas[name]) for name in deltas)
    else:  # the whole update is scaled by one factor: its direction over all tensors is kept
        ratios = torch.cat([(clipped[n] / deltas[n]).flatten() for n in deltas if deltas[n].abs().min() > 0])
        assert float(ratios.max() - ratios.min()) <= 1e-5 * float(ratios.max())
        assert update_norm(clipped) >= clip_norm * (1 - 1e-4)


# --------------------------------------------------------------------------- noise


def aggregator(config_overrides=(), **privacy) -> PrivateAggregator:
    settings_ = {"mode": "server", "clip_norm": 0.5, "noise_multiplier": 1.3, **privacy}
    overrides = [f"privacy.{key}={value}" for key, value in settings_.items()]
    config = load_config(
        overrides=[
            "training.weighting=uniform",
            "federation.num_clients=100",
            "federation.clients_per_round=10",
            *config_overrides,
            *overrides,
        ]
    )
    return PrivateAggregator.from_config(config)


@pytest.mark.parametrize("adaptive", [False, True])
def test_noise_std_is_noise_multiplier_times_clip_norm_over_the_planned_count(adaptive) -> None:
    """With no update, new - old is the noise / count: its empirical std must match within 3% (10% must fail)."""
    private = aggregator(adaptive=str(adaptive).lower(), clipped_count_stddev=2.0)
    counts = {"layer0.a": 2, "layer0.b": 2, "layer1.a": 10, "layer1.b": 10, "head": 7}
    plan = PlannedContributions(10, counts, LAYER_OF, 2)
    zero = {name: torch.zeros(64, 64) for name in SHAPES}
    draws: dict[str, list[torch.Tensor]] = {name: [] for name in SHAPES}
    for round_number in range(1, 6):  # 5 x 4,096 draws per tensor: the std's relative error is about 0.5%
        private.clip_norm = 0.5  # keep the scale fixed while adaptive clipping runs
        new_state, record = private.aggregate(zero, [], plan, {}, round_number)
        for name in SHAPES:
            draws[name].append(new_state[name].flatten())
    expected_multiplier = adaptive_noise_split(1.3, 2.0) if adaptive else 1.3
    assert record.noise_std == pytest.approx(expected_multiplier * 0.5)
    for name, count in counts.items():
        empirical = float(torch.cat(draws[name]).double().std())
        expected = expected_multiplier * 0.5 / count
        assert empirical == pytest.approx(expected, rel=0.03), name
        assert abs(empirical / (1.1 * expected) - 1) > 0.05 and abs(empirical / (0.9 * expected) - 1) > 0.05


def test_noise_is_reproducible_per_round_and_tensors_nobody_trains_keep_their_value() -> None:
    private = aggregator()
    plan = PlannedContributions(3, {"layer0.a": 3, "layer0.b": 3}, LAYER_OF, 2)
    state = {name: torch.ones(shape) for name, shape in SHAPES.items()}
    updates = [ClientUpdate(c, {"layer0.a": torch.full(SHAPES["layer0.a"], 0.01)}, 5) for c in range(3)]
    first, record = private.aggregate(state, updates, plan, {}, 4)
    again, _ = private.aggregate(state, updates, plan, {}, 4)
    other, _ = private.aggregate(state, updates, plan, {}, 5)
    assert all(torch.equal(first[name], again[name]) for name in SHAPES)
    assert not torch.equal(first["layer0.a"], other["layer0.a"])
    for name in ("layer1.a", "layer1.b", "head"):
        assert torch.equal(first[name], state[name])
    assert record.layer_contributors == [3, 0]
    assert record.layer_noise_to_signal[1] is None and record.layer_noise_to_signal[0] > 0


def test_adaptive_clip_norm_follows_the_target_quantile() -> None:
    private = aggregator(adaptive="true", clipped_count_stddev=2.0, target_quantile=0.5, clip_learning_rate=1.0)
    plan = PlannedContributions(10, {"head": 10}, LAYER_OF, 2)
    state = {"head": torch.zeros(SHAPES["head"])}
    small = [ClientUpdate(c, {"head": torch.full(SHAPES["head"], 1e-4)}, 1) for c in range(10)]
    norms = []
    for round_number in range(1, 9):
        private.aggregate(state, small, plan, {}, round_number)
        norms.append(private.clip_norm)
    assert norms == sorted(norms, reverse=True) and norms[-1] < 0.5 * 0.05  # every update fits: it shrinks
    large = [ClientUpdate(c, {"head": torch.full(SHAPES["head"], 1.0)}, 1) for c in range(10)]
    private.aggregate(state, large, plan, {}, 9)
    assert private.clip_norm > norms[-1]  # none fits: it grows


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize(
    ("noise", "clients", "per_round", "rounds", "delta"),
    [(1.0, 1000, 50, 20, 1e-5), (2.5, 500, 10, 100, 1e-6), (0.7, 100, 20, 5, 1e-3)],
)
def test_epsilon_is_the_librarys_value(noise, clients, per_round, rounds, delta) -> None:
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)
    event = dp_event.SampledWithoutReplacementDpEvent(clients, per_round, dp_event.GaussianDpEvent(noise / 2))
    accountant.compose(dp_event.SelfComposedDpEvent(event, rounds))
    assert epsilon(noise, clients, per_round, rounds, delta) == accountant.get_epsilon(delta)


def test_sampling_everyone_is_the_plain_gaussian_with_replace_one_sensitivity() -> None:
    """q = 1: no amplification; replacing a clipped update moves the sum by 2C, so the noise multiplier counts half."""
    plain = RdpAccountant().compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.5), 10))
    assert epsilon(3.0, 50, 50, 10, 1e-5) == pytest.approx(plain.get_epsilon(1e-5), rel=1e-9)


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_target_epsilon_gives_a_noise_within_one_percent_below_the_target(target) -> None:
    noise = solve_noise_multiplier(target, 1000, 50, 20, 1e-5, 100.0)
    reached = epsilon(noise, 1000, 50, 20, 1e-5)
    assert 0.99 * target <= reached <= target


def test_each_round_reports_the_accountants_epsilon_so_far() -> None:
    private = aggregator()
    plan = PlannedContributions(10, {"head": 10}, LAYER_OF, 2)
    state = {"head": torch.zeros(SHAPES["head"])}
    values = [private.aggregate(state, [], plan, {}, r)[1].epsilon for r in (1, 2, 3)]
    assert values == [epsilon(1.3, 100, 10, r, 1e-5) for r in (1, 2, 3)]
    assert values[0] < values[1] < values[2]


# --------------------------------------------------------------------------- settings refused


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["privacy.clip_norm=0"], "'privacy.clip_norm'"),
        (["privacy.clip_norm=-1"], "'privacy.clip_norm'"),
        (["privacy.noise_multiplier=null"], "exactly one of noise_multiplier and target_epsilon"),
        (["privacy.target_epsilon=2"], "exactly one of noise_multiplier and target_epsilon"),
        (["training.weighting=samples"], "training.weighting: uniform"),
        (["privacy.noise_multiplier=null", "privacy.target_epsilon=0.0001"], "is not reached in 20 rounds"),
        (["allocation.strategy=local"], "strategy 'local'"),
        (["federation.num_clients=1", "federation.clients_per_round=1"], "centralized"),
        (["privacy.delta=0.1"], "privacy.delta"),
        (["privacy.adaptive=true"], "clipped_count_stddev"),
    ],
)
def test_bad_privacy_settings_are_one_line_errors(overrides, fragment) -> None:
    base = ["privacy.mode=client", "privacy.noise_multiplier=1.0", "training.weighting=uniform"]
    with pytest.raises(ConfigError) as error:
        load_config(overrides=base + overrides)
    message = str(error.value)
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize("strategy", ["hetlora", "flexlora"])
def test_strategies_with_their_own_aggregation_are_refused(strategy) -> None:
    from fedhello.allocation.registry import strategy_from_config

    config = load_config(
        overrides=[
            f"allocation.strategy={strategy}",
            "training.weighting=uniform",
            "privacy.mode=client",
            "privacy.noise_multiplier=1.0",
        ]
    )
    with pytest.raises(ConfigError, match="aggregates its own way"):
        strategy_from_config(config)


# --------------------------------------------------------------------------- runs


@pytest.fixture
def sent_updates(monkeypatch):
    """Every update that reached the server, and whether it held the whole head."""
    seen: list[tuple[ClientUpdate, bool]] = []
    finish_round = Server.finish_round

    def recording(self, plan, replies, failures=()):
        seen.extend((reply.update, set(self.layout.head_names) <= set(reply.update.deltas)) for reply in replies)
        return finish_round(self, plan, replies, failures)

    monkeypatch.setattr(Server, "finish_round", recording)
    return seen


def test_client_clipping_means_the_server_never_sees_an_unclipped_update(
    tiny_vit_folder, tmp_path, sent_updates, one_torch_thread
) -> None:
    config_path = write_config(tmp_path / "config.yaml", private_config(tiny_vit_folder, clip_norm=0.05))
    outcome = run_experiment(load_config(path=config_path), tmp_path / "run")
    assert sent_updates and all(update_norm(update.deltas) <= 0.05 for update, _ in sent_updates)
    assert any(update_norm(update.deltas) > 0.049 for update, _ in sent_updates)  # clipping was active
    assert all(with_head for _, with_head in sent_updates)  # the clipped update includes the head
    rounds = read_jsonl(outcome.out_dir / "metrics.jsonl")
    assert [r["privacy"]["epsilon"] for r in rounds] == [epsilon(0.8, 6, 3, r, 1e-3) for r in (1, 2, 3, 4)]
    with (outcome.out_dir / "metrics.csv").open() as handle:
        assert [float(row["epsilon"]) for row in csv.DictReader(handle)] == [r["privacy"]["epsilon"] for r in rounds]
    allocations = read_jsonl(outcome.out_dir / "allocations.jsonl")
    for record, allocation in zip(rounds, allocations, strict=True):
        trained = [client for client in allocation["clients"] if client["layers"]]
        assert record["privacy"]["head_contributors"] == len(trained)
        assert record["privacy"]["layer_contributors"] == record["layer_counts"]
    clients = read_jsonl(outcome.out_dir / "clients.jsonl")
    assert all(client["within_clip"] is False for client in clients if client["status"] == "trained")
    summary = (outcome.out_dir / "summary.md").read_text()
    assert "## Differential privacy" in summary and f"{rounds[-1]['privacy']['epsilon']:.4g}" in summary
    assert "privacy ε at δ=0.001" in outcome.summary_table


def test_server_clipping_gives_the_same_model_as_client_clipping(tiny_vit_folder, tmp_path, one_torch_thread) -> None:
    runs = {}
    for mode in ("client", "server"):
        path = write_config(tmp_path / f"{mode}.yaml", private_config(tiny_vit_folder, mode=mode))
        runs[mode] = run_experiment(load_config(path=path), tmp_path / mode).global_state
    for name, tensor in runs["client"].items():
        torch.testing.assert_close(runs["server"][name], tensor, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_sigkilled_private_run_resumes_with_the_same_noise_and_epsilon(tiny_vit_folder, tmp_path, one_torch_thread):
    """Adaptive clipping, so the clip norm is state the checkpoint must carry."""
    data = private_config(tiny_vit_folder, adaptive=True, clipped_count_stddev=1.0)
    config_path = write_config(tmp_path / "config.yaml", data)
    reference_run = tmp_path / "reference"
    run_experiment(load_config(path=config_path), reference_run)
    clip_norms = [r["privacy"]["clip_norm"] for r in read_jsonl(reference_run / "metrics.jsonl")]
    assert len(set(clip_norms)) == len(clip_norms)  # the adaptive clip norm moved every round
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, str(script), "mid-round", "4", "run", "--config", str(config_path), "--out", str(run)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -9, result.stderr[-2000:]
    assert cli.main(["resume", str(run)]) == 0
    assert_same_run(run, reference_run)  # records (ε, clip norms, noise-to-signal) and bit-identical tensors


def test_the_progress_bar_shows_epsilon() -> None:
    from fedhello.lifecycle import progress_reporter
    from fedhello.records import PrivacyRecord, RoundRecord

    progress, show = progress_reporter(load_config(), 0)
    privacy = PrivacyRecord(2.345, 1e-5, 1.0, 0.1, 0.1, [1], [2.0])
    show(RoundRecord(1, [0], 0.5, 0, 0, 0.0, [1], privacy=privacy))
    assert "ε=2.35" in progress.postfix
    progress.close()
