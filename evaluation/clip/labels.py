"""Matching a dataset's label names to a task's classes, so that a copy of a dataset whose
labels come in another order (FER2013 in Kaggle's order: angry, disgust, fear, happy, sad,
surprise, neutral) is scored against the right classes.

A dataset name matches a task class when, in the first of these tiers that decides it, they
have the same key: (1) the normalised name (lower case, camelCase and punctuation split into
words, a SUN397-style ``a/`` folder prefix dropped), (2) the same set of words, (3) the same
set of word stems (one common English suffix dropped: fearful / fear, surprised / surprise).
A task's aliases (``data/class_aliases.json``: other names datasets use for its classes,
data rather than code) count as names of the class they point to. Within a tier a match is
kept only when it is one-to-one (the key names one free class and no other dataset name
claims it), so an ambiguous key never guesses.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

STEM_SUFFIXES = ("ful", "ness", "ing", "ed", "es", "s", "y", "e")


def _aliases_file() -> dict:
    text = resources.files(__package__).joinpath("data", "class_aliases.json").read_text("utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


_ALIASES = _aliases_file()


def aliases(task: str) -> dict[str, str]:
    """Task ``task``'s aliases: other name -> its class name (empty if it has none)."""
    return dict(_ALIASES.get(task, {}).get("aliases", {}))


def normalise(name: str) -> str:
    """``name`` in lower-case words: camelCase, ``_``, ``-``, ``/`` and other punctuation
    split words; a leading SUN397 folder letter (``a/abbey``, ``/a/abbey``) is dropped."""
    text = re.sub(r"^/?[a-z]/(?=\w)", "", str(name).strip())
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def stem(word: str) -> str:
    """``word`` without the first of :data:`STEM_SUFFIXES` it ends with (keeping at least
    three letters): fearful -> fear, surprised / surprise -> surpris."""
    for suffix in STEM_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


TIERS: tuple[Callable[[str], str], ...] = (
    normalise,
    lambda name: " ".join(sorted(normalise(name).split())),
    lambda name: " ".join(sorted(stem(w) for w in normalise(name).split())),
)


@dataclass(frozen=True)
class LabelMatch:
    """How a dataset's labels map to a task's: ``to_task[dataset label] = task label`` where
    every name matched (else None), and the names left unmatched on either side."""

    to_task: np.ndarray | None
    unmatched_dataset: tuple[str, ...]
    unmatched_task: tuple[str, ...]

    @property
    def identity(self) -> bool:
        """Whether the dataset's labels already follow the task's class order."""
        return self.to_task is not None and bool(
            np.array_equal(self.to_task, np.arange(len(self.to_task)))
        )


def match_labels(names: Sequence[str], classnames: Sequence[str], task: str) -> LabelMatch:
    """Match dataset label ``names`` (label i is ``names[i]``) to the classes of ``task``
    (``classnames``, in the task's label order) tier by tier (module docstring)."""
    synonyms = defaultdict(list)
    for alias, target in aliases(task).items():
        synonyms[target].append(alias)
    found: dict[int, int] = {}  # dataset label -> task label
    for key in TIERS:
        index = defaultdict(set)
        for j, name in enumerate(classnames):
            if j not in found.values():
                for option in (name, *synonyms.get(name, ())):
                    index[key(option)].add(j)
        claims = defaultdict(list)
        for i, name in enumerate(names):
            if i not in found and len(candidates := index.get(key(name), set())) == 1:
                claims[next(iter(candidates))].append(i)
        found.update({claimants[0]: j for j, claimants in claims.items() if len(claimants) == 1})
    matched = set(found.values())
    return LabelMatch(
        to_task=(
            np.array([found[i] for i in range(len(names))], dtype=np.int64)
            if len(found) == len(names) == len(classnames)
            else None
        ),
        unmatched_dataset=tuple(str(n) for i, n in enumerate(names) if i not in found),
        unmatched_task=tuple(n for j, n in enumerate(classnames) if j not in matched),
    )
