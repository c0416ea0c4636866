"""The `fedhello` console script, run as a real subprocess (listing commands and config errors)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

STRATEGY_PARAMS = {
    "full": set(),
    "exclusive": set(),
    "fedra": set(),
    "straggler": {"pattern"},
    "gd": {"pattern"},
    "rgd": {"pattern"},
    "fim": {"tier_weights", "every"},
    "fedhello": {"pattern", "fim_start", "fim_every", "mode", "tier_weights"},
}


def _command() -> list[str]:
    """The installed console script next to this interpreter, else the same entry point through -c."""
    script = Path(sys.executable).with_name("fedhello")
    if script.exists():
        return [str(script)]
    found = shutil.which("fedhello")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from fedhello.cli import main; sys.exit(main())"]


def fedhello(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*_command(), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _strategy_blocks(stdout: str) -> dict[str, set[str]]:
    """{strategy: parameter names} from the `strategies` listing (names at column 0, params indented)."""
    blocks: dict[str, set[str]] = {}
    current = None
    for line in stdout.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.split()[0]
            blocks[current] = set()
        else:
            assert current is not None, line
            blocks[current].add(line.split("=")[0].strip())
    return blocks


def test_strategies_lists_every_strategy_with_its_parameters() -> None:
    result = fedhello("strategies")
    assert result.returncode == 0, result.stderr
    blocks = _strategy_blocks(result.stdout)
    assert set(STRATEGY_PARAMS) <= set(blocks)
    for name, params in STRATEGY_PARAMS.items():
        assert params <= blocks[name], f"{name}: expected {params}, listed {blocks[name]}"
    for line in result.stdout.splitlines():
        if line and not line[0].isspace():
            assert len(line.split(None, 1)) == 2, f"strategy without a summary: {line!r}"


def test_presets_lists_run_and_comparison_presets_with_descriptions() -> None:
    result = fedhello("presets")
    assert result.returncode == 0, result.stderr
    sections: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        if line and not line[0].isspace():
            current = sections.setdefault(line.split()[0], {})
        elif line.strip():
            name, _, description = line.strip().partition(" ")
            current[name] = description.strip()
    assert {"default", "smoke", "paper-cifar100-vit"} <= set(sections["experiment"])
    assert {"offline-all", "offline-smoke", "paper-cifar100"} <= set(sections["comparison"])
    assert all(sections["experiment"].values()) and all(sections["comparison"].values())


def test_datasets_lists_the_offline_dataset_and_model() -> None:
    result = fedhello("datasets")
    assert result.returncode == 0, result.stderr
    assert "20newsgroups" in result.stdout and "minilm-l6" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "rounds=0"], "'federation.rounds'"),
        (["--set", "batch_size=3"], "ambiguous"),
        (["--set", "rounds"], "section.field=value"),
        (["--set", "training.lrr=1"], "'training.lrr'"),
        (["--set", "allocation.params.pattern=zigzag"], "'allocation.params.pattern'"),
        (["--preset", "nope"], "unknown preset"),
    ],
    ids=["invalid-value", "ambiguous", "no-equals", "unknown-field", "strategy-param", "preset"],
)
def test_bad_run_exits_2_with_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    out_dir = tmp_path / "run"
    result = fedhello("run", "--out", str(out_dir), *args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fedhello: error: ") and fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert not out_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_missing_command_is_a_usage_error() -> None:
    result = fedhello()
    assert result.returncode == 2
    assert "usage: fedhello" in result.stderr and "Traceback" not in result.stderr
