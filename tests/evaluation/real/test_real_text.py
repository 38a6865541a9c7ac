"""Text sources and tasks: the WordNet and fortune readers, the label rules (supersense,
part of speech, topic domain without its usage label, transitivity from verb frames, fortune
file), deduplication, and the class-balanced disjoint splits; the task registry."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from evaluation.real.fortunes import parse_fortunes, read_fortunes
from evaluation.real.text_tasks import TextTaskSpec, draw, labelled, task_order, task_specs
from evaluation.real.wordnet import lexnames, read_synsets, split_gloss
from tests.evaluation.real.standins import write_wordnet


@pytest.fixture(scope="module")
def synsets(tmp_path_factory):
    return [s.__dict__ for s in read_synsets(write_wordnet(tmp_path_factory.mktemp("wn")))]


def test_wordnet_reader(synsets):
    assert len(lexnames()) == 45 and lexnames()[5] == "noun.animal" and lexnames()[44] == "adj.ppl"
    by_word = {s["words"][0]: s for s in synsets}
    stone = by_word["stone"]
    assert stone["pos"] == "n" and stone["lexname"] == "noun.artifact"
    assert stone["words"] == ("stone", "stone one") and stone["topics"] == ("law",)
    assert by_word["house"]["topics"] == ("music",)
    assert by_word["river"]["examples"] == ("the river was old",)
    frames = {s["definition"]: s["frames"] for s in synsets if s["pos"] == "v"}
    assert frames["carry something with the river"] == (8, 9)
    assert frames["move something with the stone"] == (1, 2)
    assert split_gloss('a b; c d; "e f"; "g"') == ("a b; c d", ("e f", "g"))
    assert {s["pos"] for s in synsets} == {"n", "v", "a", "s", "r"}


def test_fortune_reader(tmp_path):
    text = "first\n  line two\n%\n\n%\nb_\bo_\bl_\bd word\n%\n"
    assert parse_fortunes(text) == ["first line two", "bold word"]
    (tmp_path / "f").write_bytes("caf\xe9 \u00fc\n%\nzwei\n".encode())
    assert read_fortunes(tmp_path / "f") == ["caf\xe9 \u00fc", "zwei"]


def spec(label: str, classes: dict, source: str = "wordnet") -> TextTaskSpec:
    return TextTaskSpec("t", "test task", source, label, classes)


def test_label_rules(synsets):
    pos = labelled(spec("pos", {"noun": ["n"], "adjective": ["a", "s"], "adverb": ["r"]}), synsets)
    assert len(pos["adjective"]) == 8 and len(pos["adverb"]) == 12
    # "copy" repeats the definition of "river", both nouns: kept once
    assert pos["noun"].count("a kind of river in the tree") == 1
    lex = labelled(
        spec("lexname", {"animal": ["noun.animal"], "artifact": ["noun.artifact"]}), synsets
    )
    # ... but of two supersenses (river: animal, copy: artifact): dropped
    assert "a kind of river in the tree" not in lex["animal"] + lex["artifact"]
    assert "(law) a kind of stone in the song" in lex["artifact"]
    topic = labelled(spec("topic", {"law": ["law"], "music": ["music"]}), synsets)
    assert topic["law"] == ["a kind of stone in the song", "a kind of river in the tree"]
    assert topic["music"] == ["a kind of house in the bird"]  # "(law) " usage label removed
    trans = labelled(spec("transitivity", {"t": ["transitive"], "i": ["intransitive"]}), synsets)
    assert len(trans["t"]) == 11 and len(trans["i"]) == 12  # the mixed verb is in neither
    files = labelled(
        spec("file", {"a": ["x"], "b": ["y", "z"]}, "fortunes"),
        {"x": ["one", "two", "One"], "y": ["three"], "z": ["two", "four"]},
    )
    assert files == {"a": ["one"], "b": ["three", "four"]}  # "two" is in both classes


def test_splits_are_disjoint_balanced_and_seeded():
    texts = {c: [f"{c} text {i}" for i in range(40)] for c in ("a", "b", "c", "d")}
    task = spec("file", {c: [c] for c in texts}, "fortunes")
    splits = draw(task, texts, n_train=40, n_test=20, seed=0)
    assert [len(splits[s]["text"]) for s in ("train", "val", "test")] == [36, 4, 20]
    seen = [set(splits[s]["text"]) for s in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sorted(splits["test"]["label"]) == sorted([0, 1, 2, 3] * 5)
    assert sorted(splits["train"]["label"] + splits["val"]["label"]) == sorted([0, 1, 2, 3] * 10)
    for s in splits.values():
        assert all(t.startswith("abcd"[c]) for t, c in zip(s["text"], s["label"], strict=True))
    assert (
        draw(task, texts, 40, 20, seed=0) == splits and draw(task, texts, 40, 20, seed=1) != splits
    )


def test_a_short_class_gives_what_it_has():
    texts = {"a": [f"a{i}" for i in range(30)], "b": ["b0", "b1", "b2"]}
    task = spec("file", {"a": ["a"], "b": ["b"]}, "fortunes")
    with pytest.warns(UserWarning, match=r"too few texts .* in b \(3\)"):
        splits = draw(task, texts, n_train=20, n_test=10, seed=0)
    labels = splits["train"]["label"] + splits["val"]["label"]
    assert labels.count(1) == 2 and splits["test"]["label"].count(1) == 1
    with pytest.raises(ValueError, match="class\\(es\\) b have fewer than 2 texts"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            draw(task, {"a": texts["a"], "b": ["b0"]}, 20, 10, 0)


def test_the_task_registry():
    specs, order = task_specs(), task_order()
    assert sorted(order) == sorted(specs) and len(order) >= 6
    for s in specs.values():
        values = [v for vs in s.classes.values() for v in vs]
        assert len(s.classes) >= 2 and len(values) == len(set(values)), s.name
    real = Path(__file__).resolve().parents[3] / "evaluation" / "real" / "data"
    assert (real / "text_tasks.json").is_file()
