"""Data of the CLIP vision benchmark (:mod:`evaluation.clip.benchmark`), decoded once and
cached.

A task's data is read from its :class:`TaskSource` (the benchmark says which): a Hugging
Face dataset id or a local path, a directory written by ``datasets``' ``save_to_disk`` (a
DatasetDict, or one Dataset per split in ``<path>/<split>``) or any directory
``load_dataset`` reads (parquet, imagefolder, ...).

Splits (Wang et al., ICML 2024): ``val`` = a random 10% of the dataset's train split (at
most 5000, seed 0; :func:`evaluation.splits.train_val_indices`), ``train`` = the rest of it,
``test`` = the task's test split.

Each split is decoded once the way open_clip's evaluation transform treats OpenAI CLIP
input: resize the shortest side to S (bicubic), centre-crop S x S, convert to RGB. The
uint8 result (N, 3, S, S) is written to ``<cache>/clip_data/<task>/<split>-<S>px-<key>/``
(``images.npy``, ``labels.npy``, ``meta.json``; built in a temporary directory and renamed
into place, so a half-written cache is never read) and every later call, in this run or
another, maps it from disk. The key hashes the data source, its revision, the split
recipe and S. :func:`evaluation.clip.model.normalise` does the rest (scale to [0, 1], CLIP
mean and std).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
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
from evaluation.cache import cache_root, json_digest
from evaluation.clip.tasks import EMNIST_DIGITS, DatasetSpec
from evaluation.splits import VAL_FRACTION, VAL_MAX, VAL_SEED, train_val_indices

CACHE_VERSION = 1  # bump when decoding or resizing changes


@dataclass(frozen=True)
class TaskSource:
    """Where one task's data is read from: its spec, a hub dataset id or local path
    (``source``) and the hub revision (None: the latest)."""

    spec: DatasetSpec
    source: str
    revision: str | None = None


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """uint8 (3, size, size): shortest side to ``size`` (bicubic), centre crop, RGB; the
    steps and order of open_clip's evaluation transform for OpenAI CLIP."""
    image = Resize(size, interpolation=InterpolationMode.BICUBIC)(image)
    return np.asarray(CenterCrop(size)(image).convert("RGB")).transpose(2, 0, 1).copy()


class _HubRows:
    """One split of a ``datasets.Dataset``: labels and decoded images by row index."""

    def __init__(self, dataset: Any, spec: DatasetSpec, where: str) -> None:
        from datasets import ClassLabel

        columns = dataset.column_names
        for role, col in (("image", spec.image_column), ("label", spec.label_column)):
            if col not in columns:
                raise ValueError(f"{where}: no {role} column {col!r}; its columns: {columns}")
        feature = dataset.features[spec.label_column]
        if isinstance(feature, ClassLabel):
            _check_classes(feature.names, spec, where)
        self.labels = np.asarray(dataset[spec.label_column]).astype(np.int64)
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


def _normalised(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ").strip()


def _check_classes(names: Sequence[str], spec: DatasetSpec, where: str) -> None:
    """The dataset's class labels must match the task's class names in number (and, when
    they are the same names, in order)."""
    if len(names) != len(spec.classnames):
        raise ValueError(
            f"{where}: the dataset has {len(names)} classes, task {spec.name} has "
            f"{len(spec.classnames)} class names"
        )
    ours, theirs = list(map(_normalised, spec.classnames)), list(map(_normalised, names))
    if sorted(ours) == sorted(theirs) and ours != theirs:
        first = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise ValueError(
            f"{where}: label {first} is {names[first]!r} in the dataset but "
            f"{spec.classnames[first]!r} in task {spec.name}: the label order differs"
        )


def _open_hub(source: str, spec: DatasetSpec, split: str, revision: str | None) -> Any:
    import datasets

    path = Path(source).expanduser()
    if not path.exists():
        return datasets.load_dataset(source, spec.config, split=split, revision=revision)
    if (path / "dataset_dict.json").exists():
        saved = datasets.load_from_disk(str(path))
        if split not in saved:
            raise ValueError(f"no split {split!r}; the saved dataset has {list(saved)}")
        return saved[split]
    if (path / split / "state.json").exists():
        return datasets.load_from_disk(str(path / split))
    if (path / "state.json").exists():
        raise ValueError(
            "it is a single saved Dataset: save a DatasetDict with its splits, or one "
            "Dataset per split in <path>/<split>"
        )
    return datasets.load_dataset(str(path), spec.config, split=split)


def open_rows(task: TaskSource, hub_split: str, cache_dir: Path):
    """The rows (``len``, ``labels``, ``image(i)``) of ``task``'s dataset split ``hub_split``."""
    spec, source, revision = task.spec, task.source, task.revision
    where = f"task {spec.name}: dataset {source!r} split {hub_split!r}"
    try:
        if source == EMNIST_DIGITS:  # torchvision downloads it from NIST once
            return _EMNISTRows(hub_split == spec.train_split, cache_root(cache_dir) / "torchvision")
        dataset = _open_hub(source, spec, hub_split, revision)
    except Exception as err:  # name the task, source and the way out, keep the cause
        hint = (
            ""
            if Path(source).expanduser().exists()
            else " Reading it needs network access the first time (or, for the hub, "
            "HF_DATASETS_OFFLINE=1 with the dataset in the datasets cache); a local copy works "
            f"too: benchmark.sources.{spec.name}=<path> or benchmark.data_root=<dir>."
        )
        raise RuntimeError(f"{where}: cannot load it ({type(err).__name__}: {err}).{hint}") from err
    return _HubRows(dataset, spec, where)


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


def split_images(task: TaskSource, split: str, size: int, cache_dir: Path) -> ResizedImages:
    """The images of ``split`` (train, val or test) of ``task``, decoded on access."""
    check_split(split)
    spec = task.spec
    hub_split = spec.test_split if split == "test" else spec.train_split
    rows = open_rows(task, hub_split, cache_dir)
    if split == "test":
        indices = np.arange(len(rows))
    else:
        rest, val = train_val_indices(len(rows))
        indices = val if split == "val" else rest
    labels = rows.labels[indices]
    bad = labels[(labels < 0) | (labels >= len(spec.classnames))]
    if len(bad):
        raise ValueError(
            f"task {spec.name}: label {int(bad[0])} in split {split!r} is outside "
            f"0..{len(spec.classnames) - 1} (the task's {len(spec.classnames)} classes)"
        )
    return ResizedImages(rows, indices, size)


def _source_identity(source: str) -> str:
    """A hub id as is; a local path with the names, sizes and times of its files."""
    path = Path(source).expanduser()
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(p.relative_to(path.parent)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in files]  # fmt: skip
    return f"{path.resolve()}:{json_digest(stats)[:16]}"


def cache_path(task: TaskSource, split: str, size: int, cache_dir: Path) -> Path:
    """The cache directory of one decoded split (see the module docstring)."""
    spec = task.spec
    recipe = {
        "version": CACHE_VERSION,
        "source": _source_identity(task.source),
        "revision": task.revision,
        "config": spec.config,
        "hub_split": spec.test_split if split == "test" else spec.train_split,
        "columns": [spec.image_column, spec.label_column],
        "split": split,
        "val": [VAL_FRACTION, VAL_MAX, VAL_SEED],
        "size": size,
    }
    key = json_digest(recipe)[:16]
    return cache_root(cache_dir) / "clip_data" / spec.name / f"{split}-{size}px-{key}"


def _read(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A finished cache entry, memory-mapped; None (with a warning) if it is unusable."""
    if not (path / "meta.json").exists():
        return None
    try:
        images = np.load(path / "images.npy", mmap_mode="c")
        labels = np.load(path / "labels.npy")
        if images.dtype != np.uint8 or images.shape[1:] != (3, size, size):
            raise ValueError(f"images are {images.dtype} {images.shape}")
        if labels.shape != (len(images),):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        return torch.from_numpy(images), torch.from_numpy(labels)
    except Exception as err:  # a damaged entry is rebuilt, never trusted
        warnings.warn(f"rebuilding damaged data cache {path}: {err}", stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        return None


def _build(data: ResizedImages, path: Path, workers: int, where: str) -> None:
    """Decode ``data`` into ``path`` through a temporary directory renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        n, size = len(data), data.size
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size)
        )
        labels = np.empty(n, dtype=np.int64)
        loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=workers)
        pos = 0
        for x, y in tqdm(loader, desc=f"decoding {where}", leave=False, disable=None):
            images[pos : pos + len(x)], labels[pos : pos + len(x)] = x.numpy(), y.numpy()
            pos += len(x)
        images.flush()
        del images
        np.save(tmp / "labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps({"n": n, "size": size, "what": where}))
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished the same entry first: keep theirs
            if not (path / "meta.json").exists():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)


def load_split(
    task: TaskSource, split: str, cache_dir: Path, image_size: int, decode_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, S, S), memory-mapped from the cache, and int64 labels; a split
    not cached yet is decoded by ``decode_workers`` processes."""
    path = cache_path(task, split, image_size, cache_dir)
    cached = _read(path, image_size)
    if cached is not None:
        return cached
    data = split_images(task, split, image_size, cache_dir)
    _build(data, path, decode_workers, f"{task.spec.name} {split}")
    cached = _read(path, image_size)
    if cached is None:
        raise RuntimeError(f"task {task.spec.name}: the data cache {path} could not be written")
    return cached
