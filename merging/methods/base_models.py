"""The base models themselves: the reference every merge of models trained from different
initialisations is compared against."""

from __future__ import annotations

import torch

from merging.context import ModelContext
from merging.registry import merge_method


@merge_method(
    "base_models",
    kind="models",
    label="Base model",
    reference="the models being merged, each on its own",
    storage="merged",
)
def base_models(context: ModelContext) -> list[dict[str, torch.Tensor]]:
    """Each input model unchanged, one output per model (scored one row each)."""
    return [dict(state) for state in context.states]
