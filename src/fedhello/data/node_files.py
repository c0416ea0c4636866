"""Node-local data files: what a SuperNode trains on when its node config names `data-path`.

Formats, chosen by the run's task (`model.task`) and the file's extension:

- text classification (`sequence_classification`): `.jsonl`, one object per line with a string
  `text` and a string `label`; or `.csv` with a header row naming `text` and `label` columns.
- instruction pairs (`causal_lm`): `.jsonl`, one object per line with string `prompt` and
  `response`, or `messages`: a one-turn chat `[{"role": "system", ...}?, {"role": "user", ...},
  {"role": "assistant", ...}]`; an optional string `category` (one of the label set; absent:
  the set's first).
- image classification (`image_classification`): `.npz` with `images` (uint8, [N, H, W] or
  [N, H, W, C]) and `labels` (label names as strings, or int indices into the label set).

Every label must belong to the run's label set (`data.labels`, else the dataset's own label
names), so every node's head agrees. A bad file or row raises `NodeDataError` with one line:
the file, the row (1-based line of a JSONL/CSV file, index of an npz sample) and what is wrong.
Rows keep their file order: the node trains on them exactly as the simulated client trains
on its partition (see `write_node_file`, which `fedhello export-partitions` uses).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedhello.data.datasets import DatasetData, ImageClassificationData, TextClassificationData
from fedhello.data.instructions import InstructionData
from fedhello.errors import NodeDataError

TEXT_SUFFIXES = (".jsonl", ".csv")
FORMATS = {
    "sequence_classification": ("text classification", TEXT_SUFFIXES),
    "causal_lm": ("instruction pairs", (".jsonl",)),
    "image_classification": ("image classification", (".npz",)),
}


class RowError(ValueError):
    """What is wrong with one row; `read_node_file` adds the file and row number."""


def _string_field(row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise RowError(f"missing field {name!r}")
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise RowError(f"field {name!r} must be a non-empty string, got {json.dumps(value)[:60]}")
    return value


def _label_index(label: Any, index: dict[str, int], field: str = "label") -> int:
    if not isinstance(label, str):
        raise RowError(f"field {field!r} must be a label name (a string), got {json.dumps(label)[:60]}")
    if label not in index:
        shown = ", ".join(list(index)[:8]) + (", ..." if len(index) > 8 else "")
        raise RowError(f"{field} {label!r} is not in the run's label set (data.labels: {shown})")
    return index[label]


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise NodeDataError(f"{path}: row {line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise NodeDataError(f"{path}: row {line_number}: expected a JSON object, got {type(row).__name__}")
            yield line_number, row


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise NodeDataError(f"{path}: row 1: the header lacks column(s) {', '.join(sorted(missing))}")
        for row in reader:
            yield reader.line_num, row


def _rows(path: Path, parse) -> list:
    rows = _csv_rows(path) if path.suffix == ".csv" else _jsonl_rows(path)
    parsed = []
    for line_number, row in rows:
        try:
            parsed.append(parse(row))
        except RowError as error:
            raise NodeDataError(f"{path}: row {line_number}: {error}") from None
    return parsed


def chat_pair(messages: Any) -> tuple[str, str]:
    """(prompt, response) of a one-turn chat: an optional system message, one user turn, one assistant turn."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise RowError("field 'messages' must be a list of {role, content} objects")
    turns = [m for m in messages if m.get("role") != "system"]
    roles = [m.get("role") for m in turns]
    if roles != ["user", "assistant"]:
        raise RowError(f"field 'messages' must be one user turn then one assistant turn, got roles {roles}")
    return _string_field(turns[0], "content"), _string_field(turns[1], "content")


def read_node_file(path: Path, task_kind: str, label_names: Sequence[str]) -> DatasetData:
    """The rows of a node's data file as a one-split dataset (the test split is empty), validated."""
    if task_kind not in FORMATS:
        raise NodeDataError(f"{path}: node data files are not supported for model.task {task_kind!r}")
    what, suffixes = FORMATS[task_kind]
    if path.suffix not in suffixes:
        raise NodeDataError(f"{path}: {what} data must be a {' or '.join(suffixes)} file")
    if not path.is_file():
        raise NodeDataError(f"{path}: no such file (node config data-path)")
    index = {name: position for position, name in enumerate(label_names)}
    name = f"node file {path.name}"
    if task_kind == "image_classification":
        return _read_images(path, name, index, tuple(label_names))
    if task_kind == "sequence_classification":
        rows = _rows(path, lambda row: (_string_field(row, "text"), _label_index(row.get("label"), index)))
        if not rows:
            raise NodeDataError(f"{path}: the file has no rows")
        texts, labels = zip(*rows, strict=True)
        return TextClassificationData(
            name, list(texts), np.array(labels, np.int64), [], np.zeros(0, np.int64), tuple(label_names)
        )

    def instruction(row: dict[str, Any]) -> tuple[str, str, int]:
        if "messages" in row:
            prompt, response = chat_pair(row["messages"])
        else:
            prompt, response = _string_field(row, "prompt"), _string_field(row, "response")
        category = _label_index(row["category"], index, "category") if "category" in row else 0
        return prompt, response, category

    pairs = _rows(path, instruction)
    if not pairs:
        raise NodeDataError(f"{path}: the file has no rows")
    prompts, responses, categories = zip(*pairs, strict=True)
    return InstructionData(
        name, list(prompts), list(responses), np.array(categories, np.int64), [], [], np.zeros(0, np.int64),
        tuple(label_names),
    )  # fmt: skip


def _read_images(path: Path, name: str, index: dict[str, int], label_names: tuple[str, ...]) -> DatasetData:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as error:
        raise NodeDataError(
            f"{path}: not a readable .npz of plain arrays ({str(error).splitlines()[0][:80]})"
        ) from None
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise NodeDataError(f"{path}: the archive lacks array(s) {', '.join(sorted(missing))}")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise NodeDataError(
            f"{path}: 'images' must be uint8 [N, H, W] or [N, H, W, C], got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise NodeDataError(f"{path}: 'labels' must be one per image ({len(images)}), got shape {labels.shape}")
    if len(images) == 0:
        raise NodeDataError(f"{path}: the file has no rows")
    if labels.dtype.kind in "iu":
        bad = np.flatnonzero((labels < 0) | (labels >= len(label_names)))
        if len(bad):
            raise NodeDataError(
                f"{path}: row {bad[0]}: label index {labels[bad[0]]} is outside the run's label set "
                f"(0..{len(label_names) - 1})"
            )
        classes = labels.astype(np.int64)
    elif labels.dtype.kind == "U":
        classes = np.empty(len(labels), np.int64)
        for row, label in enumerate(labels.tolist()):
            try:
                classes[row] = _label_index(label, index)
            except RowError as error:
                raise NodeDataError(f"{path}: row {row}: {error}") from None
    else:
        raise NodeDataError(f"{path}: 'labels' must be label names (strings) or int indices, got {labels.dtype}")
    pixels = images[..., None] if images.ndim == 3 else images
    return ImageClassificationData(name, pixels, classes, pixels[:0], np.zeros(0, np.int64), label_names)


def write_node_file(path: Path, data: DatasetData, positions: np.ndarray) -> Path:
    """Write the training samples at `positions` (in that order) in the node format of `data`'s kind."""
    names = data.label_names
    if isinstance(data, ImageClassificationData):
        path = path.with_suffix(".npz")
        images = data.train_images[positions]
        labels = np.array([names[label] for label in data.train_labels[positions]], dtype=str)
        np.savez(path, images=images, labels=labels)
        return path
    path = path.with_suffix(".jsonl")
    if isinstance(data, TextClassificationData):
        rows = ({"text": data.train_texts[i], "label": names[data.train_labels[i]]} for i in positions)
    else:
        rows = (
            {
                "prompt": data.train_prompts[i],
                "response": data.train_responses[i],
                "category": names[data.train_categories[i]],
            }
            for i in positions
        )
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
