"""Data of the T5 tasks: read with ``datasets`` (a hub id or a local copy), split by the
papers' rules, prompted (:mod:`evaluation.t5.prompts`), tokenised once and cached.

Sources: a hub dataset id (with the task's subset and an optional revision) or a local path:
a directory written by ``save_to_disk`` (a DatasetDict, or one Dataset per split in
``<path>/<split>``) or any directory ``load_dataset`` reads (json, csv, parquet files).

Splits (``val`` rule of each task in ``data/tasks.json``):

* ``heldout`` (TIES-Merging's tasks without a labelled test split; Yadav et al., NeurIPS
  2023, ``DatasetReader._split_val_into_val_and_test``): the examples of the task's test
  split are shuffled with ``random.Random(42).shuffle``; the first ``heldout_val`` (32) are
  val, the rest test (halves if there are no more than 32);
* a split name: val is that dataset split as a whole;
* ``train_draw`` (GLUE): val is a random 10% of train, at most 5000, seed 0
  (:func:`evaluation.splits.train_val_indices`), and train the rest; with
  ``benchmark.val_from=test`` (experts fine-tuned on the whole train split, which holds that
  val) the same draw takes val from the test split and test is the rest of it.

A tokenised split is written once, as JSON, to ``<cache>/t5_data/<task>/<split>-<key>.json``
and checksummed (:class:`evaluation.cache.Manifest`); the key hashes the source, its
revision, the task's spec, the split rule, the template, the truncation length and the
tokenizer.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.benchmark import check_split
from evaluation.cache import Manifest, json_digest, locked, source_identity
from evaluation.splits import VAL_FRACTION, VAL_MAX, VAL_SEED, open_split, train_val_indices
from evaluation.t5.prompts import Prompted, prompt
from evaluation.t5.tasks import TaskSpec

CACHE_VERSION = 1  # bump when prompting or tokenising changes


@dataclass(frozen=True)
class SplitRecipe:
    """What a split's examples depend on beyond the data: the template, the truncation
    length and the held-out rule's size and seed."""

    template: int = 0
    max_length: int = 128
    heldout_val: int = 32
    heldout_seed: int = 42
    val_from: str = "train"


@dataclass
class TokenisedSplit:
    """Token ids of one task split, example by example: ``inputs[i]`` (ending in EOS),
    ``targets[i]`` (the target text's ids), ``choices[i]`` (each answer choice's ids) and
    ``labels[i]`` (the answer's index among them; rank-classification tasks), and
    ``references[i]`` (gold answers as text; generation tasks)."""

    inputs: list[list[int]]
    targets: list[list[int]]
    choices: list[list[list[int]]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inputs)


def heldout_indices(n: int, size: int, seed: int) -> tuple[list[int], list[int]]:
    """(val, test) positions of a held-out split of ``n`` examples: TIES-Merging's shuffle
    with ``random.Random(seed)``, then the first ``size`` (``n // 2`` if ``n <= size``) are
    val, the rest test."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = size if n > size else n // 2
    return order[:k], order[k:]


def split_indices(spec: TaskSpec, split: str, n: int, recipe: SplitRecipe) -> list[int]:
    """Positions, in the dataset split :meth:`TaskSpec.hub_split` names, of ``split``."""
    if spec.val == "heldout" and split != "train":
        val, test = heldout_indices(n, recipe.heldout_val, recipe.heldout_seed)
        return val if split == "val" else test
    drawn_from = "test" if recipe.val_from == "test" else "train"
    if spec.val == "train_draw" and split in ("val", drawn_from):
        rest, val = train_val_indices(n)
        return [int(i) for i in (val if split == "val" else rest)]
    return list(range(n))


def prompted_split(
    spec: TaskSpec, split: str, source: str, revision: str | None, recipe: SplitRecipe
) -> list[Prompted]:
    """The prompted examples of ``split`` (train, val or test) of task ``spec``."""
    check_split(split)
    hub_split = spec.hub_split(split, recipe.val_from)
    where = f"task {spec.name}: dataset {source!r} split {hub_split!r}"
    try:
        rows = open_split(source, spec.subset, hub_split, revision, local_subset=False)
    except Exception as err:  # name the task, source and the way out, keep the cause
        local = Path(source).expanduser().exists()
        hint = (
            ""
            if local
            else (
                " Reading it needs network access the first time (or HF_DATASETS_OFFLINE=1 with "
                "the dataset in the datasets cache); a local copy works too: "
                f"benchmark.sources.{spec.name}=<path> or benchmark.data_root=<dir>."
            )
        )
        note = f" Note: {spec.note}." if spec.note and not local else ""
        raise RuntimeError(
            f"{where}: cannot load it ({type(err).__name__}: {err}).{hint}{note}"
        ) from err
    out = []
    for i in split_indices(spec, split, len(rows), recipe):
        try:
            out.append(prompt(spec, rows[int(i)], recipe.template))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}, example {i}: cannot prompt it ({err!r})") from err
    return out


def tokenise(
    examples: list[Prompted], tokenizer: Any, max_length: int, round_trip: bool = False
) -> TokenisedSplit:
    """Token ids of ``examples`` (truncated to ``max_length``, EOS appended as T5's tokenizer
    does). ``round_trip``: each reference is replaced by its token ids decoded again (as
    FusionBench compares generations with its decoded label ids); else kept as written."""

    def ids(texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]

    out = TokenisedSplit(
        inputs=ids([e.input for e in examples]), targets=ids([e.target for e in examples])
    )
    if examples and examples[0].choices:
        flat = ids([c for e in examples for c in e.choices])
        start = 0
        for e in examples:
            out.choices.append(flat[start : start + len(e.choices)])
            start += len(e.choices)
        out.labels = [e.label for e in examples]
    else:
        out.references = [list(e.answers) for e in examples]
        if round_trip:
            flat = [a for answers in out.references for a in answers]
            decoded = iter(tokenizer.batch_decode(ids(flat), skip_special_tokens=True))
            out.references = [[next(decoded) for _ in answers] for answers in out.references]
    return out



def tokenizer_identity(tokenizer: Any) -> str:
    """A digest of the tokenizer's vocabulary, rules and special tokens (not of its current
    truncation and padding settings, which calls change)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rules = {k: v for k, v in json.loads(backend.to_str()).items()
                 if k not in ("truncation", "padding")}  # fmt: skip
    else:
        rules = sorted(tokenizer.get_vocab().items())
    return json_digest([type(tokenizer).__name__, rules, tokenizer.all_special_tokens])[:16]


def load_tokenised(
    spec: TaskSpec,
    split: str,
    source: str,
    revision: str | None,
    recipe: SplitRecipe,
    tokenizer: Any,
    cache_dir: str | Path,
) -> TokenisedSplit:
    """``split`` of task ``spec``, prompted and tokenised, from the cache (built once)."""
    key = json_digest({
        "version": CACHE_VERSION, "task": asdict(spec), "source": source_identity(source),
        "revision": revision, "split": split, "recipe": asdict(recipe),
        "val": [VAL_FRACTION, VAL_MAX, VAL_SEED], "tokenizer": tokenizer_identity(tokenizer),
    })[:16]  # fmt: skip
    root = Path(cache_dir) / "t5_data" / spec.name
    name = f"{split}-{key}.json"
    with locked(root):
        manifest = Manifest(root, {"version": CACHE_VERSION}, "T5 data")
        if not manifest.trusted(name):
            examples = prompted_split(spec, split, source, revision, recipe)
            round_trip = spec.metric in ("exact_match", "spearman")
            data = tokenise(examples, tokenizer, recipe.max_length, round_trip)
            with manifest.writing(name, task=spec.name, split=split, source=source) as tmp:
                tmp.write_text(json.dumps(asdict(data)))
    return TokenisedSplit(**json.loads((root / name).read_text()))
