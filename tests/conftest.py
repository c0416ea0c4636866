"""Shared fixtures: tiny randomly initialised BERT / Llama / ViT classifiers wrapped with LoRA.

Everything is built from configs (no downloads) and is small enough for a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)
from transformers import logging as transformers_logging

from fedhello.config import LoraConfig
from fedhello.data.tokenize import EncodedSplit
from fedhello.models.federated_model import FederatedModel
from fedhello.models.lora import inject_lora
from fedhello.models.pretrained_vit import save_random_vit
from fedhello.tasks.classification import head_parameter_names
from fedhello.tasks.image_classification import ImageClassificationTask
from fedhello.tasks.sequence_classification import SequenceClassificationTask

transformers_logging.set_verbosity_error()

VOCAB_SIZE = 100
NUM_LABELS = 3
PAD_TOKEN_ID = 0


def tiny_base_model(arch: str, num_layers: int, seed: int = 0) -> torch.nn.Module:
    """A tiny randomly initialised Hugging Face classifier (no LoRA yet)."""
    torch.manual_seed(seed)
    if arch == "bert":
        config = BertConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=NUM_LABELS,
        )
        return BertForSequenceClassification(config)
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            pad_token_id=PAD_TOKEN_ID,
            num_labels=NUM_LABELS,
        )
        return LlamaForSequenceClassification(config)
    if arch == "vit":
        config = ViTConfig(
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=16,
            patch_size=8,
            num_labels=NUM_LABELS,
        )
        return ViTForImageClassification(config)
    raise ValueError(f"unknown tiny architecture {arch!r}")


def build_tiny_federated(arch: str, num_layers: int, *, train_pooler: bool = True, seed: int = 0) -> FederatedModel:
    base = tiny_base_model(arch, num_layers, seed=seed)
    peft_model = inject_lora(base, LoraConfig(rank=4, alpha=8), init_seed=0)
    task = ImageClassificationTask() if arch == "vit" else SequenceClassificationTask()
    return FederatedModel.wrap(peft_model, task, head_parameter_names(peft_model, train_pooler=train_pooler))


@torch.no_grad()
def randomize_lora(
    federated: FederatedModel,
    seed: int = 1,
    std: float = 0.3,
    layer_scales: dict[int, float] | None = None,
    head_std: float | None = 1.0,
) -> None:
    """Give every LoRA A and B tensor random non-zero values (peft starts B at zero).

    `layer_scales` multiplies the std of chosen layers (default 1 for the others).
    `head_std` re-draws the head too: with the default 0.02 init the gradients reaching
    the LoRA tensors are ~1e-5, too small for absolute tolerances to mean anything.
    """
    generator = torch.Generator().manual_seed(seed)
    parameters = federated.parameters_by_name()
    for index, names in enumerate(federated.layer_map.layers):
        scale = (layer_scales or {}).get(index, 1.0)
        for name in names:
            parameter = parameters[name]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std * scale)
    if head_std is not None:
        for name in federated.head_names:
            parameter = parameters[name]
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * head_std)


def random_split(
    num_samples: int, seq_len: int = 8, *, seed: int = 0, pad_from: dict[int, int] | None = None
) -> EncodedSplit:
    """Random token ids / labels; `pad_from[i] = p` pads sample i from position p on (right padding)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB_SIZE, (num_samples, seq_len), generator=generator)
    attention_mask = torch.ones(num_samples, seq_len, dtype=torch.long)
    for index, start in (pad_from or {}).items():
        input_ids[index, start:] = PAD_TOKEN_ID
        attention_mask[index, start:] = 0
    labels = torch.randint(0, NUM_LABELS, (num_samples,), generator=generator)
    return EncodedSplit(input_ids, attention_mask, labels)


@pytest.fixture
def one_torch_thread():
    """Run the test with one intra-op thread, then restore the previous count.

    The models are tiny: one thread is fastest, and on a busy 2-core machine a second
    OpenMP thread makes every op (vmap'ed ones especially, ~100x) wait for a descheduled peer.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_base(one_torch_thread) -> Callable[..., torch.nn.Module]:
    """Factory: tiny_base(arch, num_layers, seed=0) -> Hugging Face model without LoRA."""
    return tiny_base_model


@pytest.fixture
def tiny_federated(one_torch_thread) -> Callable[..., FederatedModel]:
    """Factory: tiny_federated(arch, num_layers, train_pooler=True, seed=0) -> FederatedModel."""
    return build_tiny_federated


@pytest.fixture
def lora_randomizer() -> Callable[..., None]:
    """Factory: lora_randomizer(federated, seed=1, std=0.3, layer_scales=None, head_std=1.0), in place."""
    return randomize_lora


@pytest.fixture
def encoded_split() -> Callable[..., EncodedSplit]:
    """Factory: encoded_split(num_samples, seq_len=8, seed=0, pad_from=None) -> EncodedSplit."""
    return random_split


@pytest.fixture
def tiny_bert4(one_torch_thread) -> FederatedModel:
    """Tiny 4-layer BERT with random non-zero LoRA factors."""
    federated = build_tiny_federated("bert", 4)
    randomize_lora(federated)
    return federated


@pytest.fixture(scope="session")
def tiny_vit_folder(tmp_path_factory):
    """A tiny random-init ViT saved as a Hugging Face folder: 4 layers, 8x8 grey images (the `digits` dataset)."""
    return save_random_vit(tmp_path_factory.mktemp("tiny-vit"))


# A ChatML chat template like SmolLM2's, without its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_SPECIAL_TOKENS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
CHAT_WORDS = [
    "system",
    "user",
    "assistant",
    "what",
    "is",
    "a",
    "the",
    "an",
    "who",
    "are",
    "you",
    "i",
    "am",
    "how",
    "do",
    "it",
    "my",
    "your",
    "to",
    "of",
    "in",
    "on",
    "and",
    "not",
    "can",
    "cat",
    "dog",
    "sat",
    "mat",
    "hello",
    "hi",
    "good",
    "fine",
    "thanks",
    "yes",
    "no",
    "why",
    "because",
    "answer",
    "question",
    "tell",
    "me",
    "about",
    "red",
    "blue",
    "green",
    "one",
    "two",
    "three",
    "four",
    "five",
    ".",
    ",",
    "?",
    "!",
]


def build_chat_tokenizer():
    """A word-level tokenizer with a ChatML chat template, built without downloads.

    Lower-cases, splits on whitespace and punctuation, and maps unknown words to <unk>. Its
    vocabulary (ids 0-3 special, <pad> = 0) fits the tiny Llama's VOCAB_SIZE; eos is <|im_end|>.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate((*CHAT_SPECIAL_TOKENS, *CHAT_WORDS))}
    assert len(vocabulary) <= VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in CHAT_SPECIAL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture
def chat_tokenizer():
    """A word-level ChatML tokenizer (see build_chat_tokenizer); pad id 0, eos <|im_end|>."""
    return build_chat_tokenizer()
