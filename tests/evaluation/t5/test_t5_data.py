"""T5 task data: the prompt templates kept as data, the papers' split rules, tokenisation and
the token cache, and errors that name the task."""

from __future__ import annotations

import random

import pytest

from evaluation.splits import train_val_indices
from evaluation.t5 import data as t5_data
from evaluation.t5.benchmark import TextBenchmark
from evaluation.t5.data import SplitRecipe, heldout_indices, tokenise
from evaluation.t5.prompts import prompt, promptsource_templates, render_promptsource
from evaluation.t5.tasks import task_names, task_spec
from tests.evaluation.t5.conftest import tokenizer
from tests.evaluation.t5.examples import example

NLP7 = ["paws", "qasc", "quartz", "story_cloze", "wiki_qa", "winogrande", "wsc"]
QA8 = ["cosmos_qa", "social_iqa", "paws", "quail", "wiki_qa", "quartz", "qasc", "ropes"]


def test_every_task_prompts_with_every_template():
    rng = random.Random(0)
    for name in task_names():
        spec = task_spec(name)
        count = len(promptsource_templates(name)) if spec.prompt == "promptsource" else 1
        for index in range(count):
            p = prompt(spec, example(name, rng), index)
            assert p.input and (p.choices or p.answers), (name, index)
            if p.choices:  # the target is the labelled choice (as the authors' readers)
                assert p.target == p.choices[p.label], (name, index)


def test_known_prompts():
    paws = {"sentence1": "A cat.", "sentence2": "A dog.", "label": 1, "id": 0}
    p = prompt(task_spec("paws"), paws)
    assert p.input == (
        "Determine if the following two sentences paraphrase each other or not.\n"
        "Sent 1: A cat.\nSent 2: A dog."
    )
    assert (p.target, p.choices, p.label) == ("Yes", ("No", "Yes"), 1)
    social = prompt(task_spec("social_iqa"), example("social_iqa", random.Random(1)))
    assert social.choices[social.label] == social.target  # labels "1".."3", offset -1
    cola = prompt(task_spec("cola"), {"sentence": "It rains.", "label": 0, "idx": 3})
    assert cola.input.startswith('Indicate if the following sentence is grammatically correct or '
                                 'not: "It rains.". Answere')  # fmt: skip
    assert cola.answers == ("unacceptable",)
    stsb = prompt(task_spec("stsb"), {"sentence1": "a", "sentence2": "b", "label": 3.2, "idx": 0})
    assert stsb.answers == ("3.2",)
    # promptsource protects '|||' inside fields while splitting input from target
    template = {"jinja": "{{ a }} ||| {{ b }}", "answer_choices": None}
    assert render_promptsource(template, {"a": "x ||| y", "b": "z"}) == ("x ||| y", "z", None)


def test_the_benchmarks_hold_the_papers_mixtures():
    nlp7 = TextBenchmark(name="nlp7", task_names=NLP7)
    qa8 = TextBenchmark(name="qa8", task_names=QA8)
    assert len({t.name for t in nlp7.tasks()} | {t.name for t in qa8.tasks()}) == 11
    assert task_spec("ropes").metric == "squad" and task_spec("stsb").metric == "spearman"
    assert {task_spec(t).metric for t in NLP7} == {"accuracy"}


def test_heldout_split_is_the_authors_shuffle():
    data = [f"ex{i}" for i in range(100)]
    random.seed(42)  # TIES-Merging: random.seed(seed); random.shuffle(orig_data)
    random.shuffle(data)
    val, test = heldout_indices(100, 32, 42)
    assert [f"ex{i}" for i in val] == data[:32] and [f"ex{i}" for i in test] == data[32:]
    assert [len(s) for s in heldout_indices(20, 32, 42)] == [10, 10]  # small: halves


def test_split_rules():
    qasc, paws, cola = task_spec("qasc"), task_spec("paws"), task_spec("cola")
    assert (qasc.hub_split("val"), qasc.hub_split("test")) == ("validation", "validation")
    assert (paws.hub_split("val"), paws.hub_split("test")) == ("validation", "test")
    assert (cola.hub_split("val"), cola.hub_split("test")) == ("train", "validation")
    recipe = SplitRecipe(heldout_val=8)
    val = t5_data.split_indices(qasc, "val", 40, recipe)
    test = t5_data.split_indices(qasc, "test", 40, recipe)
    assert len(val) == 8 and sorted(val + test) == list(range(40))
    rest, draw = train_val_indices(200)
    assert t5_data.split_indices(cola, "val", 200, recipe) == draw.tolist()
    assert t5_data.split_indices(cola, "train", 200, recipe) == rest.tolist()
    assert t5_data.split_indices(paws, "val", 30, recipe) == list(range(30))
    # val_from=test (experts trained on all of train): val and test share the test split
    test_draw = SplitRecipe(val_from="test")
    assert cola.hub_split("val", "test") == "validation"
    assert t5_data.split_indices(cola, "val", 200, test_draw) == draw.tolist()
    assert t5_data.split_indices(cola, "test", 200, test_draw) == rest.tolist()
    assert t5_data.split_indices(cola, "train", 200, test_draw) == list(range(200))
    glue = TextBenchmark(name="glue8", task_names=["cola"], val_from="test")
    assert glue.name == "glue8-val_from_test"


def test_tokenised_splits_are_cached_once(standins, tmp_path, monkeypatch):
    data_root = standins["root"] / "data"
    benchmark = TextBenchmark(name="b", task_names=["qasc", "cola", "ropes"],
                              data_root=str(data_root), heldout_val=8)  # fmt: skip
    tok = tokenizer()
    qasc, cola, ropes = benchmark.tasks()
    val = benchmark.load_split(qasc, "val", tmp_path, tok)
    assert len(val) == 8 and all(len(c) == 8 for c in val.choices)
    assert all(ids[-1] == tok.eos_token_id for ids in val.inputs)
    assert len(benchmark.load_split(qasc, "test", tmp_path, tok)) == 32
    assert len(benchmark.load_split(cola, "val", tmp_path, tok)) == 2  # 10% of 24
    refs = benchmark.load_split(ropes, "test", tmp_path, tok).references
    assert all(len(r) == 1 and r[0] for r in refs)

    def no_reading(*args, **kwargs):
        raise AssertionError("a split was prompted again instead of read from the cache")

    monkeypatch.setattr(t5_data, "prompted_split", no_reading)
    assert benchmark.load_split(qasc, "val", tmp_path, tok) == val
    with pytest.raises(AssertionError, match="prompted again"):  # another template: rebuilt
        TextBenchmark(name="b", task_names=["qasc"], data_root=str(data_root), heldout_val=8,
                      template=1).load_split(qasc, "val", tmp_path, tok)  # fmt: skip


def test_round_trip_and_truncation():
    tok = tokenizer()
    examples = [prompt(task_spec("cola"), {"sentence": "The CAT sat .", "label": 1, "idx": 0})]
    out = tokenise(examples, tok, max_length=4, round_trip=True)
    assert len(out.inputs[0]) == 4 and out.inputs[0][-1] == tok.eos_token_id
    assert out.references == [["acceptable"]]


def test_bad_data_names_the_task(tmp_path):
    benchmark = TextBenchmark(name="b", task_names=["qasc"], sources={"qasc": str(tmp_path)})
    with pytest.raises(RuntimeError, match="task qasc: dataset .* cannot load it"):
        benchmark.load_split(benchmark.tasks()[0], "val", tmp_path / "c", tokenizer())
    with pytest.raises(ValueError, match="benchmark.template=20: task paws has templates 0..10"):
        TextBenchmark(name="b", task_names=["paws"], template=20)
    with pytest.raises(ValueError, match="task_names must list distinct tasks"):
        TextBenchmark(name="b", task_names=["paws", "paws"])
    story = TextBenchmark(name="b", task_names=["story_cloze"], sources={})
    assert story.task_source("story_cloze") == ("LSDSem/story_cloze", None)
