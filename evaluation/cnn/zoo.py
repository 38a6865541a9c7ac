"""The CNN zoo: base models trained from scratch with different seeds, built on first use.

``CnnZoo`` (``conf/model/{resnet20,vgg11,vgg16}.yaml``, schema ``model/cnn``) implements
:class:`evaluation.zoo.InitZoo`: ``zoo.load(benchmark, setting, env)`` returns the
:class:`BaseModels` of one data setting of a
:class:`evaluation.cnn.benchmark.DifferentInitBenchmark`.

Cache (:class:`evaluation.cache.Manifest`): ``<cache>/cnn_zoo/<data>-<arch>x<width>-<recipe
hash>/`` per architecture, dataset and training recipe, holding
``seed<i>-<training indices hash>.safetensors`` per base model and the manifest (recipe;
per model its checksum, seed, number of training images and test accuracy). A model is
reused when the manifest vouches for its file; a missing, corrupt or foreign file is
retrained, identically (training is deterministic by seed), and the manifest is rewritten
after each model, so an interrupted build keeps the models already trained. A model whose
training diverged (NaN or infinite weights) raises ``ValueError`` naming it and is not
cached.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evaluation.cache import Manifest, json_digest, locked
from evaluation.cnn.benchmark import DifferentInitBenchmark
from evaluation.cnn.config import CnnModelConfig
from evaluation.cnn.models import build_model, check_architecture
from evaluation.cnn.train import train_model
from evaluation.zoo import Env
from merging.alignment import PermutationSpec

FORMAT = 1  # bump when a code change alters what a recipe trains
State = dict[str, torch.Tensor]
log = logging.getLogger(__name__)


@dataclass
class BaseModels:
    """``states[i]``: base model ``i`` (seed ``i``) of one architecture, trained on the
    training indices ``subsets[i]`` (into the train split; never the benchmark's val split);
    ``test_accuracy[i]``: its accuracy (%) when trained (BatchNorm statistics as trained)."""

    arch: str
    width: float
    num_classes: int
    states: list[State]
    subsets: list[np.ndarray]
    test_accuracy: list[float]

    def network(self, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A fresh network of the architecture in eval mode, loaded with ``state`` if given."""
        net = build_model({"arch": self.arch, "width": self.width}, self.num_classes)
        if state is not None:
            net.load_state_dict(dict(state))
        return net.eval()

    @property
    def spec(self) -> PermutationSpec:
        """The architecture's permutation symmetries."""
        return PermutationSpec(self.network().permutation_axes())

    @property
    def activation_points(self) -> dict[str, list[str]]:
        """Per permutation group, the modules whose outputs carry its features."""
        return self.network().activation_points()


def _check_finite(state: Mapping[str, torch.Tensor], what: str, hint: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the first entry of ``state`` with a NaN or
    infinite value (a diverged model is neither cached nor merged)."""
    for key, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{what}: {key!r} has NaN or infinite entries ({hint})")


@dataclass
class CnnZoo(CnnModelConfig):
    """A CNN architecture (``arch``: resnet20, vgg11, vgg16) at width multiplier ``width``
    (fields: :class:`evaluation.cnn.config.CnnModelConfig`); ``name`` is the result rows'
    model."""

    regime = "different_init"

    def __post_init__(self) -> None:
        check_architecture(self.arch, self.width)

    def recipe(self, benchmark: DifferentInitBenchmark) -> dict[str, Any]:
        """Everything a cached model depends on besides its seed and training indices."""
        data = benchmark.data
        return {
            "format": FORMAT,
            "arch": {"arch": self.arch, "width": float(self.width)},
            "num_classes": data.num_classes,
            "data": data.name,
            "data_sha256": data.fingerprint(),
            "training": dataclasses.asdict(benchmark.training),
        }

    def load(self, benchmark: DifferentInitBenchmark, setting: str, env: Env) -> BaseModels:
        """Base models ``0..num_models-1`` (seed = index) of ``benchmark`` under its setting
        ``setting``, trained on first use and cached under ``env.cache_dir``."""
        if setting not in benchmark.settings:
            raise KeyError(
                f"benchmark {benchmark.name!r} has no setting {setting!r}; "
                f"it has {', '.join(benchmark.settings)}"
            )
        data, recipe = benchmark.data, self.recipe(benchmark)
        subsets = benchmark.subsets(setting)
        root = Path(
            env.cache_dir, "cnn_zoo",
            f"{data.name}-{self.arch}x{float(self.width):g}-{json_digest(recipe)[:12]}",
        )  # fmt: skip
        arch = {"arch": self.arch, "width": float(self.width)}
        states, accuracies = [], []
        with locked(root):
            manifest = Manifest(root, recipe, "cnn zoo")
            for seed, indices in enumerate(subsets):
                name = f"seed{seed}-{json_digest(indices.tolist())[:16]}.safetensors"
                if manifest.trusted(name):
                    state = load_file(str(root / name))
                    _check_finite(state, f"cached base model {root / name}",
                                  "delete the file to retrain it")  # fmt: skip
                else:
                    net = build_model(arch, data.num_classes, seed=seed)
                    desc = f"train {root.name} seed {seed}"
                    train_model(net, data, indices, benchmark.training, seed=seed,
                                device=env.device, progress=env.progress, desc=desc)  # fmt: skip
                    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
                    _check_finite(state, f"base model {root / name} (seed {seed})",
                                  "training diverged: lower benchmark.training.lr")  # fmt: skip
                    acc = benchmark.accuracy(net, env.device)
                    record = {"seed": seed, "train_samples": len(indices), "test_accuracy": acc}
                    with manifest.writing(name, **record) as tmp:
                        save_file(state, str(tmp))
                    log.info("cnn zoo: trained %s/%s, test accuracy %.1f%%", root.name, name, acc)
                states.append(state)
                accuracies.append(float(manifest.files[name]["test_accuracy"]))
        return BaseModels(self.arch, float(self.width), data.num_classes, states, subsets,
                          accuracies)  # fmt: skip
