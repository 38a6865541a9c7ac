"""The MiniLM zoo's examples for data-based merge methods (Fisher, RegMean, AdaMerging):
a :class:`merging.task_data.TaskData` whose module is the sentence encoder (token ids and
attention mask -> the mean-pooled, L2-normalised embedding, :func:`evaluation.minilm.
encoder.embed`) under the encoder's own parameter names, and whose heads are the tasks'
frozen heads. Pure assembly: the zoo hands in the loaded encoder, heads and tokenised splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from evaluation.minilm.encoder import embed, pad
from merging.task_data import TaskData

Tensor = torch.Tensor


class SentenceEncoder(nn.Module):
    """``encoder``'s submodules under their own names (so its state-dict keys, the task
    vectors' keys, name this module's parameters too); ``forward(input_ids,
    attention_mask)`` -> embeddings (B, hidden). ``torch.func.functional_call`` on this
    module swaps the shared submodules' parameters, so the encoder runs with them."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        for name, child in encoder.named_children():
            if child is not None:
                self.add_module(name, child)
        object.__setattr__(self, "_encoder", encoder)  # not a submodule: no key prefix

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return embed(self._encoder, input_ids, attention_mask)


def text_task_data(
    encoder: nn.Module,
    pretrained: Mapping[str, Tensor],
    heads: Mapping[str, nn.Linear],
    ids: Mapping[str, Sequence[Sequence[int]]],
    pad_id: int,
    split: str,
    examples: int | None,
    device: str,
) -> TaskData:
    """Examples of each task of ``ids`` (tokenised texts of ``split``) for data-based merge
    methods: per task a seeded random draw (seed 0) of ``examples`` texts (``None`` or more
    than the split holds: all), served as ``{input_ids, attention_mask}`` padded to the
    batch's longest text; blocks ``encoder.layer.<i>``. Padding positions pass through the
    layers (a RegMean Gram matrix sees them), masked out only by attention and pooling."""
    dev = torch.device(device)
    module = SentenceEncoder(encoder.to(dev)).eval()
    chosen = {}
    for task, texts in ids.items():
        draw = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
        chosen[task] = draw if examples is None else draw[:examples]

    def load(task: str, at: Tensor) -> dict[str, Tensor]:
        x, mask = pad([ids[task][i] for i in chosen[task][at].tolist()], pad_id)
        return {"input_ids": x.to(dev), "attention_mask": mask.to(dev)}

    on_device = {t: h.to(dev) for t, h in heads.items()}
    depth = len(encoder.encoder.layer)
    return TaskData(
        module=module,
        pretrained={k: v.detach().to(dev, copy=True) for k, v in pretrained.items()},
        sizes={t: len(v) for t, v in chosen.items()},
        load=load,
        head=lambda task, z: on_device[task](z),
        split=split,
        device=dev,
        blocks=tuple(f"encoder.layer.{i}" for i in range(depth)),
    )
