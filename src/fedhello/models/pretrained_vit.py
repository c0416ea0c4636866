"""A small ViT that fedhello pretrains itself: an offline stand-in for a pretrained vision backbone.

No pretrained vision transformer installs from PyPI or Debian, and federated LoRA fine-tuning
needs a backbone whose features already mean something (LoRA on a random init learns little).
So fedhello pretrains a 6-layer ViT (about 0.7M parameters, 28x28 grey images, 7x7 patches)
from a random init on the split that data/mnist.py holds out of a dataset, and caches it as a
Hugging Face safetensors folder. It is a project-pretrained stand-in, not a foundation model:
it has seen 9,000 images of one dataset. Only the backbone is saved: fine-tuning starts from a new classifier head.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

from fedhello.data.images import ImageSplit, image_split
from fedhello.data.mnist import IMAGE_SIDE, LabelledImages, pretraining_split
from fedhello.models.gguf import cache_root, publish_folder
from fedhello.seeding import numpy_rng, torch_seed

PRETRAINING_RECORD = "pretraining.json"
CACHE_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", PRETRAINING_RECORD)


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    hidden_size: int = 96
    num_layers: int = 6
    num_heads: int = 4
    intermediate_size: int = 384
    patch_size: int = 7
    validation_size: int = 1_000  # held out of the pretraining split to measure the pretraining
    seed: int = 0


@dataclass(frozen=True)
class PretrainResult:
    folder: Path
    validation_accuracy: float
    seconds: float
    steps: int


def pretrained_vit_path(dataset: str) -> Path:
    return cache_root() / f"vit-{dataset}-pretrained"


def _is_complete(folder: Path) -> bool:
    return all((folder / file).is_file() for file in CACHE_FILES)


def _read_result(folder: Path) -> PretrainResult:
    record = json.loads((folder / PRETRAINING_RECORD).read_text())
    return PretrainResult(folder, record["validation_accuracy"], record["seconds"], record["settings"]["steps"])


def pretrained_vit_folder(dataset: str) -> Path:
    """The cached folder of `vit-<dataset>`, pretrained first (with a notice) when it is missing."""
    folder = pretrained_vit_path(dataset)
    if not _is_complete(folder):
        print(
            f"fedhello: pretraining vit-{dataset} once on the held-out {dataset} split (a minute or two; "
            f"cached in {folder}; `fedhello pretrain-vit` does this ahead)",
            file=sys.stderr,
            flush=True,
        )
        pretrain_vit(dataset)
    return folder


def _processor_for(images: np.ndarray) -> ViTImageProcessor:
    """Native 28x28 input normalised with the pretraining images' own mean and std."""
    pixels = images.astype(np.float64) / 255.0
    return ViTImageProcessor(
        size={"height": IMAGE_SIDE, "width": IMAGE_SIDE},
        do_resize=False,
        image_mean=[round(float(pixels.mean()), 4)],
        image_std=[round(float(pixels.std()), 4)],
    )


def _model_for(settings: PretrainSettings, num_labels: int) -> ViTForImageClassification:
    config = ViTConfig(
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=settings.intermediate_size,
        image_size=IMAGE_SIDE,
        patch_size=settings.patch_size,
        num_channels=1,
        num_labels=num_labels,  # type: ignore[call-arg]  # a PretrainedConfig keyword ViTConfig passes on
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(settings.seed, "pretrain", 0))
        return ViTForImageClassification(config)


def _batches(positions: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless shuffled epochs over `positions`, in full batches."""
    while True:
        shuffled = rng.permutation(positions)
        for start in range(0, len(shuffled) - batch_size + 1, batch_size):
            yield shuffled[start : start + batch_size]


def _train(
    model: ViTForImageClassification,
    split: ImageSplit,
    positions: np.ndarray,
    settings: PretrainSettings,
    description: str,
    progress: bool,
) -> None:
    """Full-parameter AdamW with a one-cycle learning rate."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1
    )
    batches = _batches(positions, min(settings.batch_size, len(positions)), numpy_rng(settings.seed, "pretrain", 1))
    model.train()
    bar = tqdm(range(settings.steps), desc=description, unit="step", disable=not progress)
    for _ in bar:
        loss = model(**split.batch(next(batches))).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)


@torch.inference_mode()
def _accuracy(model: ViTForImageClassification, split: ImageSplit, positions: np.ndarray) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(positions), 500):
        batch = split.batch(positions[start : start + 500])
        correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(positions)


def pretrain_vit(
    dataset: str = "mnist", settings: PretrainSettings = PretrainSettings(), force: bool = False, progress: bool = True
) -> PretrainResult:
    """Pretrain `vit-<dataset>` on its held-out split and cache it (kept if already cached, unless `force`)."""
    folder = pretrained_vit_path(dataset)
    if _is_complete(folder) and not force:
        return _read_result(folder)
    started = time.perf_counter()
    data: LabelledImages = pretraining_split(dataset)
    order = numpy_rng(settings.seed, "pretrain", 2).permutation(len(data.labels))
    validation, training = order[: settings.validation_size], order[settings.validation_size :]
    processor = _processor_for(data.images[training])
    split = image_split(data.images, data.labels, processor, num_channels=1)
    model = _model_for(settings, num_labels=int(data.labels.max()) + 1)
    _train(model, split, training, settings, f"pretraining vit-{dataset}", progress)
    accuracy = _accuracy(model, split, validation)
    seconds = time.perf_counter() - started
    record = {
        "what": f"project-pretrained stand-in, not a foundation model: a ViT trained from a random init on "
        f"{len(training)} held-out {dataset} images by `fedhello pretrain-vit`",
        "dataset": dataset,
        "train_images": len(training),
        "validation_images": len(validation),
        "validation_accuracy": accuracy,
        "seconds": round(seconds, 1),
        "settings": asdict(settings),
    }

    def write(staging: Path) -> None:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        # The backbone only (safetensors; nothing is pickled): its pretraining head has the same 10 classes
        # as the fine-tuning task and would otherwise be kept, so the federation gets a new head to train.
        model.vit.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / PRETRAINING_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    publish_folder(folder, write)
    return PretrainResult(folder, accuracy, seconds, settings.steps)


def save_random_vit(folder: Path) -> Path:
    """A tiny random-init ViT (4 layers, 8x8 grey images: the `digits` dataset) as a Hugging Face folder.

    For tests and benchmarks that need a real image model that trains in milliseconds.
    """
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=8,
        patch_size=2,
        num_channels=1,
        num_labels=10,  # type: ignore[call-arg]  # a PretrainedConfig keyword ViTConfig passes on
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 8, "width": 8}, image_mean=[0.5], image_std=[0.5]).save_pretrained(folder)
    return folder
