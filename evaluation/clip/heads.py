"""Zero-shot classification heads from prompt templates (Radford et al., CLIP, 2021).

For class c: e_c = normalise(mean_j normalise(text_encoder(template_j(c)))); the logits of
an image are ``logit_scale.exp() * normalise(image_encoder(x)) @ E^T``. The head is frozen
during fine-tuning and shared by every merged model (Ilharco et al., 2023).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evaluation.cache import Manifest, json_digest, locked

HEADS_VERSION = 1  # bump when zeroshot_head changes


class ClassificationHead(nn.Module):
    """``logits = scale * normalise(features) @ weight^T`` with a frozen class matrix."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.scale = float(scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features / features.norm(dim=-1, keepdim=True)
        return self.scale * features @ self.weight.T


@torch.no_grad()
def zeroshot_head(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    task: str = "?",
) -> ClassificationHead:
    """Head of an open_clip ``model`` for ``classnames`` with ``templates`` (``{}`` = class)
    of task ``task`` (named in errors)."""
    if not classnames or not templates:
        raise ValueError(
            f"task {task}: a zero-shot head needs at least one class name and one template"
        )
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"task {task}: prompt template {bad[0]!r} must hold '{{}}' exactly once")
    device = next(model.parameters()).device
    rows = []
    for name in classnames:
        tokens = tokenizer([t.format(name) for t in templates]).to(device)
        emb = model.encode_text(tokens).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(0)
        rows.append(mean / mean.norm())
    return ClassificationHead(torch.stack(rows).cpu(), model.logit_scale.exp().item())


def cached_zeroshot_head(
    model: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    cache_dir: str | os.PathLike,
    model_id: str,
    task: str = "?",
) -> ClassificationHead:
    """:func:`zeroshot_head`, cached in ``<cache_dir>/heads/`` by (``model_id``, class names,
    templates); ``model_id`` must identify the model's weights. Entries are checksummed
    (:class:`evaluation.cache.Manifest`): a damaged one (overwritten bytes, a short file)
    fails its SHA-256 and is rebuilt with a warning naming the file."""
    root = Path(cache_dir) / "heads"
    key = [HEADS_VERSION, model_id, list(classnames), list(templates)]
    name = json_digest(key)[:24] + ".safetensors"
    with locked(root):
        manifest = Manifest(root, {"version": HEADS_VERSION}, "zero-shot head")
        if manifest.trusted(name):
            state = load_file(root / name)
            return ClassificationHead(state["weight"], state["scale"].item())
        head = zeroshot_head(model, tokenizer, classnames, templates, task)
        weights = {"weight": head.weight.contiguous(), "scale": torch.tensor(head.scale)}
        with manifest.writing(name, model=model_id, task=task, classes=len(classnames)) as tmp:
            save_file(weights, str(tmp))
    return head
