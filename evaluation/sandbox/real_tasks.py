"""Real-image sandbox tasks: MNIST and Fashion-MNIST (:mod:`evaluation.real.images`) in the
sandbox's format, each in place of one generated task (``data/real_tasks.json``: the task
it replaces, class names, prompt templates): ``mnist`` for ``digits``, ``fashion_mnist``
for ``arrows``, so that sandbox8 holds both.

:func:`task_order` resolves the benchmark option ``real_images``: ``auto`` (a real task
wherever its dataset is converted in the cache, :func:`evaluation.real.sources.
is_converted`), ``true`` (both; a missing one raises
:class:`~evaluation.real.sources.SourceMissing` with its install command) or ``false``
(generated only). Resolving writes nothing to the cache (a run that fails later leaves
what ``auto`` finds as it was): a real dataset is converted when its images are first
read. The benchmark holds the first ``num_tasks`` of the resolved order; the zoo pretrains
on all of it, and its cache key names every task.

Images: 28x28 grey, padded with 2 zero pixels per side to 32x32 and repeated over 3
channels (uint8 (N, 3, 32, 32); labels int64). Parts (:data:`PARTS`) of the official
splits: ``test`` draws from the official test set; ``train`` (the benchmark's training
draw, its val 10% included) from the first five sixths of the official training set
(50,000 of 60,000); ``pretrain`` (the zoo's contrastive pretraining) from the last sixth
(10,000), so no pretraining image is a benchmark image. A draw is balanced over the classes
asked for (counts differ by at most one, like the generated tasks'), without replacement,
and determined by its seed.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from evaluation.real.images import classnames as source_classnames
from evaluation.real.images import load_images
from evaluation.real.sources import SourceMissing, check_available, is_converted
from evaluation.sandbox.tasks import GENERATORS, IMAGE_SIZE, TaskGenerator, balanced_labels

REAL_IMAGES = ("auto", "true", "false")
PARTS = ("train", "pretrain", "test")
PRETRAIN_SHARE = 6  # pretraining draws from the last 1/6 of the official training set
DATA_FILE = "evaluation/sandbox/data/real_tasks.json"


@dataclass(frozen=True)
class RealImageTask:
    """A sandbox task of real images: its name (``mnist``), the registry source it reads
    (:mod:`evaluation.real.sources`), the generated task it replaces, class names and prompt
    templates (as :class:`~evaluation.sandbox.tasks.TaskGenerator`), and the cache it
    reads the converted source from (``None``: mergelab's default cache)."""

    name: str
    source: str
    replaces: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    cache_dir: str | None = None

    def pool(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images (M, 28, 28), int64 labels (M,)) of ``part`` (:data:`PARTS`)."""
        if part not in PARTS:
            raise ValueError(f"unknown part {part!r} of {self.name}; valid: {', '.join(PARTS)}")
        images, labels = load_images(self.source, "test" if part == "test" else "train",
                                     self.cache_dir)  # fmt: skip
        if part == "test":
            return images, labels
        cut = len(labels) - len(labels) // PRETRAIN_SHARE
        keep = slice(cut, None) if part == "pretrain" else slice(0, cut)
        return images[keep], labels[keep]

    def sample(
        self,
        n: int,
        seed: int,
        classes: Sequence[int] | None = None,
        part: str = "train",
        where: str = "n",
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images, uint8 (n, 3, 32, 32), and int64 labels drawn from ``part``, balanced
        over ``classes`` (default: all), without replacement; ``ValueError`` naming ``where``
        (the option that set ``n``) if a class has too few images."""
        images, labels = self.pool(part)
        rng = np.random.default_rng(seed)
        wanted = balanced_labels(rng, n, len(self.classnames), classes)
        index = np.empty(n, dtype=np.int64)
        for k in np.unique(wanted):
            slots, have = np.flatnonzero(wanted == k), np.flatnonzero(labels == k)
            if len(slots) > len(have):
                raise ValueError(
                    f"{where}={n}: a balanced draw needs {len(slots)} images of class "
                    f"{self.classnames[k]!r} from the {part} part of {self.name}, which has "
                    f"{len(have)}"
                )
            index[slots] = rng.choice(have, len(slots), replace=False)
        return to_sandbox(images[index]), wanted


SandboxTask = TaskGenerator | RealImageTask


def to_sandbox(images: np.ndarray) -> np.ndarray:
    """Grey uint8 images (N, 28, 28) -> (N, 3, 32, 32): zero padding centres them (2 pixels
    per side), the 3 channels are equal."""
    pad = IMAGE_SIZE - images.shape[-1]
    if images.ndim != 3 or images.shape[1] != images.shape[2] or pad < 0 or pad % 2:
        raise ValueError(f"expected square grey images up to {IMAGE_SIZE}px, got {images.shape}")
    padded = np.pad(images, ((0, 0), (pad // 2, pad // 2), (pad // 2, pad // 2)))
    return np.repeat(padded[:, None], 3, axis=1)


def draw(
    task: SandboxTask,
    n: int,
    seed: int,
    part: str,
    classes: Sequence[int] | None = None,
    where: str = "n",
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` balanced images (uint8 (n, 3, 32, 32)) and int64 labels of ``task``: generated
    ones drawn afresh (the seed sets them apart), real ones from ``part``."""
    if isinstance(task, RealImageTask):
        return task.sample(n, seed, classes, part, where)
    return task.sample(n, seed, classes=classes)


@functools.cache
def _specs() -> dict[str, dict]:
    """The entries of :data:`DATA_FILE`, checked: each replaces a generated task and has
    one class name per class of its source."""
    path = resources.files("evaluation.sandbox").joinpath("data", "real_tasks.json")
    raw = {k: v for k, v in json.loads(path.read_text("utf-8")).items() if not k.startswith("_")}
    generated = {g.name for g in GENERATORS}
    for name, spec in raw.items():
        if set(spec) != {"source", "replaces", "classnames", "templates"}:
            raise ValueError(f"{DATA_FILE}: {name} needs source, replaces, classnames, templates")
        k = len(source_classnames(spec["source"]))
        if spec["replaces"] not in generated or name in generated:
            raise ValueError(f"{DATA_FILE}: {name} must replace a generated task, by another name")
        if len(spec["classnames"]) != k or not spec["templates"]:
            raise ValueError(f"{DATA_FILE}: {name} needs {k} class names and a template")
        spec["classnames"], spec["templates"] = tuple(spec["classnames"]), tuple(spec["templates"])
    return raw


def real_tasks(cache_dir: str | os.PathLike | None = None) -> list[RealImageTask]:
    """Every real-image task of :data:`DATA_FILE`, reading its source from ``cache_dir``."""
    root = None if cache_dir is None else str(cache_dir)
    return [RealImageTask(name, **spec, cache_dir=root) for name, spec in _specs().items()]


def task_order(
    real_images: str, cache_dir: str | os.PathLike | None = None, where: str = "real_images"
) -> tuple[SandboxTask, ...]:
    """The sandbox tasks in canonical order, each real task in place of the generated task
    it replaces as ``real_images`` (``auto``, ``true``, ``false``) says, its source read
    from ``cache_dir``. ``true`` raises :class:`SourceMissing` with the install command of
    every dataset that is missing (or ``SourceChanged``); it checks the installed files
    but converts nothing, nor writes anything. A bad value raises ``ValueError`` naming
    ``where``."""
    choice = str(real_images).lower()
    if choice not in REAL_IMAGES:
        raise ValueError(f"{where}={real_images!r} must be one of {', '.join(REAL_IMAGES)}")
    order: dict[str, SandboxTask] = {g.name: g for g in GENERATORS}
    if choice == "false":
        return tuple(order.values())
    missing = []
    for task in real_tasks(cache_dir):
        if choice == "true":
            try:
                check_available(task.source, cache_dir)
            except SourceMissing as err:
                missing.append(f"{task.name}: {err}")
                continue
        elif not is_converted(task.source, cache_dir):
            continue
        order[task.replaces] = task  # same position: dicts keep the first insertion's place
    if missing:
        raise SourceMissing(f"{where}=true but a real dataset is missing. " + " | ".join(missing))
    return tuple(order.values())
