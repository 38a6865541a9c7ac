"""Image classification data for the CNN zoo: CIFAR through ``datasets`` and a generated sandbox.

Images are held as uint8 tensors (N, C, H, W) and normalised per batch with the training
set's channel mean and std. ``model_subsets`` gives each base model its training indices:
``same`` = every model sees all of train (models differ only by seed); ``cross`` = the
classes are split into one group per model and each model gets ``major_fraction`` of its own
group's examples and an equal share of the rest (1.0 = disjoint class subsets; 0.8 = the
80/20 split of Ainsworth et al., Git Re-Basin, ICLR 2023, Sec. 5.4). Examples are never
shared between models in ``cross``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.cnn.config import HubImagesConfig, SandboxImagesConfig, Setting
from merging.options import non_negative

KINDS = ("same", "cross")
IMAGE_KEYS = ("img", "image")
LABEL_KEYS = ("label", "fine_label", "labels")


@dataclass
class ImageData:
    """Train and test images (uint8, N x C x H x W) with int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        x = self.train_x.float().div_(255)
        self.mean = x.mean((0, 2, 3))
        self.std = x.std((0, 2, 3)).clamp_min(1e-3)

    def fingerprint(self) -> str:
        """SHA-256 of every array, so a cached model is tied to the exact data it saw."""
        digest = hashlib.sha256(self.name.encode())
        for t in (self.train_x, self.train_y, self.test_x, self.test_y):
            digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> ``(x / 255 - mean) / std`` per channel."""
        return (x.float().div(255) - self.mean[:, None, None]) / self.std[:, None, None]


@dataclass
class SandboxImages(SandboxImagesConfig):
    """Generated images (:func:`sandbox_data`) of ``benchmark.dataset`` (fields:
    :class:`evaluation.cnn.config.SandboxImagesConfig`); ``load()`` draws them."""

    def __post_init__(self) -> None:
        # image_size: each class part is max(3, image_size // 4) pixels wide and must fit
        least = {"num_classes": 2, "image_size": 3, "train_size": 1, "test_size": 1}
        for key, low in least.items():
            if getattr(self, key) < low:
                raise ValueError(
                    f"benchmark.dataset.{key} must be >= {low}, got {getattr(self, key)!r}"
                )
        non_negative("benchmark.dataset.noise", self.noise)

    def load(self) -> ImageData:
        return sandbox_data(
            self.name, self.num_classes, self.image_size, self.train_size, self.test_size,
            self.seed, noise=self.noise,
        )  # fmt: skip


@dataclass
class HubImages(HubImagesConfig):
    """An image dataset through ``datasets`` (:func:`hf_data`) of ``benchmark.dataset``
    (fields: :class:`evaluation.cnn.config.HubImagesConfig`); ``load()`` reads it."""

    def __post_init__(self) -> None:
        if not (self.hub_id or self.path):
            raise ValueError(f"benchmark.dataset ({self.name}) needs a hub_id or a local path")
        if self.path and not Path(self.path).expanduser().exists():
            raise ValueError(f"benchmark.dataset.path {self.path!r} does not exist")

    def load(self) -> ImageData:
        return hf_data(
            self.name, hub_id=self.hub_id, path=self.path, image_key=self.image_key,
            label_key=self.label_key, train_split=self.train_split, test_split=self.test_split,
        )  # fmt: skip


def sandbox_data(
    name: str,
    num_classes: int,
    image_size: int,
    train_size: int,
    test_size: int,
    seed: int,
    noise: float = 0.1,
) -> ImageData:
    """Generated images whose class is a pair of coloured parts (CPU, deterministic by seed).

    A pool of random blob shapes and colours is drawn; class c is a distinct pair
    ((shape, colour), (shape, colour)). An image is a smooth random background with the
    class's two parts and one distractor part at random positions, plus pixel noise
    (std ``noise``), so classes share parts and only their combination identifies them.
    (The CLIP sandbox tasks of ``evaluation.sandbox`` are not used here: a ResNet-20 trained
    from scratch reaches 99.6-99.8% on them, which leaves no gap between the base models and
    their ensemble; on these images narrow base models reach about 70-80%.)
    """
    rng = np.random.default_rng(seed)
    part = max(3, image_size // 4)
    n_shapes = n_colours = max(3, int(np.ceil(np.sqrt(2 * num_classes))) + 1)
    shapes = _blobs(rng, n_shapes, part)
    colours = rng.uniform(0.1, 1.0, (n_colours, 3))
    pairs = [(s, c) for s in range(n_shapes) for c in range(n_colours)]
    classes = []
    while len(classes) < num_classes:
        a, b = rng.choice(len(pairs), 2, replace=False)
        if (a, b) not in classes and (b, a) not in classes:
            classes.append((a, b))

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = rng.integers(0, num_classes, n)
        coarse = rng.uniform(0, 0.5, (n, 3, 4, 4))
        x = F.interpolate(torch.from_numpy(coarse), size=image_size, mode="bilinear").numpy()
        for i, y in enumerate(labels):
            parts = [pairs[classes[y][0]], pairs[classes[y][1]], pairs[rng.integers(len(pairs))]]
            for s, c in parts:
                r, q = rng.integers(0, image_size - part + 1, 2)
                mask = shapes[s]
                x[i, :, r : r + part, q : q + part] = np.where(
                    mask, colours[c][:, None, None], x[i, :, r : r + part, q : q + part]
                )
        x += rng.normal(0, noise, x.shape)
        images = torch.from_numpy(np.clip(x * 255, 0, 255).round().astype(np.uint8))
        return images, torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = draw(train_size)
    test_x, test_y = draw(test_size)
    return ImageData(name, train_x, train_y, test_x, test_y, num_classes)


def _blobs(rng: np.random.Generator, n: int, size: int) -> list[np.ndarray]:
    """``n`` distinct random connected-looking binary shapes (smoothed noise > median)."""
    shapes: list[np.ndarray] = []
    while len(shapes) < n:
        field = rng.normal(size=(1, 1, 3, 3))
        smooth = F.interpolate(torch.from_numpy(field), size=size, mode="bicubic")[0, 0].numpy()
        mask = smooth > np.median(smooth)
        if not any((mask == s).all() for s in shapes):
            shapes.append(mask)
    return shapes


def hf_data(
    name: str,
    *,
    hub_id: str | None = None,
    path: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
) -> ImageData:
    """An image dataset through ``datasets``: the hub id (e.g. ``uoft-cs/cifar10``), or a local
    ``path`` (a ``save_to_disk`` directory, or any directory ``load_dataset`` reads)."""
    import datasets

    if path:
        path = str(Path(path).expanduser())
        if not Path(path).exists():
            raise FileNotFoundError(
                f"benchmark.dataset.path {path!r} (dataset {name}) does not exist"
            )
        saved = any((Path(path) / f).exists() for f in ("dataset_dict.json", "state.json"))
        ds = datasets.load_from_disk(path) if saved else datasets.load_dataset(path)
    elif hub_id:
        ds = datasets.load_dataset(hub_id)
    else:
        raise ValueError(f"benchmark.dataset for {name!r} needs a hub_id or a local path")
    missing = [s for s in (train_split, test_split) if s not in ds]
    if missing:
        raise KeyError(f"dataset {name!r} has no split {missing[0]!r}; it has {sorted(ds)}")
    image_key = image_key or _pick(ds[train_split].column_names, IMAGE_KEYS, name, "image")
    label_key = label_key or _pick(ds[train_split].column_names, LABEL_KEYS, name, "label")
    num_classes = _num_classes(ds[train_split], label_key)
    train_x, train_y = _to_tensors(ds[train_split], image_key, label_key, name)
    test_x, test_y = _to_tensors(ds[test_split], image_key, label_key, name)
    return ImageData(name, train_x, train_y, test_x, test_y, num_classes)


def _pick(columns: Sequence[str], candidates: Sequence[str], name: str, what: str) -> str:
    for key in candidates:
        if key in columns:
            return key
    raise KeyError(f"dataset {name!r} has no {what} column (tried {list(candidates)}; it has "
                   f"{list(columns)}); set benchmark.dataset.{what}_key")  # fmt: skip


def _num_classes(split: Any, label_key: str) -> int:
    feature = split.features[label_key]
    return int(getattr(feature, "num_classes", None) or max(split[label_key]) + 1)


def _to_tensors(split: Any, image_key: str, label_key: str, name: str) -> tuple[torch.Tensor, ...]:
    images = [np.asarray(im.convert("RGB")) for im in split[image_key]]
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"dataset {name!r}: images differ in size {sorted(shapes)[:3]}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(split[label_key], dtype=torch.int64)


def check_setting(setting: Setting, num_models: int, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``setting`` is ``same`` (no options) or ``cross`` with
    ``1 / num_models <= major_fraction <= 1``, a seed ``>= 0`` if given, and (when
    ``num_classes`` is given) at least as many classes as models."""
    if setting.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {setting.kind!r}")
    if setting.kind == "same":
        for key in ("major_fraction", "seed"):
            if getattr(setting, key) is not None:
                raise ValueError(f"{key} is an option of kind 'cross', not of kind 'same'")
        return
    if setting.seed is not None and setting.seed < 0:
        raise ValueError(f"seed must be >= 0, got {setting.seed!r}")
    major = _major_fraction(setting)
    if not 1.0 / num_models <= major <= 1.0:
        raise ValueError(f"major_fraction must be in [1/{num_models}, 1], got {major}")
    if num_classes is not None and num_classes < num_models:
        raise ValueError(f"{num_classes} classes cannot be split over {num_models} models")


def _major_fraction(setting: Setting) -> float:
    return 0.8 if setting.major_fraction is None else float(setting.major_fraction)


def model_subsets(
    labels: torch.Tensor, num_classes: int, num_models: int, setting: Setting
) -> list[np.ndarray]:
    """Training indices of each base model under ``setting`` (see the module docstring)."""
    check_setting(setting, num_models, num_classes)
    n = len(labels)
    if setting.kind == "same":
        return [np.arange(n)] * num_models
    major = _major_fraction(setting)
    rng = np.random.default_rng(0 if setting.seed is None else setting.seed)
    group_of = np.empty(num_classes, dtype=np.int64)
    for g, classes in enumerate(np.array_split(rng.permutation(num_classes), num_models)):
        group_of[classes] = g
    owners = np.empty(n, dtype=np.int64)
    labels_np = labels.numpy()
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels_np == c))
        shares = np.full(num_models, (1 - major) / max(num_models - 1, 1))
        shares[group_of[c]] = major
        bounds = np.round(np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for m, part in enumerate(np.split(idx, bounds)):
            owners[part] = m
    return [np.flatnonzero(owners == m) for m in range(num_models)]


def batches(
    data: ImageData,
    split: str,
    indices: np.ndarray | None = None,
    batch_size: int = 256,
    *,
    generator: torch.Generator | None = None,
    augment: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches of ``split`` ("train"/"test") restricted to ``indices``;
    shuffled when a ``generator`` is given; ``augment`` = random crop (pad H/8) + flip."""
    x_all, y_all = (data.train_x, data.train_y) if split == "train" else (data.test_x, data.test_y)
    idx = torch.arange(len(y_all)) if indices is None else torch.as_tensor(indices)
    if generator is not None:
        idx = idx[torch.randperm(len(idx), generator=generator)]
    for start in range(0, len(idx), batch_size):
        sel = idx[start : start + batch_size]
        x = data.normalize(x_all[sel])
        if augment:
            x = _augment(x, generator)
        yield x, y_all[sel]


def _augment(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    x = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(n, x.shape[1], h, w)
    x = x.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def sample_indices(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct indices out of ``n`` (all of them if ``size >= n``), sorted."""
    if size <= 0:
        raise ValueError(f"a data subset needs a positive size, got {size}")
    return np.sort(np.random.default_rng(seed).permutation(n)[: min(size, n)])
