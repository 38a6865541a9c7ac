"""Top-1 accuracy of ``theta_0 + alpha * tau`` on a task's split, for CLIP image encoders
scored through frozen zero-shot heads (Ilharco et al., ICLR 2023; Wang et al., ICML 2024).

Changing alpha never re-merges: the merged task vector ``tau`` is computed once and
each alpha only rewrites the encoder's weights in place. Split tensors are prepared
once (preprocessed on the first use) and reused across the whole grid.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from evaluation.clip.heads import ClassificationHead
from evaluation.zoo import write_task_vector

Tensor = torch.Tensor


class ImageEvaluator:
    """Scores weights of one image encoder with frozen per-task heads on cached splits
    (the :class:`evaluation.zoo.Evaluator` protocol)."""

    def __init__(
        self,
        encoder: nn.Module,
        pretrained: Mapping[str, Tensor],
        heads: Mapping[str, ClassificationHead],
        splits: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        batch_size: int = 256,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        # a private copy: the encoder's parameters may share storage with ``pretrained``
        self.pretrained = {k: v.detach().to(self.device, copy=True) for k, v in pretrained.items()}
        self.heads = {t: h.to(self.device) for t, h in heads.items()}
        self.splits = splits
        self.preprocess = preprocess
        self.batch_size = batch_size
        self._params = dict(self.encoder.state_dict(keep_vars=True))
        missing = sorted(set(self.pretrained) ^ set(self._params))
        if missing:
            raise KeyError(f"pretrained state and image encoder disagree on key {missing[0]!r}")

    @torch.no_grad()
    def load(self, tau: Mapping[str, Tensor] | None, alpha: float = 1.0) -> None:
        """Set the encoder to ``theta_0 + alpha * tau`` (``tau=None``: ``theta_0``)."""
        write_task_vector(self._params, self.pretrained, tau, alpha)

    @torch.no_grad()
    def accuracy(self, task: str, split: str) -> float:
        """Top-1 accuracy (%) of the currently loaded weights on ``task``'s ``split``."""
        images, labels = self.splits[task, split]
        head = self.heads[task]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        correct = 0
        for start in range(0, len(labels), self.batch_size):
            x = self.preprocess(images[start : start + self.batch_size].to(self.device))
            with autocast:
                logits = head(self.encoder(x).float())
            y = labels[start : start + self.batch_size].to(self.device)
            correct += (logits.argmax(-1) == y).sum().item()
        return 100.0 * correct / max(len(labels), 1)
