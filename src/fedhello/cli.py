"""The `fedhello` command line: run, resume, compare, report, presets, strategies, datasets, tasks, pretrain-vit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedhello.errors import DISK_FULL, ConfigError, EngineError, RunInterrupted

EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_ENGINE_ERROR = 1


def _disk_full_message(args: argparse.Namespace, error: OSError) -> str:
    """One line for a full disk: what stopped, what survived, how to continue."""
    where = f" ({error.filename})" if error.filename else ""
    run_dir = getattr(args, "run_dir", None) if args.command == "resume" else getattr(args, "out", None)
    if args.command in ("run", "resume") and run_dir is not None:
        if not (Path(run_dir) / "checkpoint" / "state.json").is_file():
            return (
                f"{error.strerror}{where}: the run stopped before its first checkpoint and is marked failed; "
                f"free some space and start it again with a new --out (then remove {run_dir})"
            )
        return (
            f"{error.strerror}{where}: the run stopped and is marked failed at its last complete checkpoint; "
            f"free some space, then continue it with `fedhello resume {run_dir}`"
        )
    if args.command == "compare":
        return (
            f"{error.strerror}{where}: the comparison stopped; free some space and run the same "
            "`fedhello compare` again (finished cells are kept, the interrupted one resumes)"
        )
    return f"{error.strerror}{where}: nothing was completed; free some space and run the command again"


def _run(args: argparse.Namespace) -> int:
    from fedhello.allocation.registry import strategy_from_config
    from fedhello.config import load_config

    config = load_config(args.preset, args.config, args.set)
    strategy_from_config(config)  # reject unknown strategies and bad params before anything is loaded
    from fedhello.run_directory import default_run_dir
    from fedhello.runner import run_experiment

    args.out = Path(args.out or config.output.dir or default_run_dir(config))  # named if the disk fills up
    config.output.dir = str(args.out)

    outcome = run_experiment(config, engine=args.engine)
    print()
    print(outcome.summary_table)
    print(f"\nrun directory: {outcome.out_dir}  (summary.md, metrics.csv, plots, tensorboard/)")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from fedhello.runner import resume_experiment

    outcome = resume_experiment(args.run_dir)
    print()
    print(outcome.summary_table)
    print(f"\nrun directory: {outcome.out_dir}  (summary.md, metrics.csv, plots, tensorboard/)")
    return 0


def _flower_app(args: argparse.Namespace) -> int:
    from fedhello.allocation.registry import strategy_from_config
    from fedhello.config import load_config
    from fedhello.experiment import prepare_experiment
    from fedhello.flower.deployment import check_app_dir, write_flower_app
    from fedhello.resources.probe import COST_FILE
    from fedhello.run_directory import check_run_dir
    from fedhello.runner import resumable_config

    if args.resume:
        if args.preset or args.config or args.set:
            raise ConfigError(
                "flower-app --resume continues the run in --run-dir with its own config.yaml; "
                "drop --preset/--config/--set"
            )
        config = resumable_config(args.run_dir, engine="flower")
    else:
        config = load_config(args.preset, args.config, args.set)
        if args.run_dir.is_file():
            raise ConfigError(f"--run-dir: {args.run_dir} is a file, not a directory; choose another --run-dir")
        if args.run_dir.exists():  # otherwise it may be a path on the SuperLink's machine
            check_run_dir(args.run_dir)
    strategy_from_config(config)
    check_app_dir(args.app_dir)
    # The same data and model checks as `fedhello run`, so a config that cannot run yields no app.
    experiment = prepare_experiment(config, cost_cache=args.run_dir / COST_FILE if args.resume else None)
    app_dir = write_flower_app(config, args.run_dir, args.app_dir, resume=args.resume, costs=experiment.costs)
    print(f"Flower app written to {app_dir}; run it with: flwr run {app_dir} <connection> --stream")
    return 0


def _export_partitions(args: argparse.Namespace) -> int:
    from fedhello.config import load_config
    from fedhello.node_preparation import export_partitions

    config = load_config(args.preset, args.config, args.set)
    manifest = export_partitions(config, args.out)
    suffix = next(args.out.glob("client-000.*")).suffix
    print(
        f"{config.federation.num_clients} node data files and {manifest.name} written to {args.out}; start node N "
        "with: fedhello node -- ... --node-config "
        f"'partition-id=N data-path=\"{args.out.resolve()}/client-NNN{suffix}\"'"
    )
    return 0


def _node(args: argparse.Namespace) -> int:
    from fedhello.flower.node_worker import run_node

    arguments = args.supernode_arguments
    return run_node(arguments[1:] if arguments[:1] == ["--"] else arguments, args.socket)


def _compare(args: argparse.Namespace) -> int:
    from fedhello.comparison.grid import load_comparison, run_comparison
    from fedhello.comparison.report import write_report

    comparison = load_comparison(args.preset, args.config, args.set)
    out = args.out or Path("runs") / f"compare-{comparison.name}"
    run_comparison(comparison, out, progress=not args.quiet, workers=args.workers)
    print()
    print(write_report(out, comparison.target_accuracy))
    print(f"\ncomparison directory: {out}  (comparison.md, comparison.csv, runs.csv, plots, runs/)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from fedhello.comparison.report import write_report
    from fedhello.outputs.run_report import write_run_report
    from fedhello.run_directory import PARTITION_FILE, RunDirectory

    directory: Path = args.directory
    if (directory / "metrics.jsonl").exists() or (directory / "config.yaml").exists():
        run_dir = RunDirectory.existing(directory)
        if not run_dir.has_info():
            raise ConfigError(
                f"{directory} stopped before its first round (no run_info.json); there is nothing to report"
            )
        if not (directory / PARTITION_FILE).is_file():
            raise ConfigError(
                f"{directory} has no {PARTITION_FILE}; restore it to report the run (nothing was rewritten)"
            )
        print(write_run_report(run_dir))
    elif (directory / "runs").is_dir():
        print(write_report(directory, args.target))
    else:
        raise ConfigError(f"{directory} is neither a run directory (metrics.jsonl) nor a comparison directory (runs/)")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from fedhello.config import COMPARISON_PRESET_PACKAGE, preset_description, preset_names

    print("experiment presets (fedhello run --preset NAME):")
    for name in preset_names():
        print(f"  {name:<24} {preset_description(name)}")
    print("comparison presets (fedhello compare --preset NAME):")
    for name in preset_names(COMPARISON_PRESET_PACKAGE):
        print(f"  {name:<24} {preset_description(name, COMPARISON_PRESET_PACKAGE)}")
    return 0


def _strategies(args: argparse.Namespace) -> int:
    from fedhello.allocation.registry import all_strategies

    for name, cls in all_strategies().items():
        print(f"{name:<12} {cls.summary}")
        for field_name, field in cls.Params.model_fields.items():
            default = field.get_default(call_default_factory=True)
            description = f"  {field.description}" if field.description else ""
            print(f"    {field_name} = {default!r}{description}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from fedhello.data.datasets import DATASETS
    from fedhello.models.sources import OFFLINE_MODELS, PROJECT_PRETRAINED_MODELS

    print("datasets (data.dataset):")
    for name, entry in DATASETS.items():
        print(f"  {name:<20} {entry.description}")
    print("  hf:<id>[:<config>]   a hub dataset with text or image and label columns (online, needs fedhello[hub])")
    print("models (model.name):")
    for name, model in OFFLINE_MODELS.items():
        print(f"  {name:<20} {model.description} (offline, package {model.distribution})")
    for name, dataset in PROJECT_PRETRAINED_MODELS.items():
        print(
            f"  {name:<20} small ViT pretrained by fedhello on {dataset}'s held-out split, a stand-in, not a "
            "foundation model (offline, made on first use or by `fedhello pretrain-vit`)"
        )
    print("  <hub id or folder>   any Hugging Face checkpoint of the run's task (see `fedhello tasks`; online)")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from fedhello.records import HEADLINE_LABELS, LOWER_IS_BETTER
    from fedhello.tasks import TASK_MODULES, task_for

    print("tasks (model.task):")
    for kind in TASK_MODULES:
        task = task_for(kind)
        direction = " (lower is better)" if task.headline_metric in LOWER_IS_BETTER else ""
        print(f"  {kind:<24} {task.description}; headline metric: {HEADLINE_LABELS[task.headline_metric]}{direction}")
    return 0


def _pretrain_vit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedhello.models.pretrained_vit import PretrainSettings, pretrain_vit

    settings = PretrainSettings() if args.steps is None else replace(PretrainSettings(), steps=args.steps)
    result = pretrain_vit(args.dataset, settings, force=args.force)
    print(
        f"vit-{args.dataset}: saved in {result.folder} after {result.steps} steps "
        f"({result.seconds:.0f} s); pretraining validation accuracy {result.validation_accuracy:.1%}"
    )
    return 0


def _config_reference(args: argparse.Namespace) -> int:
    from fedhello.config import config_reference

    print(config_reference())
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from fedhello.models.sources import PROJECT_PRETRAINED_MODELS

    parser = argparse.ArgumentParser(
        prog="fedhello", description="Federated LoRA fine-tuning with heterogeneous layer allocation."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run one federated experiment (default: the offline 20 Newsgroups experiment)"
    )
    run.add_argument("--preset", help="a shipped preset (see `fedhello presets`)")
    run.add_argument("--config", type=Path, help="a YAML config file, applied over the preset")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set federation.rounds=20 or --set rounds=20 (repeatable)",
    )
    run.add_argument("--out", type=Path, help="run directory (default: runs/<timestamp>-<name>-<strategy>)")
    run.add_argument(
        "--engine",
        choices=("inprocess", "flower-sim", "flower-local"),
        default="inprocess",
        help="inprocess (default); flower-sim: Flower's simulation engine; flower-local: a Flower "
        "deployment on 127.0.0.1 with one SuperNode per client (both need fedhello[flower])",
    )
    run.set_defaults(handler=_run)

    resume = commands.add_parser("resume", help="continue an interrupted run from its last checkpoint")
    resume.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    resume.set_defaults(handler=_resume)

    flower_app = commands.add_parser("flower-app", help="write a Flower app directory for `flwr run` on a deployment")
    flower_app.add_argument("--preset", help="a shipped preset (see `fedhello presets`)")
    flower_app.add_argument("--config", type=Path, help="a YAML config file, applied over the preset")
    flower_app.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one field")
    flower_app.add_argument(
        "--run-dir",
        type=Path,
        required=True,
        help="where the ServerApp writes the run directory (on the SuperLink's machine)",
    )
    flower_app.add_argument("--app-dir", type=Path, required=True, help="the Flower app directory to write")
    flower_app.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --run-dir from its last checkpoint (with its own config.yaml)",
    )
    flower_app.set_defaults(handler=_flower_app)

    export = commands.add_parser(
        "export-partitions", help="write the simulated partition as one node data file per client, plus a manifest"
    )
    export.add_argument("--preset", help="a shipped preset (see `fedhello presets`)")
    export.add_argument("--config", type=Path, help="a YAML config file, applied over the preset")
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one field")
    export.add_argument("--out", type=Path, required=True, help="the folder to write client-NNN files into")
    export.set_defaults(handler=_export_partitions)

    node = commands.add_parser(
        "node",
        help="run a Flower SuperNode with a long-lived fedhello worker that keeps the model and data loaded",
        description="Starts the node worker, then `flower-supernode SUPERNODE_ARGUMENTS` whose ClientApp forwards "
        "every message to the worker; stops both when either ends. Example: fedhello node -- --insecure "
        "--superlink 127.0.0.1:9092 --port 9094 --node-config 'partition-id=0 data-path=\"/data/mine.jsonl\"'",
    )
    node.add_argument(
        "--socket", type=Path, help="the worker's Unix socket (default: a new private folder under the temp dir)"
    )
    node.add_argument("supernode_arguments", nargs=argparse.REMAINDER, help="after --: flower-supernode's arguments")
    node.set_defaults(handler=_node)

    compare = commands.add_parser("compare", help="run a grid of methods x partitions x seeds and tabulate it")
    compare.add_argument("--preset", help="a shipped comparison preset (see `fedhello presets`)")
    compare.add_argument("--config", type=Path, help="a comparison YAML file, applied over the preset")
    compare.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a comparison field, e.g. --set seeds=[0] --set base.federation.rounds=4",
    )
    compare.add_argument(
        "--out", type=Path, help="comparison directory (default: runs/compare-<name>); reruns skip finished cells"
    )
    compare.add_argument("--quiet", action="store_true", help="no per-round progress bars")
    compare.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="cells run in this many processes, one torch thread each (e.g. the number of cores); "
        "same numbers as one process",
    )
    compare.set_defaults(handler=_compare)

    report = commands.add_parser("report", help="regenerate tables and plots of a run or comparison from its files")
    report.add_argument("directory", type=Path)
    report.add_argument("--target", type=float, help="target accuracy for 'rounds to target' (comparisons)")
    report.set_defaults(handler=_report)

    commands.add_parser("presets", help="list the shipped presets").set_defaults(handler=_presets)
    commands.add_parser("strategies", help="list allocation strategies and their parameters").set_defaults(
        handler=_strategies
    )
    commands.add_parser("datasets", help="list datasets and offline models").set_defaults(handler=_datasets)
    commands.add_parser("tasks", help="list task kinds (model.task)").set_defaults(handler=_tasks)
    pretrain = commands.add_parser(
        "pretrain-vit",
        help="pretrain the small stand-in ViT of `vit-mnist` / "
        "`vit-fashion-mnist` on the dataset's held-out split and cache it",
    )
    pretrain.add_argument("--dataset", choices=tuple(PROJECT_PRETRAINED_MODELS.values()), default="mnist")
    pretrain.add_argument("--steps", type=_positive_int, help="training steps (default: the module's, 800)")
    pretrain.add_argument("--force", action="store_true", help="pretrain again even if it is cached")
    pretrain.set_defaults(handler=_pretrain_vit)
    commands.add_parser("config", help="print the config reference (Markdown)").set_defaults(handler=_config_reference)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError) as error:
        print(f"fedhello: error: {error}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except EngineError as error:
        print(f"fedhello: error: {error}", file=sys.stderr)
        return EXIT_ENGINE_ERROR
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        print(f"fedhello: error: {_disk_full_message(args, error)}", file=sys.stderr)
        return EXIT_ENGINE_ERROR
    except RunInterrupted as error:
        print(f"fedhello: {error}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("fedhello: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
