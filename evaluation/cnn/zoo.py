"""The CNN zoo: base models trained from scratch with different seeds, built on first use.

Cache layout (under ``<cache>/cnn_zoo/<data>-<arch>x<width>-<recipe hash>/``, one directory
per architecture, dataset and training recipe): ``seed<i>-<indices hash>.safetensors`` per
base model and ``manifest.json`` holding the recipe, its hash and, per model, its seed, the
file's SHA-256 and its test accuracy. A model is reused when its entry matches the recipe
and the file's checksum; a missing, corrupt or foreign file is retrained. Every file is
written to a temporary name and renamed, and the manifest is rewritten after each model, so
an interrupted build keeps the models already trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evaluation.cnn.data import ImageData, model_subsets
from evaluation.cnn.models import build_model
from evaluation.cnn.train import TrainRecipe, accuracy, test_logits, train_model
from evaluation.cache import atomic_path, atomic_write_text

FORMAT = 1  # bump when a code change alters what a recipe trains
State = dict[str, torch.Tensor]


@dataclass
class CnnZoo:
    """``num_models`` base models of one architecture on one dataset and setting."""

    arch: dict[str, Any]
    num_classes: int
    states: list[State]
    subsets: list[np.ndarray]
    test_accuracy: list[float]

    def model(self, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A fresh network of the zoo's architecture, loaded with ``state`` if given."""
        net = build_model(self.arch, self.num_classes)
        if state is not None:
            net.load_state_dict(dict(state))
        return net.eval()


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def zoo_recipe(arch: Mapping[str, Any], data: ImageData, recipe: TrainRecipe) -> dict[str, Any]:
    """Everything a cached model depends on besides its seed and training indices."""
    return {
        "format": FORMAT,
        "arch": dict(arch),
        "num_classes": data.num_classes,
        "data": data.name,
        "data_sha256": data.fingerprint(),
        "training": dataclasses.asdict(recipe),
    }


def load_zoo(
    model_cfg: Mapping[str, Any],
    data: ImageData,
    setting: Mapping[str, Any],
    num_models: int,
    recipe: TrainRecipe,
    cache_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> CnnZoo:
    """Base models ``0..num_models-1`` (seed = index) under ``setting``, trained if not cached."""
    if num_models < 1:
        raise ValueError(f"benchmark.num_models must be at least 1, got {num_models}")
    arch = {"arch": model_cfg["arch"], "width": float(model_cfg.get("width", 1.0))}
    build_model(arch, data.num_classes)  # validates arch and width before any training
    recipe_key = zoo_recipe(arch, data, recipe)
    recipe_hash = _digest(recipe_key)
    root = Path(
        cache_dir, "cnn_zoo", f"{data.name}-{arch['arch']}x{arch['width']:g}-{recipe_hash[:12]}"
    )
    models = _read_models(root / "manifest.json", recipe_hash, log)
    manifest = {"recipe": recipe_key, "recipe_hash": recipe_hash, "models": models}
    subsets = model_subsets(data.train_y, data.num_classes, num_models, setting)
    keys = [f"seed{seed}-{_digest(indices.tolist())[:16]}" for seed, indices in enumerate(subsets)]
    states = []
    for seed, (key, indices) in enumerate(zip(keys, subsets, strict=True)):
        path = root / f"{key}.safetensors"
        state = _load_checked(path, models.get(key), log)
        if state is None:
            net = build_model(arch, data.num_classes, seed=seed)
            desc = f"train {root.name} seed {seed}"
            train_model(
                net, data, indices, recipe, seed=seed, device=device, progress=progress, desc=desc
            )
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            with atomic_path(path) as tmp:
                save_file(state, str(tmp))
            acc = accuracy(test_logits(net, data, device), data.test_y)
            models[key] = {"file": path.name, "seed": seed, "train_samples": len(indices),
                           "sha256": _file_sha256(path), "test_accuracy": acc}  # fmt: skip
            atomic_write_text(
                root / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True)
            )
            log(f"cnn zoo: trained {root.name}/{path.name}, test accuracy {acc:.1f}%")
        states.append(state)
    accuracies = [float(models[key]["test_accuracy"]) for key in keys]
    return CnnZoo(arch, data.num_classes, states, subsets, accuracies)


def _read_models(path: Path, recipe_hash: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The model entries of the manifest at ``path`` ({} if absent, unreadable or foreign)."""
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("recipe_hash") != recipe_hash:
            raise ValueError("its recipe hash differs")
        return dict(manifest["models"])
    except (ValueError, KeyError, AttributeError, TypeError) as err:
        log(f"cnn zoo: manifest {path} is unusable ({err}); its models will be retrained")
        return {}


def _load_checked(
    path: Path, entry: Mapping[str, Any] | None, log: Callable[[str], None]
) -> State | None:
    """The state in ``path`` if the manifest lists it with this checksum, else None."""
    if entry is None or not path.exists():
        return None
    if _file_sha256(path) != entry.get("sha256"):
        log(f"cnn zoo: {path} does not match its manifest checksum (corrupt); retraining it")
        return None
    return load_file(str(path))
