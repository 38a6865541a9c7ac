"""Top-1 accuracy of ``theta_0 + alpha * tau`` on a text task's split: the sentence encoder's
embedding (:mod:`evaluation.minilm.encoder`) through the task's frozen head. Changing alpha
never re-merges: each alpha only rewrites the encoder's weights in place. Splits are
tokenised and padded into length-sorted batches once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from evaluation.minilm.encoder import autocast, by_length, embed, pad
from evaluation.zoo import write_task_vector

Tensor = torch.Tensor


class TextEvaluator:
    """Scores weights of one encoder with frozen per-task heads (the
    :class:`evaluation.zoo.Evaluator` protocol). ``splits[(task, split)] = (token ids,
    labels)``, run in length-sorted batches of at most ``batch_size`` texts and
    ``max_tokens`` padded tokens (:func:`evaluation.minilm.encoder.by_length`)."""

    def __init__(
        self,
        encoder: nn.Module,
        pretrained: Mapping[str, Tensor],
        heads: Mapping[str, nn.Linear],
        splits: Mapping[tuple[str, str], tuple[Sequence[Sequence[int]], Tensor]],
        pad_id: int,
        batch_size: int = 256,
        device: str = "cpu",
        dtype: str | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        # a private copy: the encoder's parameters may share storage with ``pretrained``
        self.pretrained = {k: v.detach().to(self.device, copy=True) for k, v in pretrained.items()}
        self.heads = {t: h.to(self.device).eval() for t, h in heads.items()}
        self.dtype = dtype
        self._params = dict(self.encoder.state_dict(keep_vars=True))
        missing = sorted(set(self.pretrained) ^ set(self._params))
        if missing:
            raise KeyError(f"pretrained state and encoder disagree on key {missing[0]!r}")
        self.batches = {
            key: [
                (*pad([ids[i] for i in batch], pad_id), labels[batch])
                for batch in by_length(ids, batch_size, max_tokens)
            ]
            for key, (ids, labels) in splits.items()
        }
        self.load(None)

    @torch.no_grad()
    def load(self, tau: Mapping[str, Tensor] | None, alpha: float = 1.0) -> None:
        """Set the encoder to ``theta_0 + alpha * tau`` (``tau=None``: ``theta_0``)."""
        write_task_vector(self._params, self.pretrained, tau, alpha)

    @torch.no_grad()
    def accuracy(self, task: str, split: str) -> float:
        """Top-1 accuracy (%) of the currently loaded weights on ``task``'s ``split``."""
        head, correct, total = self.heads[task], 0, 0
        for x, mask, y in self.batches[task, split]:
            with autocast(self.device, self.dtype):
                z = embed(self.encoder, x.to(self.device), mask.to(self.device))
            correct += (head(z).argmax(-1).cpu() == y).sum().item()
            total += len(y)
        return 100.0 * correct / max(total, 1)
