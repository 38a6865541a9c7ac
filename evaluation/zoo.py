"""A CLIP zoo: one pretrained model and one fine-tuned image encoder per task.

A zoo is data (architecture, checkpoint ids, task list) plus one loader per family;
every loader returns a :class:`ClipZoo`, which is all the task-vector pipeline needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

StateDict = Mapping[str, torch.Tensor]


@dataclass
class ClipZoo:
    """Pretrained CLIP plus per-task expert image encoders.

    ``model`` is the pretrained open_clip model (text tower included, for heads);
    ``pretrained`` and each ``experts[task]`` are state dicts of ``model.visual``
    (lazy mappings allowed). ``preprocess`` maps a batch of raw images, as the
    benchmark delivers them, to model input.
    """

    name: str
    model: nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    pretrained: StateDict
    experts: Mapping[str, StateDict]

    @property
    def image_encoder(self) -> nn.Module:
        return self.model.visual

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, tuple | list) else size)


ZOO_LOADERS = ("sandbox", "open_clip")


def load_zoo(
    cfg: Mapping[str, object], task_names: list[str], cache_dir, progress: bool = True
) -> ClipZoo:
    """The zoo named by ``cfg.loader`` for ``task_names`` (one loader per family)."""
    loader = cfg.get("loader")
    if loader == "sandbox":
        from evaluation.sandbox.zoo import load_sandbox_clip

        return load_sandbox_clip(task_names, cache_dir, cfg.get("recipe") or {}, progress)
    if loader == "open_clip":
        from evaluation.clip.zoo import load_clip_zoo

        return load_clip_zoo(cfg, task_names, cache_dir, progress)
    raise ValueError(
        f"model {cfg.get('name')!r}: unknown zoo loader {loader!r}; valid: {', '.join(ZOO_LOADERS)}"
    )
