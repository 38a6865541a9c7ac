"""Storage cost of serving T tasks, as accounted in the TALL masks paper's tables (Wang et al.,
ICML 2024, Tables 1-2, "storage" in Gbit = 1e9 bits, 32-bit floats, 1-bit masks).

With ``N`` = parameters of the stored model and ``N_enc`` = parameters of the part that is
fine-tuned and merged (the image encoder; for T5 the whole model), bits to store:

* one merged model (zero-shot, weight averaging, task arithmetic, TIES, Consensus, ...):
  ``32 N``;
* the T fine-tuned experts, sharing the untouched rest: ``32 (N - N_enc) + 32 T N_enc``;
* TALL masks / magnitude masking (theta_0, the multi-task vector, T binary masks):
  ``32 N + 32 N_enc + T N_enc``;
* magnitude pruning: the same, which the paper gives as a lower bound (">"): the kept
  values and their positions cost more than one mask;
* EMR-Merging (Huang et al., NeurIPS 2024): the masks' cost plus T 32-bit rescalers.

For CLIP the paper's stored model is its ``ImageEncoder``: the open_clip model without the
text transformer (:func:`clip_param_counts`). ViT-B/32: N = 113.4M, N_enc = 87.8M, giving
3.6 (merged), 23.3 / 40.2 / 57.0 (experts) and 7.1 / 7.7 / 8.2 (masks) Gbit for 8 / 14 /
20 tasks, the published values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import nn

FLOAT_BITS = 32
EXPERTS = {"finetuned"}
MASKED = {"tall_masks", "magnitude_masking", "magnitude_pruning"}
LOWER_BOUND = {"magnitude_pruning"}  # published as ">" the masks' cost


def storage_bits(
    fn: str,
    hparams: Mapping[str, object],
    num_tasks: int,
    n_params_model: int,
    n_params_encoder: int,
) -> float:
    """Bits to store what method ``fn`` serves ``num_tasks`` tasks with (module docstring);
    NaN for a task-specific method whose storage is not accounted here. ``hparams`` are
    accepted for methods whose cost depends on them; none of the accounted ones does."""
    from merging import method_spec

    if num_tasks < 1 or n_params_encoder < 1 or n_params_model < n_params_encoder:
        raise ValueError(
            f"storage of {fn!r}: need num_tasks >= 1 and 1 <= n_params_encoder <= "
            f"n_params_model, got {num_tasks}, {n_params_encoder}, {n_params_model}"
        )
    n, enc, t = n_params_model, n_params_encoder, num_tasks
    if fn in EXPERTS:
        return float(FLOAT_BITS * (n - enc) + FLOAT_BITS * t * enc)
    masks = FLOAT_BITS * n + FLOAT_BITS * enc + t * enc
    if fn in MASKED:
        return float(masks)
    if fn == "emr":
        return float(masks + FLOAT_BITS * t)
    if method_spec(fn).task_specific:
        return math.nan
    return float(FLOAT_BITS * n)


def is_lower_bound(fn: str) -> bool:
    """Whether the paper reports ``fn``'s storage as a lower bound (">")."""
    return fn in LOWER_BOUND


def clip_param_counts(model: nn.Module) -> tuple[int, int]:
    """``(N, N_enc)`` of an open_clip CLIP as the paper stores it: N counts every parameter
    but the text transformer's (its ``ImageEncoder`` drops ``model.transformer`` and keeps
    the token embedding, final layer norm and projections), N_enc the image encoder's."""
    total = sum(p.numel() for p in model.parameters())
    text_blocks = sum(p.numel() for p in model.transformer.parameters())
    return total - text_blocks, sum(p.numel() for p in model.visual.parameters())
