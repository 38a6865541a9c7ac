"""Config schemas of the sandbox family (registered by ``experiments.config.register_schemas``):
the sandbox CLIP zoo (``conf/model/sandbox_clip.yaml``: its build recipe) and the sandbox
benchmark (``conf/base/benchmark/sandbox.yaml``, composed by ``sandbox8/14/20``: tasks,
real or generated images, split sizes). The built objects subclass these dataclasses;
range checks (:meth:`SandboxRecipe.check`) run when they are built. Dataclasses and the
``sandbox_tasks`` config resolver only: every run imports this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf


@dataclass
class VisionTower:
    """open_clip ViT on the 32x32 sandbox images."""

    patch_size: int
    width: int
    layers: int
    head_width: int


@dataclass
class TextTower:
    """open_clip text transformer with open_clip's BPE tokenizer."""

    context_length: int
    width: int
    layers: int
    heads: int


@dataclass
class Schedule:
    """AdamW for ``steps`` steps of ``batch_size``; the learning rate warms up linearly over
    ``warmup`` steps, then decays by a half cosine (:mod:`evaluation.training`)."""

    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float


@dataclass
class Pretraining(Schedule):
    """CLIP loss on ``samples_per_task`` captioned images of a fraction ``class_fraction`` of
    each task's classes (the rest are never named in pretraining, as web data names only
    part of a downstream label space)."""

    samples_per_task: int = MISSING
    class_fraction: float = MISSING


@dataclass
class SandboxRecipe:
    """Everything that changes the built pretrained model and experts."""

    seed: int
    embed_dim: int
    vision: VisionTower
    text: TextTower
    pretrain: Pretraining
    finetune: Schedule

    def check(self, image_size: int, where: str = "model.recipe") -> None:
        """Raise ``ValueError`` naming the key of an out-of-range value: every number must
        be > 0 (``seed``, ``warmup`` and ``weight_decay`` may be 0), and the sizes fit."""
        for key, value in _leaves(self):
            zero_ok = key.rsplit(".", 1)[-1] in ("seed", "warmup", "weight_decay")
            if value < 0 or (value == 0 and not zero_ok):
                raise ValueError(f"{where}.{key}={value} must be {'>=' if zero_ok else '>'} 0")
        vision, text, pretrain, finetune = self.vision, self.text, self.pretrain, self.finetune
        checks = [
            (image_size % vision.patch_size == 0, f"vision.patch_size must divide {image_size}"),
            (vision.width % vision.head_width == 0, "vision.head_width must divide width"),
            (text.width % text.heads == 0, "text.heads must divide text.width"),
            (pretrain.warmup < pretrain.steps, "pretrain.warmup must be < steps"),
            (pretrain.class_fraction <= 1, "pretrain.class_fraction must be <= 1"),
            (finetune.warmup < finetune.steps, "finetune.warmup must be < steps"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{where}.{message}")


def _leaves(obj: object, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every number in a nest of dataclasses."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


@dataclass
class SandboxClipZooConfig:
    """A small open_clip CLIP pretrained on the sandbox tasks and one fine-tuned image
    encoder per task, built on first use (``evaluation.sandbox.zoo``)."""

    name: str = MISSING
    recipe: SandboxRecipe = MISSING
    _target_: str = "evaluation.sandbox.zoo.SandboxClipZoo"


@dataclass
class SandboxBenchmarkConfig:
    """The first ``num_tasks`` sandbox tasks; per task ``n_train`` images of which val is a
    random 10% (the experts train on the rest) and ``n_test`` test images
    (``evaluation.sandbox.benchmark``). ``real_images``: real MNIST and Fashion-MNIST in
    place of the generated digits and arrows -- ``auto`` where converted in ``cache_dir``
    (``None``: mergelab's default cache), ``true`` required, ``false`` never
    (``evaluation.sandbox.real_tasks``)."""

    name: str = MISSING
    num_tasks: int = MISSING
    n_train: int = MISSING
    n_test: int = MISSING
    real_images: Any = "auto"  # auto, true or false (a YAML bool or a string)
    cache_dir: str | None = None
    task_names: Any = None  # derived by the config (:func:`task_names`); checked, never set
    _target_: str = "evaluation.sandbox.benchmark.SandboxBenchmark"


def task_names(real_images: Any, cache_dir: str | None) -> list[str]:
    """The resolved sandbox task order as names (config resolver ``sandbox_tasks``): with
    ``real_images=auto`` it depends on what is installed, so the resolved config, and with it
    the key under which a run's results are stored (``experiments.run.unit_key``), names the
    tasks actually used. Raises ``SourceMissing`` for ``true`` without the data."""
    from evaluation.sandbox.real_tasks import task_order  # numpy only, at resolution time

    return [t.name for t in task_order(real_images, cache_dir, "benchmark.real_images")]


if not OmegaConf.has_resolver("sandbox_tasks"):
    OmegaConf.register_new_resolver("sandbox_tasks", task_names, use_cache=True)

SCHEMAS = {"model/sandbox_clip": SandboxClipZooConfig, "benchmark/sandbox": SandboxBenchmarkConfig}
