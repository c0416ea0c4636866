"""GGUF checkpoints dequantised once and cached as an ordinary safetensors model folder.

Loading a GGUF file with transformers dequantises every tensor (SmolLM2-135M: about 30 s
on 2 CPU cores); the cached folder then loads like any Hugging Face checkpoint, with any
head class (causal LM, sequence classification). No pickle is written or read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def cache_root() -> Path:
    """`$FEDHELLO_CACHE`, else `$XDG_CACHE_HOME/fedhello`, else `~/.cache/fedhello`."""
    if os.environ.get("FEDHELLO_CACHE"):
        return Path(os.environ["FEDHELLO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "fedhello"


def dequantized_folder(gguf_path: Path, name: str) -> Path:
    """The cached float32 folder of `gguf_path` (model, tokenizer, chat template), made on first use."""
    folder = cache_root() / name
    if all((folder / file).is_file() for file in CACHE_FILES):
        return folder
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # The weights are plain tensors now; without this the folder would claim to be GGUF-quantised.
    model.hf_quantizer = None  # type: ignore[assignment]  # set by from_pretrained, undeclared on the class
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return publish_folder(folder, write)


def publish_folder(folder: Path, write: Callable[[Path], None]) -> Path:
    """`write` fills a staging folder that is then renamed to `folder`: readers see all of it or nothing.

    An interrupted `write` removes its staging folder; a `folder` already there (incomplete, or
    replaced on purpose) is swapped out.
    """
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return folder
