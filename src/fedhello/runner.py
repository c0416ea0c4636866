"""Launch or resume one experiment on an engine: prepare it once, claim its run directory, run its rounds.

Everything that can reject the configuration (including checks that need the data or
the model, such as budgets against the number of layers) runs in `prepare_experiment`
before the run directory is created, so a bad config leaves nothing half-written. The
prepared experiment is then handed to the engine — it is never prepared twice in one
process — and every engine runs the same lifecycle (`fedhello.lifecycle`).

inprocess: server and clients in this process; flower-sim: Flower's simulation engine
(the ServerApp in this process); flower-local: a real Flower deployment (SuperLink + one
SuperNode per client) on loopback, whose ServerApp receives the measured cost model.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from fedhello.allocation.registry import strategy_from_config
from fedhello.checkpoint import is_complete
from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError
from fedhello.experiment import PreparedExperiment, client_state_kind, prepare_experiment
from fedhello.federation.inprocess import inprocess_server
from fedhello.lifecycle import RunOutcome, run_rounds
from fedhello.outputs.summary import format_table, summary_table_rows
from fedhello.resources.probe import COST_FILE
from fedhello.run_directory import ADAPTER_FILE, RunDirectory, check_run_dir, default_run_dir
from fedhello.run_lock import run_lock
from fedhello.tasks import task_for

INPROCESS, FLOWER_SIM, FLOWER_LOCAL = "inprocess", "flower-sim", "flower-local"
ENGINES = (INPROCESS, FLOWER_SIM, FLOWER_LOCAL)


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine != INPROCESS:
        try:
            import flwr  # noqa: F401
        except ImportError:
            raise ConfigError(f"engine {engine!r} needs Flower: pip install -e '.[flower]'") from None


def run_experiment(config: ExperimentConfig, out_dir: Path | None = None, engine: str = INPROCESS) -> RunOutcome:
    """One experiment on the chosen engine, written to its run directory."""
    _check_engine(engine)
    path = Path(out_dir or config.output.dir or default_run_dir(config))
    check_run_dir(path)
    experiment = prepare_experiment(config)
    with run_lock(path):
        return _launch(experiment, RunDirectory.claim(path, config), engine, resume=False)


def resumable_config(path: Path, engine: str | None = None) -> ExperimentConfig:
    """The config of an interrupted run that `engine` (default: the one it ran on) can continue exactly."""
    run_dir = RunDirectory.existing(path)
    if is_complete(path):
        raise ConfigError(f"{path} is a complete run; nothing to resume (`fedhello report {path}` shows it)")
    if not run_dir.has_info():
        raise ConfigError(
            f"{path} stopped before its first round (no run_info.json); start it again with "
            f"`fedhello run --config {run_dir / 'config.yaml'}` and a new --out"
        )
    config = run_dir.config()
    kept = client_state_kind(config, strategy_from_config(config))
    if (engine or run_dir.info().engine) != INPROCESS and kept is not None:
        raise ConfigError(
            f"{path} cannot be resumed exactly: its clients kept tensors ({kept}) in their Flower node state, "
            "which ends with the Flower run; start it again, or run such strategies in-process"
        )
    return config


def resume_experiment(path: Path) -> RunOutcome:
    """Continue an interrupted run, on the engine it was started on, from its last complete checkpoint."""
    with run_lock(RunDirectory.existing(path).path):
        return _resume_locked(path)


def _resume_locked(path: Path) -> RunOutcome:
    config = resumable_config(path)
    run_dir = RunDirectory(path)
    engine = run_dir.info().engine
    if engine not in ENGINES:
        raise ConfigError(
            f"{path} ran on a manual Flower deployment ({engine}); continue it with "
            f"`fedhello flower-app --resume --run-dir {path} --app-dir APP` and `flwr run APP <connection>`"
        )
    _check_engine(engine)
    experiment = prepare_experiment(config, cost_cache=run_dir / COST_FILE)
    return _launch(experiment.with_groups(run_dir.recorded_groups()), run_dir, engine, resume=True)


def _launch(experiment: PreparedExperiment, run_dir: RunDirectory, engine: str, *, resume: bool) -> RunOutcome:
    if engine == INPROCESS:
        server, clients = inprocess_server(experiment)
        return run_rounds(experiment, run_dir, server, clients, resume=resume)
    try:
        if engine == FLOWER_SIM:
            from fedhello.flower.simulation import run_flower_simulation

            run_flower_simulation(experiment, run_dir, resume=resume)
        else:
            from fedhello.flower.deployment import run_local_deployment

            run_local_deployment(experiment.config, run_dir.path, resume=resume, costs=experiment.costs)
    except BaseException as error:
        # The server side may have died without a word (a killed SuperLink takes its ServerApp along).
        if (run_dir.status() or {}).get("status") == "running":
            run_dir.set_status("failed", run_dir.checkpointed_round(), experiment.config.federation.rounds, str(error))
        raise
    rounds = run_dir.rounds()
    final = rounds[-1].eval if rounds else None
    headers, rows = summary_table_rows(rounds, final, task_for(experiment.config.model.task).headline_metric)
    return RunOutcome(run_dir.path, final, load_file(run_dir / ADAPTER_FILE), format_table(headers, rows))
