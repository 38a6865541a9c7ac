"""LiNeS (Wang et al., "LiNeS: Post-training Layer Scaling Prevents Forgetting and
Enhances Model Merging", ICLR 2025): scale a merged task vector linearly with depth."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from merging.options import number
from merging.registry import merge_method, method_spec
from merging.streaming import TaskVectors, summed

Tensor = torch.Tensor

LAYOUTS = {
    "open_clip ViT": "transformer.resblocks",
    "HF CLIP": "encoder.layers",
    "T5": "block",
    "BERT": "encoder.layer",
}
"""Model layouts whose residual blocks LiNeS finds in key names: ``<prefix>.<i>.``."""
_BLOCK = re.compile(r"(?:^|\.)(" + "|".join(re.escape(p) for p in LAYOUTS.values()) + r")\.(\d+)\.")
_NUMBERED = re.compile(r"(?:^|\.)\d+(?:\.|$)")


def layer_depths(keys: Iterable[str]) -> dict[str, float | None]:
    """Each key's relative depth in its stack of residual blocks, ``i / (L - 1)`` for block
    ``i`` (0-based) of ``L`` (0 when ``L = 1``); ``None`` for keys outside the blocks
    (embeddings, final norms, projections).

    A block is ``...<prefix>.<i>.`` with a prefix of :data:`LAYOUTS` (open_clip ViT
    ``transformer.resblocks.<i>.``, HF CLIP ``encoder.layers.<i>.``, T5 ``block.<i>.``,
    BERT ``encoder.layer.<i>.``). A stack is everything up to the index, so T5's
    ``encoder.block`` and ``decoder.block`` (or CLIP's two towers) are scaled separately,
    each over its own ``L``. Raises ``ValueError`` naming the key when no key has a block
    index (an unknown layout) or a key has a numbered part outside a known block
    (e.g. timm's ``blocks.3.`` or ResNet's ``layer1.0.``).
    """
    keys = list(keys)
    found: dict[str, tuple[str, int]] = {}
    for key in keys:
        match = _BLOCK.search(key)
        if match:
            found[key] = (key[: match.end(1)], int(match.group(2)))
        elif _NUMBERED.search(key):
            raise ValueError(
                f"LiNeS: cannot tell the layer of key {key!r}: it has a numbered part but "
                f"no block index of a known layout ({_known()})"
            )
    if keys and not found:
        raise ValueError(
            f"LiNeS: no key has a block index of a known layout ({_known()}), "
            f"e.g. key {keys[0]!r}: cannot scale by depth"
        )
    blocks: dict[str, int] = {}
    for stack, index in found.values():
        blocks[stack] = max(blocks.get(stack, 0), index + 1)
    depths: dict[str, float | None] = dict.fromkeys(keys)
    for key, (stack, index) in found.items():
        depths[key] = index / (blocks[stack] - 1) if blocks[stack] > 1 else 0.0
    return depths


def _l1(x: Tensor) -> float:
    return float(x.abs().sum(dtype=torch.float64))


def _known() -> str:
    return ", ".join(f"{name}: {prefix}.<i>." for name, prefix in LAYOUTS.items())


@merge_method(
    "lines",
    label="LiNeS",
    reference="Wang et al., ICLR 2025; wang-kee/LiNeS",
    storage="merged",
)
def lines(
    tvs: TaskVectors,
    *,
    depth_scale: float = 0.5,
    min_scale: float | None = None,
    base: str = "task_arithmetic",
    base_options: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """LiNeS for multi-task merging: the merged task vector ``tau_MTL`` of method ``base``
    (options ``base_options``), each entry scaled by its block's depth,
    ``tau[key] = (min_scale + depth_scale * i / (L - 1)) * tau_MTL[key]`` for block ``i``
    of ``L`` (:func:`layer_depths`) and ``min_scale * tau_MTL[key]`` outside the blocks
    (the paper's ``alpha + beta (l - 1) / (L - 1)``). ``min_scale=None`` is the authors'
    multi-task rule ``||sum_t tau_t||_1 / (T ||tau_MTL||_1)`` (``src/eval/eval.py``,
    norms over all float entries; ``1 / T`` for task arithmetic). The model is
    ``theta_0 + tau`` (``alpha = 1``); ``depth_scale`` is chosen on validation data, from
    {0.1, ..., 1.0} in the authors' code for task arithmetic and Consensus
    ({0.1, ..., 1.5} for TIES).

    ``base`` is any registered single-output task-vector method that needs no context
    (task arithmetic, TIES, Consensus with a fixed ``lam``, ...). One more streamed read
    for ``||sum_t tau_t||_1``. Raises ``ValueError`` naming the option, or the key whose
    layer cannot be parsed; ``TypeError`` for an unknown option in ``base_options``.
    """
    depth_scale = number("depth_scale", depth_scale)
    if min_scale is not None:
        number("min_scale", min_scale)
    options = dict(base_options or {})
    try:
        spec = method_spec(base)
    except KeyError as err:
        raise ValueError(f"option 'base': {err.args[0]}") from None
    if spec.kind != "task_vectors" or spec.task_specific or spec.needs or spec.name == "lines":
        raise ValueError(
            f"option 'base' must be a single-output task-vector method without context, "
            f"got {base!r}"
        )
    spec.check_options(options, where="base_options")
    depths = layer_depths(tvs.float_keys)
    merged = spec.fn(tvs, **options)
    if min_scale is None:
        summed_l1 = sum(_l1(summed(tvs.tensors(key))) for key in depths)
        merged_l1 = sum(_l1(merged[key]) for key in depths)
        min_scale = summed_l1 / (len(tvs) * merged_l1) if merged_l1 > 0 else 0.0

    def scaled(key: str) -> Tensor:
        x = merged[key]
        if key not in depths:
            return x
        depth = depths[key]
        scale = min_scale if depth is None else min_scale + depth_scale * depth
        return (x.float() * scale).to(x.dtype)

    return {key: scaled(key) for key in tvs.keys}
