"""Top-1 accuracy of ``theta_0 + alpha * tau`` on a task's split, for CLIP image encoders
scored through frozen zero-shot heads (Ilharco et al., ICLR 2023; Wang et al., ICML 2024).

Changing alpha never re-merges: the merged task vector ``tau`` is computed once and
each alpha only rewrites the encoder's weights in place. Splits are kept for the whole grid,
on first use, while the kept inputs stay within ``input_cache_bytes``: on the CPU
preprocessed (uint8 -> normalised float), off the CPU as their uint8 images (4x smaller;
normalised on the device batch by batch, cheap next to the forward pass). A split that does
not fit is copied batch by batch on every pass; on CUDA from pinned memory, so the host reads
and pins the next batch while the device still computes (the copy itself is on the same
stream as the forward pass). Every form gives the same values: preprocessing is
elementwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from evaluation.clip.heads import ClassificationHead
from evaluation.zoo import write_task_vector

Tensor = torch.Tensor


def default_input_cache_bytes(device: str | torch.device) -> int:
    """Bytes of input an :class:`ImageEvaluator` keeps on ``device`` by default: on CUDA an
    eighth of the device's memory or a quarter of what is free, whichever is smaller (other
    evaluators, merges and data-based methods may share it); 1 GiB elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return min(total // 8, free // 4)
    return 1 << 30


class ImageEvaluator:
    """Scores weights of one image encoder with frozen per-task heads on cached splits
    (the :class:`evaluation.zoo.Evaluator` protocol). ``input_cache_bytes``: how much input
    is kept on ``device`` across grid points (module docstring); default
    :func:`default_input_cache_bytes`."""

    def __init__(
        self,
        encoder: nn.Module,
        pretrained: Mapping[str, Tensor],
        heads: Mapping[str, ClassificationHead],
        splits: Mapping[tuple[str, str], tuple[Tensor, Tensor]],
        preprocess: Callable[[Tensor], Tensor],
        batch_size: int = 256,
        device: str = "cpu",
        input_cache_bytes: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        # a private copy: the encoder's parameters may share storage with ``pretrained``
        self.pretrained = {k: v.detach().to(self.device, copy=True) for k, v in pretrained.items()}
        self.heads = {t: h.to(self.device) for t, h in heads.items()}
        self.splits = splits
        self.preprocess = preprocess
        self.batch_size = batch_size
        if input_cache_bytes is None:
            input_cache_bytes = default_input_cache_bytes(self.device)
        self.input_cache_bytes = input_cache_bytes
        # kept on the device (floats or uint8 images, :meth:`_keeps_floats`); None: streamed
        self._inputs: dict[tuple[str, str], Tensor | None] = {}
        self._labels: dict[tuple[str, str], Tensor] = {}
        self._params = dict(self.encoder.state_dict(keep_vars=True))
        missing = sorted(set(self.pretrained) ^ set(self._params))
        if missing:
            raise KeyError(f"pretrained state and image encoder disagree on key {missing[0]!r}")

    @torch.no_grad()
    def load(self, tau: Mapping[str, Tensor] | None, alpha: float = 1.0) -> None:
        """Set the encoder to ``theta_0 + alpha * tau`` (``tau=None``: ``theta_0``)."""
        write_task_vector(self._params, self.pretrained, tau, alpha)

    def _to_device(self, x: Tensor) -> Tensor:
        """``x`` on the device; from the CPU to CUDA through pinned memory, the host not
        waiting for the copy."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _keeps_floats(self) -> bool:
        """Whether kept splits are preprocessed floats (on the CPU) or uint8 images."""
        return self.device.type == "cpu"

    def _kept_inputs(self, task: str, split: str) -> Tensor | None:
        """The split kept on the device, built on first use if it fits in what
        ``input_cache_bytes`` has left: on the CPU preprocessed (batch by batch, so
        temporaries stay one batch large), elsewhere its uint8 images (:meth:`_keeps_floats`);
        ``None`` if it does not fit (or the device runs out of memory)."""
        if (task, split) not in self._inputs:
            images = self.splits[task, split][0]
            used = sum(x.nbytes for x in self._inputs.values() if x is not None)
            left = self.input_cache_bytes - used
            self._inputs[task, split] = self._keep(images, left) if len(images) else None
        return self._inputs[task, split]

    def _keep(self, images: Tensor, left: int) -> Tensor | None:
        """``images`` in their kept form on the device if that takes at most ``left`` bytes."""
        if not self._keeps_floats():
            if images.nbytes > left:
                return None
            try:
                return images.to(self.device)
            except torch.OutOfMemoryError:
                return None
        first = self.preprocess(images[:1])
        if first.nbytes * len(images) > left:
            return None
        inputs = first.new_empty(len(images), *first.shape[1:])
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            inputs[start:stop] = self.preprocess(images[start:stop])
        return inputs

    @torch.inference_mode()
    def accuracy(self, task: str, split: str) -> float:
        """Top-1 accuracy (%) of the currently loaded weights on ``task``'s ``split``."""
        images, labels = self.splits[task, split]
        kept = self._kept_inputs(task, split)
        if (task, split) not in self._labels:
            self._labels[task, split] = labels.to(self.device)
        targets = self._labels[task, split]
        head = self.heads[task]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for start in range(0, len(labels), self.batch_size):
            stop = start + self.batch_size
            if kept is None:
                x = self.preprocess(self._to_device(images[start:stop]))
            elif self._keeps_floats():
                x = kept[start:stop]
            else:
                x = self.preprocess(kept[start:stop])
            with autocast:
                logits = head(self.encoder(x).float())
            correct += (logits.argmax(-1) == targets[start:stop]).sum()
        return 100.0 * correct.item() / max(len(labels), 1)
