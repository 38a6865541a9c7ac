"""Data of the CLIP vision benchmark (:mod:`evaluation.clip.benchmark`), decoded once and
cached.

A task's data is read from its :class:`TaskSource` (the benchmark says which): a Hugging
Face dataset id or a local path, a directory written by ``datasets``' ``save_to_disk`` (a
DatasetDict, or one Dataset per split in ``<path>/<split>``) or any directory
``load_dataset`` reads (parquet, imagefolder, ...).

Splits (Wang et al., ICML 2024), ``val_from="train"`` (the default): ``val`` = a random 10%
of the dataset's train split (at most 5000, seed 0; :func:`evaluation.splits.train_val_indices`),
``train`` = the rest of it, ``test`` = the task's test split. ``val_from="test"`` holds val
out of the test split instead (for experts fine-tuned on the whole train split, whose train
data overlaps the paper's val): ``val`` = a random 10% of test (same draw), ``test`` = the
other 90%, ``train`` = the whole train split.

Labels. A dataset whose label feature names its classes is matched to the task's class
names (:mod:`evaluation.clip.labels`): labels in another order are remapped to the task's
order (warning); names that cannot be matched one-to-one fail, naming the task and the
names, unless the data is the task's own hub dataset (whose order ``data/classnames.json``
documents: warning) or the task is in ``trust_label_order``. Labels without names cannot be
checked: a source other than the task's hub dataset then warns.

Each split is decoded once the way open_clip's evaluation transform treats OpenAI CLIP
input: resize the shortest side to S (bicubic), centre-crop S x S, convert to RGB. The
uint8 result (N, 3, S, S) is written to ``<cache>/clip_data/<task>/<split>-<S>px-<key>/``
(``images.npy``, ``labels.npy``, checksummed by the directory's
:class:`evaluation.cache.Manifest`, so a half-written or damaged entry is rebuilt, never
read) and every later call, in this run or another, maps it from disk. The key hashes the
data source, its revision, the split recipe, the task's class names and aliases, and S.
:func:`evaluation.clip.model.normalise` does the rest (scale to [0, 1], CLIP mean and std).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import CenterCrop, InterpolationMode, Resize
from tqdm.auto import tqdm

from evaluation.benchmark import check_split
from evaluation.cache import Manifest, cache_root, json_digest, locked, source_identity
from evaluation.clip.labels import aliases, match_labels
from evaluation.clip.tasks import EMNIST_DIGITS, DatasetSpec
from evaluation.splits import VAL_FRACTION, VAL_MAX, VAL_SEED, open_split, train_val_indices

CACHE_VERSION = 2  # bump when decoding, resizing or label matching changes
VAL_FROM = ("train", "test")


@dataclass(frozen=True)
class TaskSource:
    """Where one task's data is read from and how: its spec, a hub dataset id or local path
    (``source``), the hub revision (None: the latest), the split val is held out of
    (``val_from``: train or test, module docstring) and whether the dataset's label order is
    taken unchecked (``trust_label_order``)."""

    spec: DatasetSpec
    source: str
    revision: str | None = None
    val_from: str = "train"
    trust_label_order: bool = False

    @property
    def is_default(self) -> bool:
        """Whether the data is the task's own hub dataset (the one ``classnames.json``
        documents the label order of)."""
        return self.source == self.spec.source


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """uint8 (3, size, size): shortest side to ``size`` (bicubic), centre crop, RGB; the
    steps and order of open_clip's evaluation transform for OpenAI CLIP."""
    image = Resize(size, interpolation=InterpolationMode.BICUBIC)(image)
    return np.asarray(CenterCrop(size)(image).convert("RGB")).transpose(2, 0, 1).copy()


class _HubRows:
    """One split of a ``datasets.Dataset``: labels (in the task's class order) and decoded
    images by row index."""

    def __init__(self, dataset: Any, task: TaskSource, where: str) -> None:
        from datasets import ClassLabel

        spec, columns = task.spec, dataset.column_names
        for role, col in (("image", spec.image_column), ("label", spec.label_column)):
            if col not in columns:
                raise ValueError(f"{where}: no {role} column {col!r}; its columns: {columns}")
        feature = dataset.features[spec.label_column]
        labels = np.asarray(dataset[spec.label_column]).astype(np.int64)
        if isinstance(feature, ClassLabel):
            to_task = _label_order(feature.names, task, where)
            if to_task is not None:
                valid = (labels >= 0) & (labels < len(to_task))
                labels[valid] = to_task[labels[valid]]
        elif not (task.is_default or task.trust_label_order):
            warnings.warn(
                f"{where}: label column {spec.label_column!r} has no class names, so its label "
                f"order cannot be checked; it is taken to be task {spec.name}'s "
                f"({_first(spec.classnames)}). Save the labels as a datasets.ClassLabel with "
                f"names, or set benchmark.trust_label_order=[{spec.name}] to silence this.",
                stacklevel=3,
            )
        self.labels = labels
        self.dataset, self.column = dataset.select_columns([spec.image_column]), spec.image_column

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        value = self.dataset[int(i)][self.column]
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, dict) and value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        return Image.fromarray(np.asarray(value))


class _EMNISTRows:
    """torchvision's EMNIST digits split, as the TALL masks code reads it."""

    def __init__(self, train: bool, root: Path) -> None:
        from torchvision.datasets import EMNIST

        self.dataset = EMNIST(str(root), split="digits", train=train, download=True)
        self.labels = self.dataset.targets.numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.dataset.data[int(i)].numpy())


def _first(names: Sequence[str], n: int = 6) -> str:
    return ", ".join(map(repr, names[:n])) + (", ..." if len(names) > n else "")


def _label_order(names: Sequence[str], task: TaskSource, where: str) -> np.ndarray | None:
    """``to_task[dataset label] = task label`` when the dataset's class ``names`` come in
    another order than the task's, None when they follow it (or are trusted to); raises
    ``ValueError`` naming the task and the unmatched names (module docstring)."""
    spec = task.spec
    if len(names) != len(spec.classnames):
        raise ValueError(
            f"{where}: the dataset has {len(names)} classes, task {spec.name} has "
            f"{len(spec.classnames)} class names"
        )
    match = match_labels(names, spec.classnames, spec.name)
    if match.identity:
        return None
    if match.to_task is not None:
        moved = [f"{names[i]!r} {i} -> {j}" for i, j in enumerate(match.to_task) if i != j]
        warnings.warn(
            f"{where}: the dataset orders task {spec.name}'s classes differently; its labels "
            f"are remapped to the task's order ({_first(moved, 4)})",
            stacklevel=4,
        )
        return match.to_task
    if task.trust_label_order:
        return None
    unmatched = (
        f"dataset names without a match: {_first(match.unmatched_dataset)}; task classes "
        f"without one: {_first(match.unmatched_task)}"
    )
    if task.is_default:
        warnings.warn(
            f"{where}: cannot match the dataset's class names to task {spec.name}'s "
            f"({unmatched}); its labels are taken in the order evaluation/clip/data/"
            f"classnames.json documents for this hub dataset (benchmark.trust_label_order="
            f"[{spec.name}] silences this)",
            stacklevel=4,
        )
        return None
    raise ValueError(
        f"{where}: the dataset's class names do not map one-to-one to task {spec.name}'s "
        f"classes ({unmatched}), so its label order cannot be checked. Add the dataset's "
        "names as aliases in evaluation/clip/data/class_aliases.json, relabel the dataset, "
        f"or, if its labels do follow the task's order ({_first(spec.classnames)}), set "
        f"benchmark.trust_label_order=[{spec.name}]."
    )


def open_rows(task: TaskSource, hub_split: str, cache_dir: Path):
    """The rows (``len``, ``labels``, ``image(i)``) of ``task``'s dataset split ``hub_split``."""
    spec, source, revision = task.spec, task.source, task.revision
    where = f"task {spec.name}: dataset {source!r} split {hub_split!r}"
    try:
        if source == EMNIST_DIGITS:  # torchvision downloads it from NIST once
            return _EMNISTRows(hub_split == spec.train_split, cache_root(cache_dir) / "torchvision")
        dataset = open_split(source, spec.config, hub_split, revision, local_subset=True)
    except Exception as err:  # name the task, source and the way out, keep the cause
        hint = (
            ""
            if Path(source).expanduser().exists()
            else " Reading it needs network access the first time (or, for the hub, "
            "HF_DATASETS_OFFLINE=1 with the dataset in the datasets cache); a local copy works "
            f"too: benchmark.sources.{spec.name}=<path> or benchmark.data_root=<dir>."
        )
        raise RuntimeError(f"{where}: cannot load it ({type(err).__name__}: {err}).{hint}") from err
    return _HubRows(dataset, task, where)


class ResizedImages(torch.utils.data.Dataset):
    """``(uint8 (3, S, S), label)`` of rows ``indices``, decoded on access (DataLoader-ready)."""

    def __init__(self, rows: Any, indices: np.ndarray, size: int) -> None:
        self.rows, self.indices, self.size = rows, np.asarray(indices), size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        image = torch.from_numpy(resize_center_crop(self.rows.image(j), self.size))
        return image, int(self.rows.labels[j])


def _hub_split(task: TaskSource, split: str) -> str:
    """The dataset split that ``split`` (train, val or test) is drawn from."""
    spec = task.spec
    if split == "test" or (split == "val" and task.val_from == "test"):
        return spec.test_split
    return spec.train_split


def split_images(task: TaskSource, split: str, size: int, cache_dir: Path) -> ResizedImages:
    """The images of ``split`` (train, val or test) of ``task``, decoded on access."""
    check_split(split)
    if task.val_from not in VAL_FROM:
        raise ValueError(
            f"benchmark.val_from={task.val_from!r} is unknown; valid: {', '.join(VAL_FROM)}"
        )
    spec = task.spec
    rows = open_rows(task, _hub_split(task, split), cache_dir)
    if split in ("val", task.val_from):  # val, and the rest of the split it is held out of
        rest, val = train_val_indices(len(rows))
        indices = val if split == "val" else rest
    else:
        indices = np.arange(len(rows))
    labels = rows.labels[indices]
    bad = labels[(labels < 0) | (labels >= len(spec.classnames))]
    if len(bad):
        raise ValueError(
            f"task {spec.name}: label {int(bad[0])} in split {split!r} is outside "
            f"0..{len(spec.classnames) - 1} (the task's {len(spec.classnames)} classes)"
        )
    return ResizedImages(rows, indices, size)



def cache_path(task: TaskSource, split: str, size: int, cache_dir: Path) -> Path:
    """The cache directory of one decoded split (see the module docstring)."""
    spec = task.spec
    recipe = {
        "version": CACHE_VERSION,
        "source": source_identity(task.source),
        "revision": task.revision,
        "config": spec.config,
        "hub_split": _hub_split(task, split),
        "columns": [spec.image_column, spec.label_column],
        "split": split,
        "val": [VAL_FRACTION, VAL_MAX, VAL_SEED, task.val_from],
        "classes": json_digest([spec.classnames, aliases(spec.name)]),
        "size": size,
    }
    key = json_digest(recipe)[:16]
    return cache_root(cache_dir) / "clip_data" / spec.name / f"{split}-{size}px-{key}"


def _read(manifest: Manifest, entry: str, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A complete, checksum-verified cache entry, memory-mapped; None (with a warning naming
    the file, from the manifest) if it is missing or damaged."""
    if not all(manifest.trusted(f"{entry}/{f}") for f in ("images.npy", "labels.npy")):
        return None
    path = manifest.root / entry
    try:
        images = np.load(path / "images.npy", mmap_mode="c")
        labels = np.load(path / "labels.npy")
        if images.dtype != np.uint8 or images.shape[1:] != (3, size, size):
            raise ValueError(f"images are {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        return torch.from_numpy(images), torch.from_numpy(labels)
    except Exception as err:  # recorded yet unusable: rebuilt, never trusted
        warnings.warn(f"rebuilding damaged data cache {path}: {err}", stacklevel=3)
        return None


def _build(data: ResizedImages, manifest: Manifest, entry: str, workers: int, where: str) -> None:
    """Decode ``data`` into ``<entry>/images.npy`` and ``labels.npy``, each written through a
    temporary file and recorded with its checksum."""
    n, size = len(data), data.size
    labels = np.empty(n, dtype=np.int64)
    record = {"n": n, "size": size, "what": where}
    with manifest.writing(f"{entry}/images.npy", **record) as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=workers)
        pos = 0
        for x, y in tqdm(loader, desc=f"decoding {where}", leave=False, disable=None):
            images[pos : pos + len(x)], labels[pos : pos + len(x)] = x.numpy(), y.numpy()
            pos += len(x)
        images.flush()
        del images
    with manifest.writing(f"{entry}/labels.npy", **record) as tmp, open(tmp, "wb") as f:
        np.save(f, labels)


def load_split(
    task: TaskSource, split: str, cache_dir: Path, image_size: int, decode_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, S, S), memory-mapped from the cache, and int64 labels; a split
    not cached yet is decoded by ``decode_workers`` processes (one process per task builds
    it; others wait for it)."""
    path = cache_path(task, split, image_size, cache_dir)
    root, entry = path.parent, path.name
    with locked(root):
        manifest = Manifest(root, {"version": CACHE_VERSION}, f"task {task.spec.name} data")
        cached = _read(manifest, entry, image_size)
        if cached is None:
            data = split_images(task, split, image_size, cache_dir)
            _build(data, manifest, entry, decode_workers, f"{task.spec.name} {split}")
            cached = _read(manifest, entry, image_size)
    if cached is None:
        raise RuntimeError(f"task {task.spec.name}: the data cache {path} could not be written")
    return cached
