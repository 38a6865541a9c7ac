"""Train / val / test splits of the sandbox tasks, generated once and cached on disk.

Each task has a full training set and a test set drawn with seeds derived from
(task name, split) by SHA-256; val is the TALL masks protocol's random 10% of train (at
most 5000, seed 0; :func:`evaluation.splits.train_val_indices`) and "train" is the rest.
Cached files carry a checksum of their contents and are regenerated when it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evaluation.cache import atomic_path, cache_root
from evaluation.sandbox.tasks import IMAGE_SIZE, get_task
from evaluation.splits import train_val_indices

DATA_VERSION = 4  # bump when a task's drawing changes
SPLITS = ("train", "val", "test")
N_TRAIN, N_TEST = 2000, 1000  # full train (val is carved out of it) and test, per task


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` by SHA-256 (unlike ``hash()``, the same in every run)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``, in key order."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _generate(task_name: str, source: str, n: int) -> dict[str, torch.Tensor]:
    images, labels = get_task(task_name).sample(n, stable_seed("sandbox", task_name, source))
    return {"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)}


def _read(path: Path, recipe: str) -> dict[str, torch.Tensor] | None:
    """The tensors of a cached split, or None (with a warning) if it fails its checks."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("recipe") != recipe:
            problem = "was made by another data recipe"
        elif meta.get("sha256") != tensor_digest(tensors):
            problem = "fails its checksum"
        else:
            return tensors
    except Exception as exc:  # any unreadable file is regenerated, never trusted
        problem = f"is unreadable ({type(exc).__name__}: {exc})"
    warnings.warn(f"sandbox data cache file {path} {problem}; regenerating it", stacklevel=3)
    return None


def _split_source(task_name: str, source: str, n: int, cache_dir: Path) -> dict[str, torch.Tensor]:
    recipe = json.dumps(
        {"version": DATA_VERSION, "task": task_name, "split": source, "n": n, "size": IMAGE_SIZE},
        sort_keys=True,
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    path = cache_dir / "sandbox_data" / f"{task_name}-{source}-{n}-{key}.safetensors"
    if path.exists() and (tensors := _read(path, recipe)) is not None:
        return tensors
    tensors = _generate(task_name, source, n)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"recipe": recipe, "sha256": tensor_digest(tensors)})
    return tensors


def load_split(
    task_name: str,
    split: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images, uint8 (N, 3, H, W), and int64 labels of ``split`` of sandbox task
    ``task_name``; ``n_train`` / ``n_test`` are the sizes of the full train and test sets."""
    get_task(task_name)
    if split not in SPLITS:
        raise ValueError(
            f"unknown split {split!r} for sandbox task {task_name!r}; valid: {', '.join(SPLITS)}"
        )
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(n, int) or n < 10:
            raise ValueError(f"sandbox data size {name}={n!r} must be an integer >= 10")
    source, n = ("test", n_test) if split == "test" else ("train", n_train)
    tensors = _split_source(task_name, source, n, cache_root(cache_dir))
    images, labels = tensors["images"], tensors["labels"]
    if split != "test":
        rest, val = train_val_indices(n)
        idx = torch.from_numpy(val if split == "val" else rest)
        images, labels = images[idx], labels[idx]
    return images, labels
