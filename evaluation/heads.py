"""Zero-shot classification heads from prompt templates (Radford et al., CLIP, 2021).

For class c: e_c = normalise(mean_j normalise(text_encoder(template_j(c)))); the logits of
an image are ``logit_scale.exp() * normalise(image_encoder(x)) @ E^T``. The head is frozen
during fine-tuning and shared by every merged model (Ilharco et al., 2023).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn


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
) -> ClassificationHead:
    """Head of an open_clip ``model`` for ``classnames`` with ``templates`` (``{}`` = class)."""
    if not classnames or not templates:
        raise ValueError("a zero-shot head needs at least one class name and one template")
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
    cache_dir: Path,
    model_id: str,
) -> ClassificationHead:
    """:func:`zeroshot_head`, cached on disk by (model id, class names, templates)."""
    from safetensors.torch import load_file, save_file

    from evaluation.cache import atomic_path

    digest = hashlib.sha256(
        json.dumps([model_id, list(classnames), list(templates)]).encode()
    ).hexdigest()[:24]
    path = Path(cache_dir) / "heads" / f"{digest}.safetensors"
    if path.exists():
        try:
            state = load_file(path)
            return ClassificationHead(state["weight"], state["scale"].item())
        except Exception as err:  # a corrupt cache entry is rebuilt, never trusted
            warnings.warn(f"rebuilding corrupt zero-shot head cache {path}: {err}", stacklevel=2)
    head = zeroshot_head(model, tokenizer, classnames, templates)
    with atomic_path(path) as tmp:
        save_file({"weight": head.weight.contiguous(), "scale": torch.tensor(head.scale)}, tmp)
    return head
