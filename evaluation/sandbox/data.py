"""Train / val / test splits of the sandbox tasks, drawn once and cached on disk.

Each task has a full training set of ``n_train`` images and a test set of ``n_test``, drawn
(generated, or taken from a real dataset's official train and test sets,
:mod:`evaluation.sandbox.real_tasks`) with seeds derived from (task name, split) by
SHA-256; val is the TALL masks protocol's random 10% of train (at most 5000, seed 0;
:func:`evaluation.splits.train_val_indices`) and "train" is the rest. The sizes are the
benchmark's (:mod:`evaluation.sandbox.benchmark`).
Cached under ``<cache>/sandbox_data/v<DATA_VERSION>-<size>px/<task>-<split>-<n>.safetensors``
(real tasks have names of their own: ``mnist``, not ``digits``) with a checksum manifest
(:class:`evaluation.cache.Manifest`): a damaged file is regenerated with a warning.
"""

from __future__ import annotations

import hashlib
import os

import torch
from safetensors.torch import load_file, save_file

from evaluation.benchmark import check_split
from evaluation.cache import Manifest, cache_root, locked
from evaluation.sandbox.real_tasks import SandboxTask, draw
from evaluation.sandbox.tasks import IMAGE_SIZE
from evaluation.splits import train_val_indices

DATA_VERSION = 4  # bump when a task's drawing (or a real task's parts) changes
MIN_SIZE = 10  # images per split source, so that val (10% of train) is not empty


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` by SHA-256 (unlike ``hash()``, the same in every run)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _source(task: SandboxTask, source: str, n: int, cache_dir: str | os.PathLike | None):
    """The ``n`` images and labels of split source ``source`` (train or test), cached."""
    root = cache_root(cache_dir) / "sandbox_data" / f"v{DATA_VERSION}-{IMAGE_SIZE}px"
    name = f"{task.name}-{source}-{n}.safetensors"
    with locked(root):
        manifest = Manifest(root, {"version": DATA_VERSION, "size": IMAGE_SIZE}, "sandbox data")
        if manifest.trusted(name):
            return load_file(root / name)
        seed = stable_seed("sandbox", task.name, source)
        images, labels = draw(task, n, seed, source, where=f"benchmark.n_{source}")
        tensors = {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}
        with manifest.writing(name) as tmp:
            save_file(tensors, str(tmp))
    return tensors


def load_split(
    task: SandboxTask,
    split: str,
    cache_dir: str | os.PathLike | None,
    *,
    n_train: int,
    n_test: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images, uint8 (N, 3, H, W), and int64 labels of ``split`` of sandbox task ``task``
    (generated or real); ``n_train`` / ``n_test`` are the sizes of the full train and test
    sets."""
    check_split(split)
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(n, int) or n < MIN_SIZE:
            raise ValueError(f"sandbox data size {name}={n!r} must be an integer >= {MIN_SIZE}")
    source, n = ("test", n_test) if split == "test" else ("train", n_train)
    tensors = _source(task, source, n, cache_dir)
    images, labels = tensors["images"], tensors["labels"]
    if split != "test":
        rest, val = train_val_indices(n)
        idx = torch.from_numpy(val if split == "val" else rest)
        images, labels = images[idx], labels[idx]
    return images, labels
