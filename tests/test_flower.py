"""The Flower engines run the same `Server` and `Client` as the in-process engine.

A tiny random-init ViT on scikit-learn digits keeps every run to seconds of compute; the
cost is Flower's own start-up (Ray for the simulation, real processes for deployment).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from fedhello.config import load_config
from fedhello.federation.server import Server
from fedhello.flower.deployment import LocalDeployment, write_flower_app
from fedhello.outputs.run_writer import read_jsonl
from fedhello.runner import run_experiment


def flower_config(folder, *extra):
    return load_config(
        overrides=[
            f"model.name={folder}",
            "model.task=image_classification",
            "data.dataset=digits",
            "federation.num_clients=3",
            "federation.clients_per_round=2",
            "federation.rounds=2",
            "partition.scheme=iid",
            "fisher.proxy_size=32",
            "training.lr=0.02",
            "allocation.params.fim_start=2",
            "allocation.params.fim_every=1",
            "evaluation.every=1",
            "evaluation.subset_size=null",
            "output.progress=false",
            "output.tensorboard=false",
            "output.plots=false",
            *extra,
        ]
    )


@pytest.fixture
def round_states(monkeypatch):
    """The server's global tensors after each round (the ServerApp of a simulation runs in this process)."""
    states: list[dict[str, torch.Tensor]] = []
    finish_round = Server.finish_round

    def recording(self, plan, replies, failures=()):
        outcome = finish_round(self, plan, replies, failures)
        states.append({name: tensor.clone() for name, tensor in self.global_state.items()})
        return outcome

    monkeypatch.setattr(Server, "finish_round", recording)
    return states


def _without_times(path):
    return [{k: v for k, v in record.items() if not k.endswith("time_s")} for record in read_jsonl(path)]


# Differential privacy with client-side clipping: the ClientApp clips, the ServerApp's `Server` adds the same noise.
PRIVATE = (
    "training.weighting=uniform",
    "privacy.mode=client",
    "privacy.clip_norm=0.05",
    "privacy.noise_multiplier=0.8",
    "privacy.delta=0.01",
)


# The coverage rule: with 2 clients per round, a layer only one of them would train is pruned and refilled.
COVERAGE = ("allocation.min_trainers_per_layer=2",)


@pytest.mark.slow  # Ray's start-up: minutes on 2 cores
@pytest.mark.parametrize("extra", [(), pytest.param(PRIVATE, id="private"), pytest.param(COVERAGE, id="coverage")])
def test_flower_simulation_equals_the_inprocess_engine(
    tiny_vit_folder, tmp_path, round_states, one_torch_thread, extra
):
    """One intra-op thread here, as in Flower's one-CPU Ray workers, so both sum in the same order."""
    config = flower_config(tiny_vit_folder, *extra)
    inprocess = run_experiment(config, tmp_path / "inprocess")
    inprocess_states = list(round_states)
    round_states.clear()
    flower = run_experiment(config, tmp_path / "flower", engine="flower-sim")
    runs = (inprocess, flower)

    assert len(inprocess_states) == len(round_states) == 2
    initial = inprocess_states[0]
    for round_number, (ours, theirs) in enumerate(zip(inprocess_states, round_states, strict=True), start=1):
        assert set(ours) == set(theirs)
        for name in ours:
            torch.testing.assert_close(
                theirs[name], ours[name], rtol=1e-4, atol=1e-5, msg=f"round {round_number} {name}"
            )
    assert any(not torch.equal(round_states[1][name], initial[name]) for name in initial)  # the model moved

    assert _without_times(flower.out_dir / "allocations.jsonl") == _without_times(
        inprocess.out_dir / "allocations.jsonl"
    )
    flower_clients = _without_times(flower.out_dir / "clients.jsonl")
    inprocess_clients = _without_times(inprocess.out_dir / "clients.jsonl")
    for theirs, ours in zip(flower_clients, inprocess_clients, strict=True):
        assert {k: v for k, v in theirs.items() if k != "train_loss"} == {
            k: v for k, v in ours.items() if k != "train_loss"
        }
        assert theirs["train_loss"] == pytest.approx(ours["train_loss"], rel=1e-4)
    assert flower.final_eval.accuracy == pytest.approx(inprocess.final_eval.accuracy, abs=0.01)
    if config.privacy.enabled:
        epsilons = [[r["privacy"]["epsilon"] for r in read_jsonl(run.out_dir / "metrics.jsonl")] for run in runs]
        assert epsilons[0] == epsilons[1] and len(epsilons[0]) == 2
        assert all(client["within_clip"] is not None for client in flower_clients if client["status"] == "trained")
    if config.allocation.min_trainers_per_layer > 1:  # the ServerApp's `Server` pruned as the in-process one did
        assert any(line["coverage"]["removed"] for line in read_jsonl(flower.out_dir / "allocations.jsonl"))
    assert json.loads((flower.out_dir / "run_info.json").read_text())["engine"] == "flower-sim"
    for name in ("summary.md", "metrics.csv", "partition.csv", "adapter.safetensors", "fisher.jsonl"):
        assert (flower.out_dir / name).stat().st_size > 0, name


def _wait_for_rounds(path, count, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(read_jsonl(path)) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"{path} did not reach {count} rounds within {timeout_s} s")


def _running_in_group(group: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            live.append(int(stat.parent.name))
    return live


@pytest.mark.slow  # real Flower processes, and the killed node is noticed after two 30 s heartbeats
def test_deployment_on_loopback_completes_and_survives_a_killed_supernode(tiny_vit_folder, tmp_path):
    """A real SuperLink and two SuperNodes as processes; SuperNode 1 is SIGKILLed after round 1."""
    config = flower_config(
        tiny_vit_folder, "federation.num_clients=2", "federation.rounds=3", "flower.round_timeout_s=150"
    )
    run_dir = tmp_path / "run"
    app_dir = write_flower_app(config, run_dir, tmp_path / "app")
    deployment = LocalDeployment(tmp_path / "flower", num_nodes=2)
    outcome = {}
    try:
        deployment.start()
        pids = [process.pid for process in deployment.processes.values()]
        runner = threading.Thread(target=lambda: outcome.update(result=deployment.run_app(app_dir, timeout_s=600)))
        runner.start()
        _wait_for_rounds(run_dir / "metrics.jsonl", 1, timeout_s=300)
        deployment.kill("supernode1")
        runner.join(timeout=600)
    finally:
        deployment.stop()
    # Each process leads its own group, so nothing it started (ClientApps, ServerApp) may survive either.
    assert [pid for pid in pids if _running_in_group(pid)] == [], "a deployment process outlived the test"

    result = outcome["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    rounds = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[0]["dropped"] == []
    assert rounds[2]["dropped"] == [{"client": 1, "reason": rounds[2]["dropped"][0]["reason"]}]
    reasons = [d["reason"] for r in rounds[1:] for d in r["dropped"]]
    assert all(reason.startswith(("node unavailable", "node not connected", "no reply")) for reason in reasons), reasons
    clients = read_jsonl(run_dir / "clients.jsonl")
    assert [c["status"] for c in clients if c["client"] == 0] == ["trained"] * 3
    assert [c["status"] for c in clients if c["client"] == 1][1:] == ["dropped"] * 2 or len(reasons) == 1
    for name in ("summary.md", "metrics.csv", "adapter.safetensors", "config.yaml"):
        assert (run_dir / name).stat().st_size > 0, name
    assert json.loads((run_dir / "run_info.json").read_text())["engine"] == "flower-deployment"


def test_flower_setup_problems_are_one_line_errors(monkeypatch, capsys):
    from fedhello import cli, runner
    from fedhello.errors import EngineError
    from fedhello.flower.run_settings import CONFIG_ENV, encoded_config

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(EngineError, match="fedhello-config"):
        encoded_config({})

    def failing(config, out_dir=None, engine="inprocess"):
        raise EngineError("the SuperLink exited; see superlink.log")

    monkeypatch.setattr(runner, "run_experiment", failing)
    assert cli.main(["run", "--preset", "smoke", "--engine", "flower-local"]) == 1
    assert capsys.readouterr().err.strip() == "fedhello: error: the SuperLink exited; see superlink.log"
