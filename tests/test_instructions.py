"""Instruction data: the chatterbot loader, hub row conversions, chat-template encoding, ROUGE-L."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhello.data.datasets import load_dataset
from fedhello.data.instruction_encoding import IGNORE_INDEX, encode_instructions, fit_to_length
from fedhello.data.instructions import (
    InstructionData,
    InstructionPair,
    capped_positions,
    chatterbot_pairs,
    dolly_pair,
    natural_instructions_pair,
    split_by_category,
    without_repeats,
)
from fedhello.data.rouge import rouge_l
from fedhello.errors import ConfigError

PROMPTS = ["What is a cat?", "Hello"]
RESPONSES = ["A cat is an answer.", "Hi, how are you?"]
PROMPT_TOKENS = [
    ["<|im_start|>", "user", "what", "is", "a", "cat", "?", "<|im_end|>", "<|im_start|>", "assistant"],
    ["<|im_start|>", "user", "hello", "<|im_end|>", "<|im_start|>", "assistant"],
]
ANSWER_TOKENS = [
    ["a", "cat", "is", "an", "answer", ".", "<|im_end|>"],
    ["hi", ",", "how", "are", "you", "?", "<|im_end|>"],
]


@pytest.fixture
def hand_made_split(chat_tokenizer):
    return encode_instructions(chat_tokenizer, PROMPTS, RESPONSES, np.array([1, 0]), max_length=64)


def test_labels_mask_exactly_the_prompt_and_padding(hand_made_split, chat_tokenizer) -> None:
    for row, (prompt, answer) in enumerate(zip(PROMPT_TOKENS, ANSWER_TOKENS, strict=True)):
        tokens = chat_tokenizer.convert_ids_to_tokens(hand_made_split.input_ids[row].tolist())
        length = len(prompt) + len(answer)
        assert tokens[:length] == prompt + answer
        assert hand_made_split.attention_mask[row].tolist() == [1] * length + [0] * (len(tokens) - length)
        labels = hand_made_split.labels[row].tolist()
        ids = hand_made_split.input_ids[row].tolist()
        for position, (label, token_id) in enumerate(zip(labels, ids, strict=True)):
            is_answer = len(prompt) <= position < length
            assert label == (token_id if is_answer else IGNORE_INDEX), position
    assert hand_made_split.classes.tolist() == [1, 0]
    assert hand_made_split.classes.dtype == torch.int64


def test_batch_trims_to_the_longest_sequence(hand_made_split) -> None:
    shorter = len(PROMPT_TOKENS[1]) + len(ANSWER_TOKENS[1])
    longer = len(PROMPT_TOKENS[0]) + len(ANSWER_TOKENS[0])
    alone = hand_made_split.batch([1])
    assert {name: tuple(tensor.shape) for name, tensor in alone.items()} == {
        "input_ids": (1, shorter),
        "attention_mask": (1, shorter),
        "labels": (1, shorter),
    }
    both = hand_made_split.batch(np.array([1, 0]))
    assert both["input_ids"].shape == (2, longer)
    assert both["attention_mask"][0].tolist() == [1] * shorter + [0] * (longer - shorter)


def test_prompt_batch_is_left_padded_and_ends_with_the_generation_prompt(hand_made_split, chat_tokenizer) -> None:
    assistant = chat_tokenizer.convert_tokens_to_ids("assistant")
    batch = hand_made_split.prompt_batch([1, 0])
    assert batch["input_ids"].shape == (2, len(PROMPT_TOKENS[0]))
    assert batch["input_ids"][:, -1].tolist() == [assistant, assistant]
    padding = len(PROMPT_TOKENS[0]) - len(PROMPT_TOKENS[1])
    assert batch["attention_mask"][0].tolist() == [0] * padding + [1] * len(PROMPT_TOKENS[1])
    assert batch["input_ids"][0, :padding].tolist() == [chat_tokenizer.pad_token_id] * padding
    assert hand_made_split.prompt_batch([1])["input_ids"].shape == (1, len(PROMPT_TOKENS[1]))
    assert hand_made_split.references([1, 0]) == [RESPONSES[1], RESPONSES[0]]


def test_truncation_keeps_answer_tokens_and_the_generation_prompt(chat_tokenizer) -> None:
    long_prompt = " ".join(["one two three"] * 10)
    long_answer = " ".join(["red blue"] * 10)
    split = encode_instructions(chat_tokenizer, [long_prompt], [long_answer], [0], max_length=16)
    assert split.input_ids.shape == (1, 16)
    learned = split.labels[0][split.labels[0] != IGNORE_INDEX]
    assert len(learned) == 16 // 4
    tokens = chat_tokenizer.convert_ids_to_tokens(split.input_ids[0].tolist())
    assert tokens[:2] == ["<|im_start|>", "user"]
    assert tokens[10:12] == ["<|im_start|>", "assistant"]
    assert tokens[12:] == ["red", "blue", "red", "blue"]
    prompt_tokens = chat_tokenizer.convert_ids_to_tokens(split.prompt_batch([0])["input_ids"][0].tolist())
    assert prompt_tokens == tokens[:12]


def test_fit_to_length_rule() -> None:
    assert fit_to_length([1, 2, 3], [4, 5], 8) == ([1, 2, 3], [4, 5])  # fits: unchanged
    assert fit_to_length([1, 2, 3], [4, 5, 6, 7, 8, 9], 8) == ([1, 2, 3], [4, 5, 6, 7, 8])  # answer cut at its end
    # a prompt longer than max_length loses its middle; the answer keeps a quarter
    assert fit_to_length(list(range(10)), [20, 21, 22], 8) == ([0, 1, 2, 7, 8, 9], [20, 21])
    assert fit_to_length(list(range(10)), [20], 8) == ([0, 1, 2, 6, 7, 8, 9], [20])


def test_system_prompt_replaces_the_default(chat_tokenizer) -> None:
    split = encode_instructions(chat_tokenizer, ["Hello"], ["Hi"], [0], max_length=64, system_prompt="Answer.")
    tokens = chat_tokenizer.convert_ids_to_tokens(split.prompt_ids[0].tolist())
    assert tokens[:4] == ["<|im_start|>", "system", "answer", "."]


def test_a_template_without_the_prefix_property_is_refused(chat_tokenizer) -> None:
    chat_tokenizer.chat_template = (
        "{% for message in messages %}{{ message['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}{{ ' assistant' }}{% endif %}"
    )
    with pytest.raises(ConfigError, match=r"model\.name"):
        encode_instructions(chat_tokenizer, ["Hello"], ["Hi"], [0], max_length=64)


def test_smollm2_template_splits_prompt_and_answer() -> None:
    from transformers import AutoTokenizer

    from fedhello.models.sources import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("smollm2-135m"))
    responses = ["Paris is the capital of France.", "Hi!"]
    split = encode_instructions(
        tokenizer, ["What is the capital of France?", "Hello"], responses, [0, 1], max_length=128
    )
    for row, response in enumerate(responses):
        answer = split.input_ids[row][split.labels[row] != IGNORE_INDEX]
        assert tokenizer.decode(answer) == response + "<|im_end|>"
        assert tokenizer.decode(split.prompt_batch([row])["input_ids"][0]).endswith("<|im_start|>assistant\n")


def test_rouge_l_on_hand_made_strings() -> None:
    assert rouge_l(["the cat sat"], ["the cat sat"]) == 1.0
    assert rouge_l(["red blue"], ["green yellow"]) == 0.0
    # LCS "a c": precision 2/4, recall 2/2, F = 2/3; the mean over pairs
    assert rouge_l(["a b c d", "x"], ["a c", "x"]) == pytest.approx((2 / 3 + 1) / 2)


def test_chatterbot_counts_and_categories() -> None:
    data = load_dataset("chatterbot")
    assert isinstance(data, InstructionData)
    assert (len(data.train_prompts), len(data.test_prompts)) == (939, 237)
    assert data.num_classes == 21 and data.label_names == data.category_names
    assert set(data.train_categories.tolist()) == set(data.test_categories.tolist()) == set(range(21))
    assert data.train_categories.dtype == np.int64
    texts = data.train_prompts + data.train_responses + data.test_prompts + data.test_responses
    assert all(isinstance(text, str) and text.strip() == text and text for text in texts)
    train_pairs = set(zip(data.train_prompts, data.train_responses, strict=True))
    assert not train_pairs & set(zip(data.test_prompts, data.test_responses, strict=True))


def test_chatterbot_pairs_are_consecutive_turns() -> None:
    document = {
        "categories": ["greetings", "other"],
        "conversations": [
            ["Hello", "Hi", 1984, None, "Bye"],
            "a question and its answer merged by a missing dash",
            ["  Alone  "],
        ],
    }
    pairs = chatterbot_pairs(document, "stem")
    assert pairs == [InstructionPair("Hello", "Hi", "greetings"), InstructionPair("Hi", "1984", "greetings")]
    assert chatterbot_pairs({"conversations": [["a", "b"]]}, "stem")[0].category == "stem"


def test_repeats_are_dropped_and_split_is_per_category() -> None:
    pairs = [InstructionPair(f"q{index}", "a", "big" if index < 10 else "small") for index in range(12)]
    assert without_repeats([*pairs, pairs[0]]) == pairs
    data = split_by_category("toy", pairs, test_fraction=0.2)
    assert data.category_names == ("big", "small")
    assert np.bincount(data.test_categories).tolist() == [2, 1]
    assert np.bincount(data.train_categories).tolist() == [8, 1]


def test_dolly_row_to_pair() -> None:
    row = {
        "instruction": "Summarise the text. ",
        "context": "Cats sit.",
        "response": " Cats sit. ",
        "category": "summarization",
    }
    assert dolly_pair(row) == InstructionPair(
        "Summarise the text.\n\nContext:\nCats sit.", "Cats sit.", "summarization"
    )
    assert dolly_pair({**row, "context": ""}).prompt == "Summarise the text."


def test_natural_instructions_row_to_pair_and_cap() -> None:
    row = {"definition": "Answer yes or no.", "inputs": "Is a cat a dog?", "targets": "no", "task_name": "task1_yes_no"}
    assert natural_instructions_pair(row) == InstructionPair(
        "Answer yes or no.\n\nIs a cat a dog?", "no", "task1_yes_no"
    )
    tasks = ["a", "b", "a", "a", "b"]
    kept = capped_positions(tasks, 2, seed=0)
    assert sorted(tasks[position] for position in kept) == ["a", "a", "b", "b"]
    assert kept.tolist() == sorted(kept.tolist())
    assert capped_positions(tasks, None, seed=0).tolist() == [0, 1, 2, 3, 4]
