"""Instruction pairs encoded through the tokenizer's chat template, for causal-LM tuning.

Training sees the whole conversation (prompt, then answer) but learns only the answer: every
prompt and padding position has label -100, the positions the loss ignores. Generation
needs the prompt alone, left-padded, so that every row's next token follows the last column.
The prompt is exactly what the chat template renders with its generation prompt, so the
model is tuned on the same text it is later asked to continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedhello.errors import ConfigError

IGNORE_INDEX = -100  # the label Hugging Face causal-LM losses skip


@dataclass(frozen=True)
class InstructionSplit:
    input_ids: torch.Tensor  # [N, L] prompt then answer tokens, right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # input_ids with every prompt and padding position set to IGNORE_INDEX
    prompt_ids: torch.Tensor  # [N, P] prompt tokens (ending with the generation prompt), left-padded
    prompt_mask: torch.Tensor
    reference_responses: list[str]
    classes: torch.Tensor  # int64 category per sample: partitions and per-class counts use it

    def __len__(self) -> int:
        return len(self.classes)

    def batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Training inputs and token labels, cut to the batch's longest sequence."""
        index = torch.as_tensor(indices, dtype=torch.long)
        mask = self.attention_mask[index]
        width = int(mask.sum(dim=1).max()) if len(index) else 0
        return {
            "input_ids": self.input_ids[index, :width],
            "attention_mask": mask[:, :width],
            "labels": self.labels[index, :width],
        }

    def prompt_batch(self, indices: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Left-padded prompts for `model.generate`, cut to the batch's longest prompt."""
        index = torch.as_tensor(indices, dtype=torch.long)
        mask = self.prompt_mask[index]
        start = mask.shape[1] - (int(mask.sum(dim=1).max()) if len(index) else 0)
        return {"input_ids": self.prompt_ids[index, start:], "attention_mask": mask[:, start:]}

    def references(self, indices: np.ndarray | torch.Tensor) -> list[str]:
        return [self.reference_responses[int(position)] for position in torch.as_tensor(indices).reshape(-1)]


def chat_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """A one-turn conversation; `system_prompt=None` lets the template add its default, if any."""
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return [*system, {"role": "user", "content": prompt}]


def prompt_and_answer_text(tokenizer, prompt: str, response: str, system_prompt: str | None) -> tuple[str, str]:
    """The rendered prompt (with the generation prompt) and the rendered answer.

    The answer is what the template adds after the generation prompt when the assistant's
    message is included: the response and the template's end-of-turn marker (ChatML:
    `<|im_end|>`, SmolLM2's eos token, so generation stops there); whitespace after the
    marker is dropped. A template that does not render the conversation as generation
    prompt + answer cannot be split this way.
    """
    messages = chat_messages(prompt, system_prompt)
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ConfigError(
            f"config field 'model.name': the chat template of {tokenizer.name_or_path!r} does not render a "
            "conversation as its generation prompt followed by the answer, so prompt and answer tokens "
            "cannot be told apart"
        )
    return prompt_text, full_text[len(prompt_text) :].rstrip()


def fit_to_length(prompt_ids: list[int], answer_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Prompt and answer cut to `max_length` tokens together, keeping at least one answer token.

    The answer keeps its start: all of it if the prompt leaves room, else as much as the
    prompt leaves but never less than a quarter of `max_length`. The prompt then gives up
    tokens from its middle, keeping its start (system message, the instruction's opening)
    and its end (the generation prompt the answer follows).
    """
    answer_length = min(len(answer_ids), max(max_length - len(prompt_ids), max_length // 4, 1))
    prompt_length = min(len(prompt_ids), max_length - answer_length)
    head = prompt_length // 2
    kept_prompt = prompt_ids[:head] + prompt_ids[len(prompt_ids) - (prompt_length - head) :]
    return kept_prompt, answer_ids[:answer_length]


def padding_id(tokenizer) -> int:
    """The tokenizer's pad token, else its eos token (SmolLM2 pads with eos); padded positions
    are masked out of attention and loss, so which id fills them does not matter."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ConfigError(
            f"config field 'model.name': tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token"
        )
    return pad_id


def padded(rows: Sequence[list[int]], fill: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded with `fill` to the longest row, and the mask of real tokens."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for position, row in enumerate(rows):
        columns = slice(width - len(row), width) if left else slice(0, len(row))
        ids[position, columns] = torch.tensor(row, dtype=torch.long)
        mask[position, columns] = 1
    return ids, mask


def token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of rendered template text; the template already holds any special tokens."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def encode_instructions(
    tokenizer,
    prompts: Sequence[str],
    responses: Sequence[str],
    categories: np.ndarray | Sequence[int],
    max_length: int,
    *,
    system_prompt: str | None = None,
) -> InstructionSplit:
    """Pairs encoded for training (prompt + answer, answer-only labels) and for generation.

    `system_prompt=None` keeps the template's default system message, if it has one; a string
    replaces it. SmolLM2's default costs 21 tokens per sample, an empty one ("") 5: on
    chatterbot that takes the median pair from 47 to 31 tokens.
    """
    if max_length < 2:
        raise ConfigError(f"config field 'model.max_length': {max_length} leaves no room for a prompt and an answer")
    texts = [
        prompt_and_answer_text(tokenizer, prompt, response, system_prompt)
        for prompt, response in zip(prompts, responses, strict=True)
    ]
    prompt_rows = token_ids(tokenizer, [prompt_text for prompt_text, _ in texts])
    answer_rows = token_ids(tokenizer, [answer_text for _, answer_text in texts])
    if any(not answer for answer in answer_rows):
        raise ConfigError(
            "config field 'data.dataset': a pair renders to an empty answer (empty response "
            "and a chat template without an end-of-turn marker)"
        )
    fitted = [
        fit_to_length(prompt, answer, max_length) for prompt, answer in zip(prompt_rows, answer_rows, strict=True)
    ]
    pad_id = padding_id(tokenizer)
    input_ids, attention_mask = padded([prompt + answer for prompt, answer in fitted], pad_id, left=False)
    labels, _ = padded([[IGNORE_INDEX] * len(prompt) + answer for prompt, answer in fitted], IGNORE_INDEX, left=False)
    prompt_ids, prompt_mask = padded([prompt for prompt, _ in fitted], pad_id, left=True)
    return InstructionSplit(
        input_ids,
        attention_mask,
        labels,
        prompt_ids,
        prompt_mask,
        list(responses),
        torch.as_tensor(np.asarray(categories, dtype=np.int64)),
    )
