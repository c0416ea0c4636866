"""The run lifecycle: the one round loop of every engine, with its checkpoints, status, progress and outputs.

Engines differ only in how a round's instructions reach the clients and how replies
and failures come back: an `Engine` is a `deliver(plan) -> (replies, failures)` plus
the client-held tensors the checkpoint keeps. The in-process engine calls each `Client`
directly; the Flower engines send messages over Flower's grid. Everything else — the
run directory, `status.json`, checkpoints and `fedhello resume`, Ctrl-C, the progress
bar, the final adapter and report — is this module's code, the same for every engine.

Why `deliver` and not Flower's `Strategy.start`: `Strategy.start` owns the loop but not
a checkpoint, a resume or a run directory, sends every node the same arrays, and would
make the in-process engine depend on Flower. A per-engine `deliver` keeps the loop (and
its reliability) engine-agnostic and lets the `Server` keep its per-client instructions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from fedhello import checkpoint
from fedhello.config import ExperimentConfig
from fedhello.errors import RunInterrupted
from fedhello.experiment import PreparedExperiment
from fedhello.federation.messages import ClientReply
from fedhello.federation.server import RoundOutcome, RoundPlan, Server
from fedhello.models.export import save_peft_adapter
from fedhello.outputs import RunWriter
from fedhello.outputs.run_report import write_run_report
from fedhello.records import (
    HEADLINE_LABELS,
    AllocationRecord,
    ClientRecord,
    DroppedClient,
    EvalResult,
    FisherRecord,
    RoundRecord,
)
from fedhello.run_directory import ADAPTER_DIR, ADAPTER_FILE, RunDirectory
from fedhello.tasks import task_for
from fedhello.tensor_state import TensorState


class Engine(Protocol):
    """How one engine carries a round to its clients and back."""

    name: str

    def deliver(self, plan: RoundPlan) -> tuple[list[ClientReply], list[DroppedClient]]:
        """Send each instruction of `plan` to its client; the replies, and the clients that failed with why."""
        ...

    def client_states(self) -> dict[int, TensorState]:
        """The tensors clients keep between rounds that a checkpoint must hold (empty if they live on nodes)."""
        ...

    def restore_client_states(self, states: dict[int, TensorState]) -> None: ...


class RunLog(Protocol):
    def log_round(self, record: RoundRecord) -> None: ...
    def log_clients(self, records: list[ClientRecord]) -> None: ...
    def log_allocation(self, record: AllocationRecord) -> None: ...
    def log_fisher(self, record: FisherRecord) -> None: ...


def log_outcome(log: RunLog, outcome: RoundOutcome) -> None:
    """Every engine reports a round the same way."""
    log.log_allocation(outcome.allocation)
    if outcome.fisher is not None:
        log.log_fisher(outcome.fisher)
    log.log_clients(outcome.clients)
    log.log_round(outcome.record)


def play_round(server: Server, engine: Engine, stop: threading.Event | None = None) -> RoundOutcome:
    """One round: plan, deliver, check and aggregate. A stop requested during delivery discards the round."""
    plan = server.plan_round()
    replies, failures = engine.deliver(plan)
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt
    return server.finish_round(plan, replies, failures)


@dataclass
class RunOutcome:
    out_dir: Path
    final_eval: EvalResult | None
    global_state: TensorState
    summary_table: str


def progress_reporter(config: ExperimentConfig, start: int) -> tuple[tqdm, Callable[[RoundRecord], None]]:
    """A progress bar over rounds and a callback that advances it and prints each evaluation, headline first."""
    headline = task_for(config.model.task).headline_metric
    progress = tqdm(
        total=config.federation.rounds, initial=start, desc="rounds", unit="round", disable=not config.output.progress
    )

    def show(record: RoundRecord) -> None:
        shown = {"loss": f"{record.train_loss:.3f}"} if record.train_loss is not None else {}
        if record.dropped:
            shown["dropped"] = str(len(record.dropped))
            for dropped in record.dropped:
                progress.write(f"round {record.round:>4}  client {dropped.client} excluded: {dropped.reason}")
        if record.status == "empty":
            change = "only DP noise was added" if record.privacy is not None else "the global model is unchanged"
            progress.write(f"round {record.round:>4}  no update survived: {change}")
        if record.eval is not None:
            metrics = {headline: record.eval.value(headline), **record.eval.metrics()}
            shown[HEADLINE_LABELS[headline]] = f"{metrics[headline]:.3f}"
            loss = "no client trained" if record.train_loss is None else f"train loss {record.train_loss:.4f}"
            shown_metrics = "  ".join(f"{HEADLINE_LABELS[name]} {value:.4f}" for name, value in metrics.items())
            progress.write(f"round {record.round:>4}  {loss}  {record.eval.split} {shown_metrics}")
        if record.privacy is not None:
            shown["ε"] = f"{record.privacy.epsilon:.3g}"
        progress.set_postfix(shown)
        progress.update(1)

    return progress, show


def mark_interrupted(run_dir: RunDirectory, rounds: int) -> RunInterrupted:
    """Mark the run `interrupted` at its last checkpoint; the error that tells the user how to continue."""
    at = run_dir.checkpointed_round()
    run_dir.set_status("interrupted", at, rounds)
    return RunInterrupted(
        f"interrupted; {run_dir.path} is checkpointed at round {at} of {rounds}. "
        f"Continue with: fedhello resume {run_dir.path}"
    )


def save_round_checkpoint(run_dir: RunDirectory, server: Server, engine: Engine) -> None:
    checkpoint.save_checkpoint(
        run_dir.path, run_dir.config_text(), server.strategy.name, server.state_dict(), engine.client_states()
    )


def finish_run(run_dir: RunDirectory, server: Server, experiment: PreparedExperiment) -> str:
    """Save the final adapter (also in PEFT's format), mark the run complete, write its report."""
    from safetensors.torch import save

    adapter = save({name: tensor.contiguous().cpu() for name, tensor in server.global_state.items()})
    checkpoint.atomic_write(run_dir / ADAPTER_FILE, adapter)
    with checkpoint.disk_errors_as_oserror():
        save_peft_adapter(experiment.task.federated, server.global_state, run_dir / ADAPTER_DIR)
    rounds = experiment.config.federation.rounds
    run_dir.set_status("complete", rounds, rounds)
    return write_run_report(run_dir)


def run_rounds(
    experiment: PreparedExperiment,
    run_dir: RunDirectory,
    server: Server,
    engine: Engine,
    *,
    resume: bool,
    stop: threading.Event | None = None,
) -> RunOutcome:
    """Run (or, with `resume`, continue from the last checkpoint) every remaining round and finish the run.

    `run_dir` must already be claimed. A fresh run writes its start files and the round-0
    checkpoint; every `checkpoint.every` rounds the record files are synced and a checkpoint
    written. Ctrl-C (or `stop`) leaves the run `interrupted` at its last checkpoint, any
    other error `failed`; both can be continued with `fedhello resume`.
    """
    config = experiment.config
    total = config.federation.rounds
    restored = None
    if resume:
        restored = checkpoint.load_checkpoint(
            run_dir.path, run_dir.config_text(), server.strategy.name, dict(experiment.layout().initial_state)
        )
        checkpoint.truncate_records(run_dir.path, restored.records)
    start = restored.round if restored is not None else 0
    progress, show = progress_reporter(config, start)
    last: RoundRecord | None = None
    try:
        with RunWriter(run_dir.path, tensorboard=config.output.tensorboard, resume_after=start if resume else None) as (
            writer
        ):
            if restored is not None:
                server.load_state_dict(restored.server)
                engine.restore_client_states(restored.clients)
            else:
                run_dir.write_start(experiment.task, server.groups, engine.name)
                save_round_checkpoint(run_dir, server, engine)
            run_dir.set_status("running", server.round, total)
            while not server.finished:
                outcome = play_round(server, engine, stop)
                log_outcome(writer, outcome)
                show(outcome.record)
                last = outcome.record
                if server.round % config.checkpoint.every == 0 or server.finished:
                    writer.sync()
                    save_round_checkpoint(run_dir, server, engine)
                    run_dir.set_status("running", server.round, total)
        progress.close()
        if last is None:  # resumed after the last round's checkpoint: the final records are already written
            rounds = run_dir.rounds()
            last = rounds[-1] if rounds else None
        table = finish_run(run_dir, server, experiment)  # a failure here (a full disk) leaves the run resumable
    except KeyboardInterrupt:
        progress.close()
        raise mark_interrupted(run_dir, total) from None
    except BaseException as error:
        progress.close()
        run_dir.set_status("failed", run_dir.checkpointed_round(), total, f"{type(error).__name__}: {error}")
        raise
    return RunOutcome(run_dir.path, last.eval if last else None, server.global_state, table)
