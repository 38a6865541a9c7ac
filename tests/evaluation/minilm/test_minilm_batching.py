"""Length-sorted batches under a token budget; fine-tuning in micro-batches (the same mean
loss over the same batch as one pass, dropout off, only float rounding apart); the task
data the zoo serves to data-based merge methods."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from evaluation.minilm.encoder import by_length, embed, load_encoder, locate, tokenize
from evaluation.minilm.zoo import MiniLMZoo, finetune
from evaluation.real.benchmark import RealTextBenchmark
from evaluation.zoo import Env
from tests.evaluation.minilm.conftest import RECIPE, TASKS


def test_batches_keep_to_the_count_and_the_padded_token_budget():
    lengths = [5, 1, 9, 3, 3, 7, 2, 30, 4, 4, 6]
    ids = [[0] * n for n in lengths]
    batches = list(by_length(ids, 3, max_tokens=12))
    assert sorted(i for b in batches for i in b) == list(range(len(ids)))  # each text once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths)  # shortest first
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= 3
        assert len(b) * longest <= 12 or len(b) == 1  # a text over the budget goes alone
    assert [lengths[i] for i in batches[-1]] == [30]
    assert [len(b) for b in by_length(ids, 4)] == [4, 4, 3]  # no budget: counts only
    with pytest.raises(ValueError, match="max_tokens=0"):
        list(by_length(ids, 2, max_tokens=0))


def test_micro_batches_give_the_whole_batch_update(patched_sources, tmp_path):
    benchmark = RealTextBenchmark(name="tiny", task_names=TASKS, n_train=14, n_test=8)
    task = benchmark.tasks()[0]
    model, tokenizer = load_encoder(locate("minilm", tmp_path)[0], None, "test")
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0  # dropout draws depend on the micro-batches' shapes
    texts, labels = benchmark.load_split(task, "train", tmp_path)
    ids = tokenize(tokenizer, texts, RECIPE.max_length)
    assert len({len(x) for x in ids}) > 1  # texts of several lengths: padding differs
    head = nn.Linear(model.config.hidden_size, len(task.classnames)).requires_grad_(False)
    states = [
        finetune(
            model,
            head,
            ids,
            labels,
            tokenizer.pad_token_id,
            dataclasses.replace(RECIPE.finetune, micro_tokens=micro),
            seed=0,
            desc="test",
            progress=False,
        )
        for micro in (None, 1)  # one pass per batch; one text per pass
    ]
    moved = [k for k, v in states[0].items() if not torch.equal(v, model.state_dict()[k])]
    assert moved
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], atol=2e-6, rtol=1e-5)


def test_task_data_runs_the_encoder_with_the_weights_it_is_given(patched_sources, tmp_path):
    benchmark = RealTextBenchmark(name="tiny", task_names=TASKS, n_train=14, n_test=8)
    zoo = MiniLMZoo(name="minilm", pretrained="minilm", recipe=RECIPE)
    experts = zoo.load(benchmark, benchmark.tasks(), Env(tmp_path))
    data = experts.task_data(benchmark.tasks(), "train", 5, Env(tmp_path))
    assert set(data.module.state_dict()) == set(experts.pretrained)  # the task vectors' keys
    assert data.sizes == {t: 5 for t in TASKS}
    assert data.blocks[0] == "encoder.layer.0"
    task = TASKS[0]
    expert = dict(experts.experts[task])
    batch = data.batch(task, [0, 1, 2])
    model, _ = load_encoder(locate("minilm", tmp_path)[0], None, "test")
    model.load_state_dict(expert)
    want = embed(model, batch["input_ids"], batch["attention_mask"])
    got = data.forward(data.weights({k: expert[k] - experts.pretrained[k] for k in expert}), batch)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        data.forward(data.weights(), batch), embed(data.module._encoder, **batch)
    )
    assert data.logits(task, data.weights(), batch).shape == (
        3,
        len(benchmark.tasks()[0].classnames),
    )
    assert data.examples_used() == {TASKS[0]: 3, TASKS[1]: 0}
    with pytest.raises(ValueError, match="split"):
        experts.task_data(benchmark.tasks(), "validation", 5, Env(tmp_path))
