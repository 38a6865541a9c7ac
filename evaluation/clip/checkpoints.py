"""Reading CLIP image-encoder checkpoints safely, in open_clip's key space.

Safety: ``.safetensors`` files are read with safetensors; anything else with
``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers. A file
that can only be unpickled (a pickled ``nn.Module``, as the Task Arithmetic and TALL masks
code can write) runs code from the file when loaded, so it is refused unless the caller
opts in (``allow_pickle``, config ``model.allow_pickle=true``); classes that are not
importable here (the authors' ``src.*`` package, older open_clip versions) are then rebuilt
as plain modules, which is enough to read their ``state_dict()``.

A truncated or corrupt file raises :class:`CheckpointError` naming the file and what to do;
the ``module.`` prefix of a DistributedDataParallel state (open_clip's trainer) is dropped.

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

import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

Tensor = torch.Tensor
StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable or of another architecture."""


# --- reading -------------------------------------------------------------------------------
class _AnyModule(nn.Module):
    """Stand-in for a pickled class that is not importable here (the authors'
    ``src.models.modeling.ImageEncoder``, classes of older open_clip versions): unpickling
    restores its attributes, parameters and children, enough for ``state_dict()``."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _AnyModule


_pickle_module = type(sys)("_mergelab_pickle")
_pickle_module.__dict__.update(vars(pickle))
_pickle_module.Unpickler = _Unpickler


def _to_state(obj: object, path: Path, where: str) -> StateDict:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{where}: {path} holds a {type(obj).__name__}, not a state dict of tensors"
        )
    return {str(k): v for k, v in obj.items()}


def _unreadable(path: Path, where: str, err: BaseException) -> CheckpointError:
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return CheckpointError(
        f"{where}: {path} is truncated or corrupt ({reason}). Delete it and download or copy "
        "it again (a hub file: huggingface-cli download <repo> <file> --force-download), or "
        "point the config at an intact copy."
    )


def strip_module_prefix(state: Mapping[str, Tensor]) -> StateDict:
    """``state`` without the ``module.`` prefix that a model wrapped in DistributedDataParallel
    (open_clip's trainer) puts on every key; open_clip's ``load_checkpoint`` strips it too."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def read_state_dict(
    path: str | Path, allow_pickle: bool = False, where: str = "checkpoint"
) -> StateDict:
    """The tensors of a checkpoint file (see the module docstring for what is safe), without
    a DistributedDataParallel ``module.`` prefix. Errors name ``where`` (e.g. the task's
    expert) and the file; a truncated or corrupt file says so."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: {path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return strip_module_prefix(load_file(str(path)))
        except Exception as err:  # SafetensorError: a bad header or a short file
            raise _unreadable(path, where, err) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not allow_pickle:
            reason = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"{where}: {path}: this checkpoint can only be loaded by unpickling arbitrary "
                f"Python objects, which runs code stored in the file ({reason}). It was "
                "refused. If you trust its source, set model.allow_pickle=true (or "
                "allow_pickle=True)."
            ) from None
        try:
            obj = torch.load(
                path, map_location="cpu", weights_only=False, pickle_module=_pickle_module
            )
        except Exception as err:
            raise _unreadable(path, where, err) from err
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # a short or damaged archive
        raise _unreadable(path, where, err) from err
    return strip_module_prefix(_to_state(obj, path, where))


# --- locating files: a local directory stands in for any hub repo ----------------------------
def resolve_file(
    repo: str, filenames: Sequence[str], revision: str | None = None, what: str = "checkpoint"
) -> Path:
    """The first of ``filenames`` found in ``repo``: a local directory, or a Hugging Face hub
    model repo (downloaded through the hub cache). Errors list what was tried."""
    local = Path(repo).expanduser()
    if local.is_dir():
        for name in filenames:
            if (local / name).is_file():
                return local / name
        raise CheckpointError(f"{what}: none of {list(filenames)} in the local directory {local}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    unreachable = None
    for name in filenames:
        try:
            return Path(hf_hub_download(repo, name, revision=revision))
        except RemoteEntryNotFoundError:
            continue
        except LocalEntryNotFoundError as err:  # offline and not in the hub cache
            unreachable = unreachable or err
        except RepositoryNotFoundError as err:
            raise CheckpointError(
                f"{what}: {repo!r} is neither a local directory nor a Hugging Face hub repo "
                f"you can access ({type(err).__name__})"
            ) from err
        except Exception as err:  # network and server errors
            unreachable = err
            break
    if unreachable is not None:
        raise CheckpointError(
            f"{what}: cannot fetch {list(filenames)} from hub repo {repo!r} "
            f"({type(unreachable).__name__}: {str(unreachable).splitlines()[0]}). Without "
            f"network access, download the repo elsewhere (huggingface-cli download {repo}) and "
            "point the config at that local directory, or set HF_HUB_OFFLINE=1 if it is "
            "already in the hub cache."
        ) from unreachable
    raise CheckpointError(f"{what}: none of {list(filenames)} in hub repo {repo!r}")


# --- key spaces ------------------------------------------------------------------------------
def check_matches(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], where: str) -> None:
    """Raise naming the missing, unexpected and wrongly shaped keys of ``state``."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("wrong shapes", shapes))
        if keys
    ]  # fmt: skip
    if problems:
        raise CheckpointError(f"{where} does not match the architecture: " + "; ".join(problems))


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
