"""Top-1 accuracy of ``theta_0 + alpha * tau`` on a task's split, for CLIP image encoders
scored through frozen zero-shot heads (Ilharco et al., ICLR 2023; Wang et al., ICML 2024).

Changing alpha never re-merges: the merged task vector ``tau`` is computed once and
each alpha only rewrites the encoder's weights in place. A split is preprocessed (uint8 ->
normalised float on the device) once, on its first use, and the float tensor is kept for
the whole grid while the kept inputs stay within ``input_cache_bytes``; splits beyond it
are preprocessed batch by batch on every pass (the same values: preprocessing is
elementwise).
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
    (the :class:`evaluation.zoo.Evaluator` protocol). ``input_cache_bytes``: how much
    preprocessed input (float, on ``device``) is kept across grid points (module docstring)."""

    def __init__(
        self,
        encoder: nn.Module,
        pretrained: Mapping[str, Tensor],
        heads: Mapping[str, ClassificationHead],
        splits: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        batch_size: int = 256,
        device: str = "cpu",
        input_cache_bytes: int = 1 << 30,
    ) -> None:
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        # a private copy: the encoder's parameters may share storage with ``pretrained``
        self.pretrained = {k: v.detach().to(self.device, copy=True) for k, v in pretrained.items()}
        self.heads = {t: h.to(self.device) for t, h in heads.items()}
        self.splits = splits
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.input_cache_bytes = input_cache_bytes
        self._inputs: dict[tuple[str, str], Tensor | None] = {}  # None: over the budget
        self._params = dict(self.encoder.state_dict(keep_vars=True))
        missing = sorted(set(self.pretrained) ^ set(self._params))
        if missing:
            raise KeyError(f"pretrained state and image encoder disagree on key {missing[0]!r}")

    @torch.no_grad()
    def load(self, tau: Mapping[str, Tensor] | None, alpha: float = 1.0) -> None:
        """Set the encoder to ``theta_0 + alpha * tau`` (``tau=None``: ``theta_0``)."""
        write_task_vector(self._params, self.pretrained, tau, alpha)

    def _cached_inputs(self, task: str, split: str) -> Tensor | None:
        """The whole split preprocessed on the device, built on first use (batch by batch,
        so temporaries stay one batch large); ``None`` if it would take the kept inputs
        over ``input_cache_bytes``."""
        if (task, split) not in self._inputs:
            images = self.splits[task, split][0]
            inputs = None
            if len(images):
                first = self.preprocess(images[:1].to(self.device))
                need = first.nbytes * len(images)
                used = sum(x.nbytes for x in self._inputs.values() if x is not None)
                if used + need <= self.input_cache_bytes:
                    inputs = first.new_empty(len(images), *first.shape[1:])
            if inputs is not None:
                for start in range(0, len(images), self.batch_size):
                    stop = start + self.batch_size
                    inputs[start:stop] = self.preprocess(images[start:stop].to(self.device))
            self._inputs[task, split] = inputs
        return self._inputs[task, split]

    @torch.inference_mode()
    def accuracy(self, task: str, split: str) -> float:
        """Top-1 accuracy (%) of the currently loaded weights on ``task``'s ``split``."""
        images, labels = self.splits[task, split]
        inputs = self._cached_inputs(task, split)
        head = self.heads[task]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(labels), self.batch_size):
            stop = start + self.batch_size
            if inputs is not None:
                x = inputs[start:stop]
            else:
                x = self.preprocess(images[start:stop].to(self.device))
            with autocast:
                logits = head(self.encoder(x).float())
            correct += (logits.argmax(-1) == labels[start:stop].to(self.device)).sum()
        return 100.0 * correct.item() / max(len(labels), 1)
