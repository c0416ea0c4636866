"""The causal-LM instruction-tuning task on a tiny random-init Llama and a hand-made chat tokenizer."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import VOCAB_SIZE, build_chat_tokenizer
from fedhello.config import LoraConfig, load_config
from fedhello.data import datasets as dataset_registry
from fedhello.data.instruction_encoding import IGNORE_INDEX, encode_instructions
from fedhello.data.instructions import InstructionData
from fedhello.fisher import per_sample_gradients, per_sample_gradients_loop
from fedhello.models.federated_model import FederatedModel
from fedhello.models.lora import inject_lora
from fedhello.outputs.run_writer import read_jsonl
from fedhello.preparation import prepare_task
from fedhello.runner import run_experiment
from fedhello.tasks import EvaluationSettings
from fedhello.tasks.causal_lm import CausalLMTask

# Three categories of (prompt, answer) pairs in the tiny tokenizer's vocabulary.
PAIRS = {
    "animals": [
        ("what is a cat ?", "a cat is a red cat on the mat ."),
        ("tell me about the dog", "the dog sat on the mat ."),
    ],
    "colours": [
        ("what is red ?", "red is a good colour and not blue ."),
        ("tell me one colour", "green and blue and red ."),
    ],
    "numbers": [("how do you count ?", "one two three four five ."), ("tell me two", "two is one and one .")],
}


def tiny_llama(num_layers: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=32,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            pad_token_id=0,
            eos_token_id=3,
            tie_word_embeddings=True,
            initializer_range=0.5,
        )
    )


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory):
    """A tiny random-init Llama causal LM with the hand-made ChatML tokenizer, saved as a folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(folder)
    build_chat_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_instructions(monkeypatch):
    """A registered dataset `tiny-instructions`: 15 train and 3 test copies of each hand-made pair."""
    names = tuple(PAIRS)
    pairs = [(prompt, answer, names.index(category)) for category, items in PAIRS.items() for prompt, answer in items]

    def repeated(copies: int):
        rows = pairs * copies
        return [p for p, _, _ in rows], [a for _, a, _ in rows], np.array([c for _, _, c in rows], dtype=np.int64)

    train, test = repeated(15), repeated(3)
    data = InstructionData("tiny-instructions", *train, *test, names)
    monkeypatch.setitem(
        dataset_registry.DATASETS, "tiny-instructions", dataset_registry.DatasetEntry(lambda: data, "hand-made pairs")
    )
    return data


def lm_config(folder, *extra):
    return load_config(
        overrides=[
            f"model.name={folder}",
            "model.task=causal_lm",
            "model.max_length=32",
            "data.dataset=tiny-instructions",
            "federation.num_clients=6",
            "federation.clients_per_round=3",
            "federation.rounds=6",
            "partition.scheme=pathological",
            "partition.classes_per_client=1",
            "partition.min_per_client=2",
            "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
            "fisher.proxy_size=12",
            "fisher.batch_size=6",
            "training.lr=0.02",
            "training.batch_size=6",
            "training.max_local_steps=6",
            "groups.budgets=[2, 3, 4]",
            "evaluation.every=3",
            "evaluation.subset_size=null",
            "evaluation.final_size=null",
            "evaluation.batch_size=9",
            "evaluation.generate_samples=6",
            "evaluation.max_new_tokens=12",
            "output.progress=false",
            "output.tensorboard=false",
            "output.plots=false",
            *extra,
        ]
    )


def tiny_federated_lm(chat_tokenizer) -> FederatedModel:
    model = inject_lora(tiny_llama(2), LoraConfig(rank=4, alpha=8), init_seed=0)
    federated = FederatedModel.wrap(model, CausalLMTask(), (), chat_tokenizer)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in federated.parameters_by_name().items():
            if name in federated.layer_map.all_names:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return federated


def test_loss_counts_answer_tokens_only(chat_tokenizer, one_torch_thread):
    """Hand-made check: the task loss is the mean cross-entropy over the answer tokens, whatever the prompt says."""
    split = encode_instructions(
        chat_tokenizer, ["what is a cat ?", "hi"], ["a cat .", "hello , how are you ?"], np.array([0, 1]), max_length=32
    )
    federated = tiny_federated_lm(chat_tokenizer)
    batch = split.batch(np.array([0, 1]))
    assert (batch["attention_mask"] == 0).any()  # the shorter pair is padded
    logits = federated.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    answer_positions = [
        (row, t)
        for row in range(2)
        for t in range(1, batch["labels"].shape[1])
        if batch["labels"][row, t] != IGNORE_INDEX
    ]
    expected = torch.stack(
        [F.cross_entropy(logits[row, t - 1], batch["input_ids"][row, t]) for row, t in answer_positions]
    )
    answer_lengths = [
        len(chat_tokenizer("a cat .")["input_ids"]) + 1,
        len(chat_tokenizer("hello , how are you ?")["input_ids"]) + 1,
    ]
    assert len(answer_positions) == sum(answer_lengths)  # the answer words and <|im_end|>, nothing else
    loss = federated.task.loss(federated.model, batch)
    torch.testing.assert_close(loss, expected.mean())

    # Changing the prompt's labels cannot matter (they are ignored), changing an answer label does.
    relabelled = dict(batch, labels=batch["labels"].clone())
    relabelled["labels"][batch["labels"] == IGNORE_INDEX] = 5
    assert not torch.isclose(federated.task.loss(federated.model, relabelled), loss)
    objective = federated.task.sample_objective(logits[0], batch["labels"][0], "log_likelihood")
    rows = [t for row, t in answer_positions if row == 0]
    log_probs = torch.log_softmax(logits[0], -1)
    torch.testing.assert_close(objective, sum(log_probs[t - 1, batch["input_ids"][0, t]] for t in rows))


def test_fisher_per_sample_gradients_match_the_loop_on_a_causal_lm(chat_tokenizer, one_torch_thread):
    split = encode_instructions(
        chat_tokenizer,
        ["what is a cat ?", "hi", "tell me two"],
        ["a cat .", "hello , how are you ?", "two"],
        np.array([0, 1, 2]),
        max_length=32,
    )
    federated = tiny_federated_lm(chat_tokenizer)
    batch = split.batch(np.arange(3))
    names = list(federated.layer_map.all_names)
    batched = per_sample_gradients(federated, batch, names, "log_likelihood")
    looped = per_sample_gradients_loop(federated, batch, names, "log_likelihood")
    for name in names:
        # vmap runs eager attention, the loop the model's own (sdpa): equal up to float rounding
        torch.testing.assert_close(batched[name], looped[name], atol=1e-4 * float(looped[name].abs().max()), rtol=1e-3)
    assert any(batched[name].abs().sum() > 0 for name in names)


def test_instruction_tuning_learns_with_fisher_allocation(
    tiny_llama_folder, tiny_instructions, tmp_path, one_torch_thread
):
    config = lm_config(
        tiny_llama_folder,
        "allocation.strategy=fedhello",
        "allocation.params.fim_start=2",
        "allocation.params.fim_every=2",
    )
    task = prepare_task(config)
    assert task.federated.head_names == () and task.federated.layer_map.num_layers == 4
    before = task.federated.task.evaluate(
        task.federated,
        task.test,
        np.arange(len(task.test)),
        EvaluationSettings(9, generate_samples=6, max_new_tokens=12),
    )
    outcome = run_experiment(config, tmp_path / "run")
    after = outcome.final_eval
    assert after.loss < 0.6 * before["loss"]  # held-out answer loss falls
    assert after.perplexity == pytest.approx(np.exp(after.loss))
    assert after.rouge_l > before["rouge_l"] and after.generated_samples == 6
    assert after.accuracy is None
    assert [record["round"] for record in read_jsonl(tmp_path / "run" / "fisher.jsonl")] == [2, 4, 6]
    clients = read_jsonl(tmp_path / "run" / "clients.jsonl")
    assert {len(client["layers"]) for client in clients} == {2, 3, 4}  # every budget trained its own layer count
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "ROUGE-L" in summary and "perplexity" in summary

    # The saved adapter is a plain PEFT adapter: reloaded onto the base it reproduces the final evaluation.
    base = LlamaForCausalLM.from_pretrained(tiny_llama_folder)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "run" / "adapter").eval()
    federated = FederatedModel.wrap(reloaded, CausalLMTask(), (), task.federated.preprocessor)
    again = federated.task.evaluate(federated, task.test, np.arange(len(task.test)), EvaluationSettings(9))
    assert again["loss"] == pytest.approx(after.loss, rel=1e-5)


def test_task_must_fit_the_dataset_for_instructions(tiny_llama_folder, tiny_instructions):
    from fedhello.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.task"):
        prepare_task(lm_config(tiny_llama_folder, "model.task=sequence_classification"))


def test_memory_budgets_price_the_costliest_instruction_batch(tiny_llama_folder, tiny_instructions, one_torch_thread):
    """The price is what a real step saves on the widest padded batch, and no real batch of the run saves more.

    A padded batch saves more than an unpadded one of the same width (the attention mask, kept
    per layer), so the probe prices the longest samples with padding.
    """
    from fedhello.training import LocalTrainingSettings, train_locally

    task = prepare_task(lm_config(tiny_llama_folder, "groups.budgets=[2, 3, '1GiB']"))
    costs, federated = task.costs, task.federated
    lengths = task.train.attention_mask.sum(dim=1).numpy()
    order = np.argsort(-lengths, kind="stable")
    assert costs.head_state == 0 and costs.key["batch"]["input_ids"] == [6, int(lengths.max())]
    assert costs.key["padded"] and costs.deepest_first(2**30) == (0, 1, 2, 3)
    settings = LocalTrainingSettings(
        lr=1e-3, weight_decay=0.0, batch_size=6, local_epochs=1, max_local_steps=1, max_grad_norm=None
    )
    widest_padded = np.sort(np.append(order[:5], order[-1]))
    batches = {
        "widest padded": widest_padded,
        "widest unpadded": np.sort(order[:6]),
        "shortest": np.sort(order[-6:]),
        "random": np.random.default_rng(0).choice(len(lengths), 6, replace=False),
    }
    assert lengths[order[:6]].min() == lengths.max()  # the unpadded one really is as wide
    for layers in ([3], [1, 3], [0, 2], [0, 1, 2, 3]):
        price = costs.cost(layers).activation_bytes
        for name, positions in batches.items():
            measured = train_locally(
                federated,
                task.train,
                positions,
                federated.layer_map.names_for(layers),
                settings,
                torch.Generator().manual_seed(0),
            ).activation_bytes
            relation = {"widest padded": operator.eq, "widest unpadded": operator.lt}.get(name, operator.le)
            assert relation(measured, price), (layers, name, measured, price)
