"""Tests for fedhello.config: bad configs fail through the CLI with one clear line, good ones resolve.

Every bad config goes through the real entry point `fedhello.cli.main(["run", ...])`. Config
validation is pure, so nothing here loads a model or trains: `fedhello.runner` is replaced by a
stub that fails the test if a bad config ever gets that far.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml

from fedhello import cli
from fedhello.config import ExperimentConfig, build_config, config_to_yaml, load_config, preset_names
from fedhello.errors import ConfigError

MISSING = object()  # marks "the --config file does not exist"


@pytest.fixture
def runner_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[ExperimentConfig]:
    """Stub out fedhello.runner (so nothing trains) and run from an empty working directory."""
    calls: list[ExperimentConfig] = []

    def run_experiment(config: ExperimentConfig, engine: str = "inprocess") -> types.SimpleNamespace:
        calls.append(config)
        return types.SimpleNamespace(summary_table="(stub)", out_dir=config.output.dir)

    stub = types.ModuleType("fedhello.runner")
    stub.run_experiment = run_experiment  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fedhello.runner", stub)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return calls


# (id, YAML file text or None for no --config or MISSING for a nonexistent file,
#  extra CLI arguments, substrings the single error line must contain)
BAD_CONFIGS = [
    ("rounds-zero", "federation:\n  rounds: 0\n", [], ["'federation.rounds'", "greater than or equal to 1"]),
    ("rounds-wrong-type", "federation:\n  rounds: many\n", [], ["'federation.rounds'", "'many'"]),
    ("rounds-wrong-type-set", None, ["--set", "rounds=many"], ["'federation.rounds'", "'many'"]),
    ("partition-scheme", "partition:\n  scheme: skewed\n", [], ["'partition.scheme'", "dirichlet", "'skewed'"]),
    ("training-lr-zero", "training:\n  lr: 0\n", [], ["'training.lr'", "greater than 0"]),
    ("training-lr-negative-set", None, ["--set", "lr=-1e-3"], ["'training.lr'"]),
    ("budgets-zero", "groups:\n  budgets: [0, 1, 2]\n", [], ["'groups.budgets'", "at least 1"]),
    ("budgets-fraction", "groups:\n  budgets: [0.5, 1.5, 1.0]\n", [], ["'groups.budgets'", "(0, 1]"]),
    ("ratio-garbage", "groups:\n  ratio: 'a:b:c'\n", [], ["'groups.ratio'", "6:3:1"]),
    ("ratio-zero-share", None, ["--set", "ratio=1:0:1"], ["'groups.ratio'", "positive"]),
    (
        "ratio-budgets-mismatch",
        None,
        ["--set", "groups.ratio=6:3"],
        ["'groups'", "ratio has 2 groups", "budgets has 3"],
    ),
    (
        "strategy-unknown",
        "allocation:\n  strategy: magic\n",
        [],
        ["'allocation.strategy'", "'magic'", "fedhello", "rgd"],
    ),
    (
        "param-pattern",
        None,
        ["--set", "allocation.params.pattern=zigzag"],
        ["'allocation.params.pattern'", "bottleneck"],
    ),
    (
        "param-fim-start",
        "allocation:\n  strategy: fedhello\n  params: {fim_start: 0}\n",
        [],
        ["'allocation.params.fim_start'", "round count"],
    ),
    ("param-fim-start-fraction", None, ["--set", "allocation.params.fim_start=1.5"], ["'allocation.params.fim_start'"]),
    (
        "param-of-other-strategy",
        None,
        ["--set", "strategy=gd", "--set", "allocation.params.fim_start=2"],
        ["'allocation.params.fim_start'", "'gd'", "allowed: pattern"],
    ),
    ("param-tier-weights", None, ["--set", "allocation.params.tier_weights=[1]"], ["'allocation.params.tier_weights'"]),
    ("params-not-mapping", "allocation:\n  params: [1, 2]\n", [], ["'allocation.params'"]),
    (
        "params-not-mapping-with-set",
        "allocation:\n  params: [1, 2]\n",
        ["--set", "allocation.params.pattern=uniform"],
        ["'allocation.params'", "mapping"],
    ),
    (
        "allocation-not-mapping-with-set",
        "allocation: 5\n",
        ["--set", "allocation.params.pattern=uniform"],
        ["'allocation'", "mapping"],
    ),
    (
        "plugin-not-importable",
        None,
        ["--set", "allocation.plugins=[no_such_module_xyz]"],
        ["'allocation.plugins'", "no_such_module_xyz"],
    ),
    ("unknown-top-level", "federaton:\n  rounds: 3\n", [], ["'federaton'", "allowed here", "federation", "training"]),
    (
        "unknown-nested-file",
        "training:\n  lrr: 0.1\n",
        [],
        ["'training.lrr'", "allowed here", "lr", "batch_size", "weighting"],
    ),
    ("unknown-nested-set", None, ["--set", "training.lrr=0.1"], ["'training.lrr'", "no such config field"]),
    ("section-not-mapping", "federation: 5\n", [], ["'federation'", "(got 5)"]),
    (
        "clients-per-round",
        "federation:\n  num_clients: 4\n  clients_per_round: 5\n",
        [],
        ["'federation'", "clients_per_round (5)", "num_clients (4)"],
    ),
    ("clients-per-round-set", None, ["--set", "clients_per_round=50"], ["clients_per_round (50)", "num_clients (20)"]),
    ("device", None, ["--set", "device=tpu"], ["'device'", "'tpu'"]),
    ("not-a-mapping", "- rounds\n- 3\n", [], ["config file", "must be a mapping"]),
    ("scalar-yaml", "just a string\n", [], ["config file", "must be a mapping"]),
    ("invalid-yaml", "federation: [1, 2\n", [], ["config file", "not valid YAML"]),
    ("tab-indented-yaml", "federation:\n\trounds: 3\n", [], ["not valid YAML"]),
    ("missing-file", MISSING, [], ["config file", "missing.yaml", "cannot be read"]),
    (
        "ambiguous-set",
        None,
        ["--set", "batch_size=3"],
        ["'batch_size'", "ambiguous", "training.batch_size", "fisher.batch_size", "evaluation.batch_size"],
    ),
    ("ambiguous-alpha", None, ["--set", "alpha=0.3"], ["'alpha'", "lora.alpha", "partition.alpha"]),
    ("set-without-equals", None, ["--set", "rounds"], ["'rounds'", "section.field=value"]),
    ("set-empty-key", None, ["--set", "=3"], ["section.field=value"]),
    ("set-invalid-yaml-value", None, ["--set", "budgets=[1, 2"], ["'budgets'", "not valid YAML"]),
    ("set-unknown-section", None, ["--set", "federation=3"], ["'federation'", "no such config field"]),
    ("unknown-preset", None, ["--preset", "nope"], ["unknown preset 'nope'", "default", "smoke"]),
    ("bad-file-over-preset", "federation:\n  rounds: -3\n", ["--preset", "smoke"], ["'federation.rounds'"]),
]


@pytest.mark.parametrize(
    ("text", "extra", "expected"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list, text, extra: list[str], expected: list[str]
) -> None:
    out_dir = tmp_path / "run"
    argv = ["run", "--out", str(out_dir), *extra]
    if text is MISSING:
        argv += ["--config", str(tmp_path / "missing.yaml")]
    elif text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        argv += ["--config", str(path)]

    code = cli.main(argv)
    captured = capsys.readouterr()

    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("fedhello: error: ")
    for fragment in expected:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert captured.out == ""
    assert not out_dir.exists()
    assert not (Path.cwd() / "runs").exists()
    assert runner_calls == []


def test_non_utf8_config_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list
) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00federation")
    assert cli.main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedhello: error: ") and err.count("\n") == 1 and "UTF-8" in err
    assert not (tmp_path / "run").exists()


def test_config_directory_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list
) -> None:
    assert cli.main(["run", "--config", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedhello: error: ") and err.count("\n") == 1 and "cannot be read" in err


def test_good_config_reaches_the_runner_with_out_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runner_calls: list
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("federation:\n  rounds: 4\n")
    out_dir = tmp_path / "run"
    assert cli.main(["run", "--preset", "smoke", "--config", str(path), "--set", "seed=5", "--out", str(out_dir)]) == 0
    assert capsys.readouterr().err == ""
    (config,) = runner_calls
    assert config.output.dir == str(out_dir)
    assert (config.federation.rounds, config.federation.num_clients, config.seed) == (4, 8, 5)


# --------------------------------------------------------------------------- good configs


def test_short_override_resolves_to_full_path() -> None:
    config = load_config(overrides=["rounds=7"])
    assert config.federation.rounds == 7
    assert config == load_config(overrides=["federation.rounds=7"])


@pytest.mark.parametrize(
    ("override", "getter", "value"),
    [
        ("seed=3", lambda c: c.seed, 3),
        ("device=cpu", lambda c: c.device, "cpu"),
        ("name=mine", lambda c: c.name, "mine"),  # the full path 'name' wins over the leaf of model.name
        ("model.name=some/checkpoint", lambda c: c.model.name, "some/checkpoint"),
        ("lora.alpha=4", lambda c: c.lora.alpha, 4.0),
        ("lr=1e-3", lambda c: c.training.lr, 1e-3),
        ("max_local_steps=null", lambda c: c.training.max_local_steps, None),
        ("strategy=gd", lambda c: c.allocation.strategy, "gd"),
        ("ratio=6:3:1", lambda c: c.groups.ratio, [6.0, 3.0, 1.0]),  # not YAML 1.1 base-60 (21781)
        ("groups.ratio=[0.6, 0.3, 0.1]", lambda c: c.groups.ratio, [0.6, 0.3, 0.1]),
        ("budgets=[2, 0.75, 6]", lambda c: c.groups.budgets, [2, 0.75, 6]),
    ],
)
def test_overrides_resolve(override: str, getter, value) -> None:
    assert getter(load_config(overrides=[override])) == value


def test_unquoted_ratio_in_file_is_a_ratio(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("groups:\n  ratio: 6:3:1\n")
    assert load_config(path=path).groups.ratio == [6.0, 3.0, 1.0]


def test_presets_all_load_and_validate() -> None:
    names = preset_names()
    assert {"default", "smoke"} <= set(names)
    for name in names:
        config = load_config(preset=name)
        assert isinstance(config, ExperimentConfig)
        assert build_config(config.model_dump()) == config
    assert load_config(preset="default") == ExperimentConfig(), "the default preset is the schema's defaults"


def test_layering_preset_then_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("federation:\n  rounds: 5\ntraining:\n  lr: 0.01\n")
    config = load_config(preset="smoke", path=path, overrides=["rounds=9", "federation.rounds=11"])
    assert config.federation.rounds == 11  # the last override wins over the file and earlier overrides
    assert config.training.lr == 0.01  # the file wins over the schema default
    assert config.federation.num_clients == 8  # the preset survives where nothing overrides it
    assert config.data.max_train_samples == 2000


def test_param_override_merges_into_file_params() -> None:
    smoke = load_config(preset="smoke")
    config = load_config(preset="smoke", overrides=["allocation.params.fim_every=2"])
    assert config.allocation.params == {**smoke.allocation.params, "fim_every": 2}


def test_file_params_replace_preset_params(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("allocation:\n  strategy: gd\n  params: {pattern: uniform}\n")
    config = load_config(preset="smoke", path=path)
    assert config.allocation.strategy == "gd"
    assert config.allocation.params == {"pattern": "uniform"}


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path=path) == ExperimentConfig()


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["ratio=6:3:1", "budgets=[2, 0.75, 1.0]", "lr=1e-3", "max_grad_norm=1.0", "seed=7"],
        [
            "strategy=fim",
            "allocation.params.every=0.5",
            "allocation.params.tier_weights=[1, 4]",
            "lora.target_modules=[query]",
        ],
    ],
)
def test_config_to_yaml_round_trips(overrides: list[str]) -> None:
    config = load_config(overrides=overrides)
    assert build_config(yaml.safe_load(config_to_yaml(config))) == config


@pytest.mark.parametrize("preset", preset_names())
def test_presets_round_trip_through_yaml(preset: str) -> None:
    config = load_config(preset=preset)
    assert build_config(yaml.safe_load(config_to_yaml(config))) == config


def test_load_config_raises_config_error_not_validation_error() -> None:
    with pytest.raises(ConfigError, match=r"'federation\.rounds'"):
        load_config(overrides=["rounds=0"])
