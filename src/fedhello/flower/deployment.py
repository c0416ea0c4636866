"""Flower deployment: the app directory `flwr run` ships, and a local loopback deployment.

`write_flower_app` writes a Flower app directory whose pyproject names fedhello's
ServerApp and ClientApp and carries the fedhello config in its run config. Every
SuperNode and the SuperLink need fedhello installed (the app holds no code of its own).

`LocalDeployment` starts a real SuperLink and SuperNodes as processes on 127.0.0.1
(insecure: for tests and demos only) and stops them by PID, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from typing_extensions import Self

from fedhello.config import ExperimentConfig
from fedhello.errors import ConfigError, EngineError
from fedhello.flower.run_settings import (
    CONFIG_KEY,
    COSTS_KEY,
    DEPLOYMENT,
    ENGINE_KEY,
    LOCAL_DEPLOYMENT,
    OUT_DIR_KEY,
    RESUME_KEY,
    encode_config,
    encode_costs,
)
from fedhello.output_paths import check_creatable
from fedhello.resources.cost_model import CostModel

APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedhello-flower-app"
version = "1.0.0"
description = "fedhello run {name}: Fed-HeLLo heterogeneous LoRA on Flower"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedhello"

[tool.flwr.app.components]
serverapp = "fedhello.flower.server_app:app"
clientapp = "fedhello.flower.client_app:app"

[tool.flwr.app.config]
# The fedhello config (base64 YAML), where the ServerApp writes the run directory, whether it
# continues that run's last checkpoint, how the run was launched, and the launcher's cost model.
{config_key} = "{config}"
{out_dir_key} = "{out_dir}"
{resume_key} = "{resume}"
{engine_key} = "{engine}"
{costs_key} = "{costs}"
"""
# What a folder `write_flower_app` wrote holds (Flower may add a build folder); the line that marks it as ours.
APP_FILES = {"pyproject.toml", "build", "dist", ".gitignore"}
APP_MARKER = 'serverapp = "fedhello.flower.server_app:app"'


def check_app_dir(app_dir: Path) -> None:
    """Refuse an --app-dir that is a file, a folder holding anything but a fedhello app, or not creatable."""
    if app_dir.exists() and not app_dir.is_dir():
        raise ConfigError(f"--app-dir: {app_dir} is a file, not a folder; choose a new or empty folder")
    if app_dir.is_dir():
        entries = {entry.name for entry in app_dir.iterdir()}
        pyproject = app_dir / "pyproject.toml"
        ours = pyproject.is_file() and APP_MARKER in pyproject.read_text(errors="replace")
        if entries and (not ours or entries - APP_FILES):
            raise ConfigError(
                f"--app-dir: {app_dir} is not empty and not a fedhello Flower app (its files would be overwritten); "
                "choose a new or empty folder"
            )
    check_creatable(app_dir, "--app-dir")


def write_flower_app(
    config: ExperimentConfig,
    run_dir: Path,
    app_dir: Path,
    *,
    resume: bool = False,
    engine: str = DEPLOYMENT,
    costs: CostModel | None = None,
) -> Path:
    check_app_dir(app_dir)
    try:
        app_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--app-dir: cannot create {app_dir} ({error.strerror}); choose a writable folder") from None
    (app_dir / "pyproject.toml").write_text(
        APP_PYPROJECT.format(
            name=config.name,
            config_key=CONFIG_KEY,
            config=encode_config(config),
            out_dir_key=OUT_DIR_KEY,
            out_dir=str(run_dir.resolve()),
            resume_key=RESUME_KEY,
            resume=str(resume).lower(),
            engine_key=ENGINE_KEY,
            engine=engine,
            costs_key=COSTS_KEY,
            costs=encode_costs(costs),
        )
    )
    return app_dir


SUPEREXEC_POLL_ENV, SUPEREXEC_POLL_S = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flower_command(name: str) -> str:
    """A Flower CLI next to this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise EngineError(f"{name} not found: install the Flower extra, pip install -e '.[flower]'")
    return found


def node_config_text(values: dict[str, str | int | float]) -> str:
    """A `--node-config` value: Flower parses each value as TOML, so strings are quoted."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


class LocalDeployment:
    """A SuperLink and `num_nodes` SuperNodes (partition-id 0..n-1) on loopback, insecure.

    `node_configs` adds node config entries per node (e.g. its `data-path`); with `workers`
    each SuperNode runs under `fedhello node`, with a long-lived worker beside it.
    """

    CONNECTION = "fedhello-local"

    def __init__(
        self,
        work_dir: Path,
        num_nodes: int,
        node_configs: Sequence[dict[str, str | int | float]] | None = None,
        *,
        workers: bool = False,
    ) -> None:
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"{len(node_configs)} node configs for {num_nodes} nodes")
        self.work_dir = work_dir.resolve()
        self.num_nodes = num_nodes
        self.node_configs = list(node_configs or [{} for _ in range(num_nodes)])
        self.workers = workers
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}

    @staticmethod
    def environment() -> dict[str, str]:
        """This environment, with the Flower commands first on PATH (the SuperLink starts `flower-superexec`).

        SuperExec polls for work to start an app process every second by default
        (flwr/supercore/superexec/run_superexec.py); every message waits for it, so poll faster.
        """
        bin_dir = str(Path(flower_command("flower-superlink")).parent)
        return {
            SUPEREXEC_POLL_ENV: SUPEREXEC_POLL_S,
            **os.environ,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        }

    def _start(self, name: str, command: list[str]) -> None:
        home = self.work_dir / name
        home.mkdir(parents=True, exist_ok=True)
        log = (self.work_dir / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.environment(), "FLWR_HOME": str(home)},
            start_new_session=True,  # its own process group: stopping it stops the apps it spawned
        )

    def wait_for_superlink(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.processes["superlink"].poll() is not None:
                raise EngineError(f"the SuperLink exited; see {self.work_dir / 'superlink.log'}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.5)
        raise EngineError(f"the SuperLink did not open port {self.port} within {timeout_s:.0f} s")

    def start(self) -> Self:
        address = f"127.0.0.1:{self.port}"
        self._start(
            "superlink",
            [
                flower_command("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
            ],
        )
        self.wait_for_superlink()
        supernode = flower_command("flower-supernode")
        for node, extra in enumerate(self.node_configs):
            node_config = {
                "partition-id": node,
                "num-partitions": self.num_nodes,
                "cache-dir": str(self.work_dir / f"supernode{node}" / "cache"),  # each node its own disk
                **extra,
            }
            arguments = ["--insecure", "--superlink", address, "--port", str(free_port())]
            arguments += ["--node-config", node_config_text(node_config)]
            launcher = [sys.executable, "-m", "fedhello.cli", "node", "--"] if self.workers else [supernode]
            self._start(f"supernode{node}", [*launcher, *arguments])
        cli_home = self.work_dir / "cli"
        cli_home.mkdir(parents=True, exist_ok=True)
        (cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{self.CONNECTION}"\n\n[superlink.{self.CONNECTION}]\n'
            f'address = "{address}"\ninsecure = true\n'
        )
        return self

    def run_app(self, app_dir: Path, timeout_s: float | None = None) -> subprocess.CompletedProcess:
        """`flwr run APP fedhello-local --stream`: blocks until the run ends."""
        env = {
            **self.environment(),
            "FLWR_HOME": str(self.work_dir / "cli"),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }
        return subprocess.run(
            [flower_command("flwr"), "run", str(app_dir), self.CONNECTION, "--stream"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process and everything it started; SIGKILL it if it has not ended after 10 s."""
        process = self.processes[name]
        for signal_number in (sig, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal_number)
            try:
                process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.kill(name, signal.SIGTERM)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run_local_deployment(config: ExperimentConfig, run_dir: Path, *, resume: bool, costs: CostModel | None) -> None:
    """Start a loopback deployment with one SuperNode (and node worker) per client, run the app, stop everything.

    Its processes live in `<run>/flower/` (a resume starts a fresh SuperLink and SuperNodes there).
    """
    work_dir = run_dir / "flower"
    app_dir = write_flower_app(config, run_dir, work_dir / "app", resume=resume, engine=LOCAL_DEPLOYMENT, costs=costs)
    with LocalDeployment(work_dir, config.federation.num_clients, workers=True) as deployment:
        result = deployment.run_app(app_dir)
    if result.returncode != 0 or not (run_dir / "summary.md").exists():
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise EngineError("the Flower deployment run did not finish:\n" + "\n".join(tail))
