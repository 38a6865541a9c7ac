"""Text classification tasks built from real sources (``data/text_tasks.json``).

A task reads one source (``wordnet``: synset definitions; ``fortunes``: fortune entries)
and a label per record: ``lexname`` (the lexicographer file, e.g. ``noun.animal``),
``pos`` (``n``, ``v``, ``a``/``s``, ``r``), ``topic`` (the topic domains of the synset's
``;c`` pointers; the definition's leading usage label in parentheses, e.g. "(law)", is
removed, as it names the class), ``transitivity`` (``transitive`` when every generic
sentence frame of a verb synset takes a direct object, ``intransitive`` when none does;
mixed synsets are left out) or ``file`` (the fortune file). A class gathers label values.
A text whose records fall in two classes is dropped, duplicates (case and spacing ignored)
are kept once, so train, val and test never share a text.

Splits (:func:`draw`): per class, a seeded shuffle; the first ``n_train / K`` go to train
and the next ``n_test / K`` to test (class-balanced; a class with too few texts gives what
it has, in the same proportion, with a warning). Val is the protocol's 10% of train
(:func:`evaluation.splits.train_val_indices`); train is the rest.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.cache import json_digest
from evaluation.splits import train_val_indices

DATA = Path(__file__).with_name("data")
LABELS = {"wordnet": ("lexname", "pos", "topic", "transitivity"), "fortunes": ("file",)}
Split = dict[str, list]  # {"text": [...], "label": [...]}
USAGE_LABEL = re.compile(r"^\([^)]*\)\s*")  # "(law) a ..." -> "a ..."


@dataclass(frozen=True)
class TextTaskSpec:
    """One task of ``data/text_tasks.json``: ``classes`` maps each class name to the label
    values that make it (in class order)."""

    name: str
    description: str
    source: str
    label: str
    classes: Mapping[str, Sequence[str]]

    @property
    def classnames(self) -> tuple[str, ...]:
        return tuple(self.classes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "label": self.label,
            "classes": {k: list(v) for k, v in self.classes.items()},
        }


def _registry() -> dict[str, Any]:
    return json.loads((DATA / "text_tasks.json").read_text())


def task_order() -> list[str]:
    """The tasks in benchmark order (``text_realN`` holds the first N)."""
    return list(_registry()["order"])


def task_specs() -> dict[str, TextTaskSpec]:
    """Every task by name; ``ValueError`` naming a task whose source or label is unknown."""
    out = {}
    for name, entry in _registry()["tasks"].items():
        spec = TextTaskSpec(name=name, **entry)
        if spec.label not in LABELS.get(spec.source, ()):
            raise ValueError(
                f"{DATA / 'text_tasks.json'}: task {name!r} reads label {spec.label!r} from "
                f"source {spec.source!r}; valid: {LABELS}"
            )
        out[name] = spec
    return out


def transitive_frames() -> frozenset[int]:
    """The generic verb frames (wndb(5WN)) that take a direct object, e.g. 8 "Somebody
    ----s something"."""
    return frozenset(_registry()["transitive_frames"])


def _wordnet_values(synset: Mapping[str, Any], label: str) -> list[str]:
    if label == "transitivity":
        frames = set(synset["frames"])
        if not frames:
            return []
        transitive = frames & transitive_frames()
        if transitive == frames:
            return ["transitive"]
        return [] if transitive else ["intransitive"]
    if label == "topic":
        return list(synset["topics"])
    return [synset[label]]


def _records(spec: TextTaskSpec, source: Any) -> Iterable[tuple[str, list[str]]]:
    """(text, label values) of every record of ``source`` (the converted JSON)."""
    if spec.source == "wordnet":
        for synset in source:
            text = synset["definition"]
            if spec.label == "topic":
                text = USAGE_LABEL.sub("", text)
            yield text, _wordnet_values(synset, spec.label)
    else:
        for path, entries in source.items():
            for entry in entries:
                yield entry, [path]


def labelled(spec: TextTaskSpec, source: Any) -> dict[str, list[str]]:
    """Class name -> its texts (record order), duplicates once, texts of two classes
    dropped (module docstring)."""
    value_class = {v: c for c, values in spec.classes.items() for v in values}
    classes: dict[str, set[str]] = {}
    first: dict[str, str] = {}
    for text, values in _records(spec, source):
        hit = {value_class[v] for v in values if v in value_class}
        if not hit or not text.strip():
            continue
        key = " ".join(text.lower().split())
        classes.setdefault(key, set()).update(hit)
        first.setdefault(key, text)
    out: dict[str, list[str]] = {c: [] for c in spec.classes}
    for key, hit in classes.items():
        if len(hit) == 1:
            out[next(iter(hit))].append(first[key])
    return out


def _shares(total: int, k: int) -> list[int]:
    return [total // k + (c < total % k) for c in range(k)]


def draw(
    spec: TextTaskSpec, by_class: Mapping[str, list[str]], n_train: int, n_test: int, seed: int
) -> dict[str, Split]:
    """Disjoint ``train`` / ``val`` / ``test`` splits of ``by_class`` (module docstring):
    ``{"text": [...], "label": [class index, ...]}`` each."""
    rng = np.random.default_rng(int(json_digest([spec.name, seed])[:12], 16))
    k = len(spec.classes)
    want_train, want_test = _shares(n_train, k), _shares(n_test, k)
    short = []
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for c, name in enumerate(spec.classes):
        texts = by_class[name]
        order = rng.permutation(len(texts))
        n_tr, n_te = want_train[c], want_test[c]
        if len(texts) < n_tr + n_te:
            short.append(f"{name} ({len(texts)})")
            n_tr = round(len(texts) * n_tr / (n_tr + n_te))
            n_te = len(texts) - n_tr
        train += [(texts[i], c) for i in order[:n_tr]]
        test += [(texts[i], c) for i in order[n_tr : n_tr + n_te]]
    if short:
        warnings.warn(
            f"text task {spec.name!r}: too few texts for {n_train} + {n_test} balanced examples "
            f"in {', '.join(short)}; these classes give what they have",
            stacklevel=2,
        )
    if any(len(by_class[name]) < 2 for name in spec.classes):
        empty = [name for name in spec.classes if len(by_class[name]) < 2]
        raise ValueError(
            f"text task {spec.name!r}: class(es) {', '.join(empty)} have fewer than 2 texts "
            "in the source; check the class values in evaluation/real/data/text_tasks.json"
        )
    train = [train[i] for i in rng.permutation(len(train))]
    test = [test[i] for i in rng.permutation(len(test))]
    rest, held_out = train_val_indices(len(train))
    if len(held_out) == 0 or not test:
        raise ValueError(
            f"text task {spec.name!r}: {len(train)} training and {len(test)} test texts leave "
            "an empty val or test split (val = 10% of train): raise benchmark.n_train / n_test"
        )

    def split(pairs: list[tuple[str, int]], indices: Iterable[int] | None = None) -> Split:
        chosen = [pairs[i] for i in indices] if indices is not None else pairs
        return {"text": [t for t, _ in chosen], "label": [c for _, c in chosen]}

    return {"train": split(train, rest), "val": split(train, held_out), "test": split(test)}
