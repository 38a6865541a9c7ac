"""The T5 evaluator against direct computations: rank classification equals scoring every
answer choice with its own forward pass, greedy generation equals a step-by-step argmax
decode, and the generation metrics give known values."""

from __future__ import annotations

import pytest
import torch

from evaluation.t5.benchmark import TextBenchmark
from evaluation.t5.checkpoints import tied_groups
from evaluation.t5.evaluator import T5Evaluator
from evaluation.t5.metrics import exact_match, normalise_answer, spearman, squad
from evaluation.t5.tasks import task_spec
from tests.evaluation.t5.conftest import tokenizer


@pytest.fixture(scope="module")
def setup(standins, tmp_path_factory):
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(standins["t5"]["path"]).eval()
    benchmark = TextBenchmark(name="b", task_names=["qasc", "ropes", "cola"], heldout_val=8,
                              data_root=str(standins["root"] / "data"))  # fmt: skip
    tok, cache = tokenizer(), tmp_path_factory.mktemp("cache")
    splits = {(t.name, s): benchmark.load_split(t, s, cache, tok)
              for t in benchmark.tasks() for s in ("val", "test")}  # fmt: skip
    specs = {t.name: task_spec(t.name) for t in benchmark.tasks()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pretrained = {k: state[k] for k in state if k not in tied_groups(model)[0][1:]}
    evaluator = T5Evaluator(model, tok, pretrained, tied_groups(model), splits, specs,
                            batch_size=5)  # fmt: skip
    return evaluator, splits


@torch.no_grad()
def choice_logp(model, inputs, choice) -> float:
    """log p(choice | inputs), summed over the choice's tokens, from one forward pass."""
    out = model(input_ids=torch.tensor([inputs]), labels=torch.tensor([choice]))
    logp = out.logits.log_softmax(-1)[0, torch.arange(len(choice)), choice]
    return float(logp.sum())


def test_rank_classification_scores_each_choice(setup):
    evaluator, splits = setup
    data = splits["qasc", "test"]
    predicted = evaluator.rank_classify(data)
    for i in range(0, len(data), 4):
        scores = [choice_logp(evaluator.model, data.inputs[i], c) for c in data.choices[i]]
        assert predicted[i] == max(range(len(scores)), key=scores.__getitem__), i
    hits = sum(p == y for p, y in zip(predicted, data.labels, strict=True))
    assert evaluator.accuracy("qasc", "test") == pytest.approx(100 * hits / len(data))


@torch.no_grad()
def test_generation_is_greedy(setup):
    evaluator, splits = setup
    data = splits["ropes", "val"]
    model, tok = evaluator.model, evaluator.tokenizer
    generated = evaluator.generate(data, max_new_tokens=5)
    for i in range(len(data)):
        tokens = [model.config.decoder_start_token_id]
        for _ in range(5):
            logits = model(input_ids=torch.tensor([data.inputs[i]]),
                           decoder_input_ids=torch.tensor([tokens])).logits  # fmt: skip
            tokens.append(int(logits[0, -1].argmax()))
            if tokens[-1] == model.config.eos_token_id:
                break
        assert generated[i] == tok.decode(tokens, skip_special_tokens=True)
    score = evaluator.accuracy("ropes", "val")
    assert 0 <= score <= 100
    assert 0 <= evaluator.accuracy("cola", "test") <= 100


def test_load_writes_the_tied_group_and_restores(setup):
    evaluator, _ = setup
    model = evaluator.model
    before = evaluator.accuracy("qasc", "val")
    tau = {k: torch.randn_like(v) for k, v in evaluator.pretrained.items()}
    evaluator.load(tau, 0.5)
    want = evaluator.pretrained["shared.weight"] + 0.5 * tau["shared.weight"]
    assert torch.allclose(model.lm_head.weight, want)
    assert model.lm_head.weight.data_ptr() == model.encoder.embed_tokens.weight.data_ptr()
    evaluator.load(None)
    assert evaluator.accuracy("qasc", "val") == before


def test_metrics():
    assert normalise_answer("The  Cat, sat!") == "cat sat"
    assert squad(["the cat"], [["cat", "dog"]]) == 100.0
    assert squad(["big cat"], [["cat"]]) == pytest.approx(100 * (0 + 2 / 3) / 2)  # F1 2/3
    assert exact_match(["yes", "no"], [["yes"], ["yes"]]) == 50.0
    assert spearman(["1.0", "2.0", "3.5"], [["1.0"], ["2.5"], ["4.0"]]) == pytest.approx(100.0)
    assert spearman(["x", "y", "z"], [["1.0"], ["2.0"], ["3.0"]]) == 0.0  # unparsable: constant
