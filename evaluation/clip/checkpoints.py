"""Reading CLIP image-encoder checkpoints in open_clip's key space (files are read safely by
:func:`evaluation.checkpoints.read_state_dict`).

Key spaces. open_clip's ``VisionTransformer`` (the target): ``conv1.weight``,
``class_embedding``, ``positional_embedding``, ``ln_pre.*``,
``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj,
ln_2, mlp.c_fc, mlp.c_proj}.*``, ``ln_post.*``, ``proj``. TALL masks checkpoints hold the
authors' ``ImageEncoder`` (``model.visual.*`` plus unused text-side entries). Hugging Face
transformers ``CLIPVisionModel`` / ``CLIPModel`` hold ``vision_model.*`` with separate
q/k/v projections (concatenated, in that order, into ``in_proj``) and
``visual_projection.weight`` (E, D), the transpose of open_clip's ``proj`` (D, E).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from evaluation.checkpoints import CheckpointError, check_matches, read_state_dict

Tensor = torch.Tensor
StateDict = dict[str, Tensor]


def visual_from_open_clip(state: Mapping[str, Tensor]) -> StateDict:
    """The image-encoder entries of an open_clip-style state: keys under ``model.visual.``
    (the TALL masks / Task Arithmetic ``ImageEncoder``), ``visual.`` (a whole CLIP) or bare."""
    for prefix in ("model.visual.", "visual."):
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


# (Hugging Face CLIPVisionModel name, open_clip VisionTransformer name); {i}: layer, {p}:
# weight or bias. q/k/v and the projection are handled apart (they change shape).
_RENAMES = [
    ("vision_model.embeddings.class_embedding", "class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("vision_model.pre_layrnorm.{p}", "ln_pre.{p}"),
    ("vision_model.post_layernorm.{p}", "ln_post.{p}"),
    ("vision_model.encoder.layers.{i}.layer_norm1.{p}", "transformer.resblocks.{i}.ln_1.{p}"),
    ("vision_model.encoder.layers.{i}.layer_norm2.{p}", "transformer.resblocks.{i}.ln_2.{p}"),
    ("vision_model.encoder.layers.{i}.self_attn.out_proj.{p}",
     "transformer.resblocks.{i}.attn.out_proj.{p}"),
    ("vision_model.encoder.layers.{i}.mlp.fc1.{p}", "transformer.resblocks.{i}.mlp.c_fc.{p}"),
    ("vision_model.encoder.layers.{i}.mlp.fc2.{p}", "transformer.resblocks.{i}.mlp.c_proj.{p}"),
]  # fmt: skip
HF_QKV = "vision_model.encoder.layers.{i}.self_attn.{part}_proj.{p}"
OC_QKV = "transformer.resblocks.{i}.attn.in_proj_{p}"
HF_PROJECTION = "visual_projection.weight"
HF_IGNORED = ("vision_model.embeddings.position_ids",)  # a buffer, not a weight


def _regex(template: str) -> re.Pattern:
    groups = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "part": r"(?P<part>[qkv])"}
    pattern = re.escape(template)
    for name, group in groups.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    return re.compile(pattern)


_FROM_HF = [(_regex(hf), oc) for hf, oc in _RENAMES]
_FROM_OC = [(_regex(oc), hf) for hf, oc in _RENAMES]
_HF_QKV, _OC_QKV = _regex(HF_QKV), _regex(OC_QKV)


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, target in rules:
        if m := pattern.fullmatch(key):
            return target.format(**m.groupdict())
    return None


def hf_to_open_clip(state: Mapping[str, Tensor], where: str = "checkpoint") -> StateDict:
    """A transformers ``CLIPVisionModel`` / ``CLIPModel`` state in open_clip visual keys:
    ``in_proj = cat(q, k, v)``, ``proj = visual_projection.weight^T``; text-side entries are
    dropped; an unknown ``vision_model.*`` key, or a layer missing one of q/k/v, is an error."""
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in state.items():
        if m := _HF_QKV.fullmatch(key):
            qkv.setdefault((m["i"], m["p"]), {})[m["part"]] = value
        elif key == HF_PROJECTION:
            out["proj"] = value.T.contiguous()
        elif key.startswith("vision_model.") and key not in HF_IGNORED:
            name = _rename(key, _FROM_HF)
            if name is None:
                unknown.append(key)
            else:
                out[name] = value
    for (i, p), parts in sorted(qkv.items()):
        if sorted(parts) != ["k", "q", "v"]:
            unknown.append(HF_QKV.format(i=i, part="[qkv]", p=p) + f" (only {sorted(parts)})")
        else:
            out[OC_QKV.format(i=i, p=p)] = torch.cat([parts["q"], parts["k"], parts["v"]])
    if unknown:
        raise CheckpointError(f"{where}: unknown Hugging Face CLIP vision keys: {unknown[:5]}")
    return out


def open_clip_to_hf(visual: Mapping[str, Tensor]) -> StateDict:
    """The inverse of :func:`hf_to_open_clip`: open_clip visual keys to a transformers
    ``CLIPVisionModelWithProjection`` state (to export experts, or to write stand-ins)."""
    out: StateDict = {}
    for key, value in visual.items():
        if key == "proj":
            out[HF_PROJECTION] = value.T.contiguous()
        elif m := _OC_QKV.fullmatch(key):
            for part, chunk in zip("qkv", value.chunk(3), strict=True):
                out[HF_QKV.format(i=m["i"], part=part, p=m["p"])] = chunk.contiguous()
        elif (name := _rename(key, _FROM_OC)) is not None:
            out[name] = value
        else:
            raise CheckpointError(f"open_clip visual key {key!r} has no Hugging Face name")
    return out


def load_visual(
    path: Path,
    expected: Mapping[str, Tensor],
    convert: Callable[[StateDict], StateDict],
    allow_pickle: bool,
    where: str,
) -> StateDict:
    """Read ``path``, map it to open_clip visual keys with ``convert`` and check it against
    the architecture's ``expected`` state; values are cast to the expected dtypes."""
    state = convert(read_state_dict(path, allow_pickle, where))
    check_matches(state, expected, f"{where} ({path})")
    return {k: state[k].to(expected[k].dtype).contiguous() for k in expected}
