"""The sandbox task generators: class names, templates, deterministic balanced draws."""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import numpy as np
import pytest

from evaluation.sandbox.tasks import GENERATORS, get_generator, load_generators

TEXT = resources.files("evaluation.sandbox").joinpath("data", "tasks.json").read_text("utf-8")


def test_canonical_task_list():
    names = [t.name for t in GENERATORS]
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert names[:8] == [
        "digits", "shapes", "colours", "textures", "letters", "counting", "orientation", "arrows"
    ]  # fmt: skip


def test_class_names_and_templates_are_those_the_zoo_was_built_with():
    """The digest of every task's text when it moved from code to ``data/tasks.json``
    (2026-11-30): the default table's zoo was pretrained and fine-tuned on exactly these."""
    text = [{"name": g.name, "classnames": list(g.classnames), "templates": list(g.templates)}
            for g in GENERATORS]  # fmt: skip
    digest = hashlib.sha256(json.dumps(text, sort_keys=True).encode()).hexdigest()
    assert digest == "359bbe95f1ffcd4da1985f975dcaae8afb758eb89bc7c6960de28147bf89c072"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw.pop("noise"), r"no entry for \['noise'\]"),
        (lambda raw: raw.update(extra=raw["noise"]), r"no drawing function for \['extra'\]"),
        (lambda raw: raw["dice"].pop("templates"), "'dice' needs lists classnames and templates"),
        (lambda raw: raw["textures"].update(classnames="striped"), "'textures' needs lists"),
        (lambda raw: raw["faces"]["classnames"].append("happy"), "'faces' draws 4 classes"),
        (lambda raw: raw["letters"]["classnames"].append("ae"), "'letters' draws 26 classes"),
        (lambda raw: raw["counting"]["classnames"].pop(), "'counting' draws 6 classes"),
        (lambda raw: raw["arrows"]["classnames"].__setitem__(0, " "), "'arrows' has a class name"),
        (lambda raw: raw["shapes"]["classnames"].reverse(), "'shapes' must list"),
        (lambda raw: raw["sizes"]["templates"].append("a shape."), "template of task 'sizes'"),
        (lambda raw: raw["sizes"]["templates"].append("a {} {kind}."), "template of task 'sizes'"),
        (lambda raw: raw["sizes"]["templates"].append("a {!r}."), "template of task 'sizes'"),
    ],
)
def test_a_bad_task_file_is_named_with_the_task(edit, message):
    raw = json.loads(TEXT)
    edit(raw)
    with pytest.raises(ValueError, match=rf"^bad.json: .*{message}"):
        load_generators(json.dumps(raw), "bad.json")


def test_a_task_file_that_is_not_json_is_named():
    with pytest.raises(ValueError, match=r"^bad.json: not a JSON object of tasks \(Expecting"):
        load_generators(TEXT.replace('"digits":', '"digits"', 1), "bad.json")
    assert load_generators(TEXT.replace("a {}.", "a {} {{brace}}.", 1))  # an escaped brace


@pytest.mark.parametrize("task", GENERATORS, ids=lambda t: t.name)
def test_task_samples(task):
    k = len(task.classnames)
    assert k >= 2 and len(set(task.classnames)) == k
    assert len(task.templates) >= 2 and all("{}" in t for t in task.templates)
    n = 3 * k + 1
    images, labels = task.sample(n, seed=1)
    assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(k))
    counts = np.bincount(labels, minlength=k)
    assert counts.max() - counts.min() <= 1
    assert images.reshape(n, -1).std(1).min() > 0  # no blank images
    again, again_labels = task.sample(n, seed=1)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = task.sample(n, seed=2)
    assert not np.array_equal(images, other)


def test_sample_restricted_to_classes():
    images, labels = get_generator("letters").sample(9, seed=0, classes=[3, 7, 20])
    assert images.shape[0] == 9 and sorted(np.bincount(labels)[[3, 7, 20]]) == [3, 3, 3]


def test_get_generator_names_valid_ones():
    assert get_generator("digits") is GENERATORS[0]
    with pytest.raises(KeyError, match="'digitz'.*digits, shapes"):
        get_generator("digitz")
