"""The CLIP zoo (``model.loader: open_clip``): OpenAI CLIP from open_clip plus one fine-tuned
image encoder per task, from one of two expert families (``model.experts``):

* ``tall_masks``: the TALL masks paper's checkpoints (Wang et al., ICML 2024), hub repo
  ``nik-dim/tall_masks`` (``model.tall_masks.repo``), file
  ``<arch>/<Task>Val/nonlinear_finetuned.{safetensors,pt}`` (``folder`` and ``files`` are
  configurable); theta_0 is open_clip's ``pretrained`` weights, which the authors
  fine-tuned from.
* ``hf_transformers``: transformers CLIP vision experts ``<owner>/<name>_<task slug>``
  (``tanganke/clip-vit-base-patch32_sun397``, ...) fine-tuned from ``<base_owner>/<name>``
  (``openai/clip-vit-base-patch32``), mapped into open_clip's key space; theta_0 is that
  base model's image encoder. Experts without a projection take the base's.

Checkpoint ids are generated from (architecture, task); ``model.expert_sources[task]``
replaces one, and any repo, owner or id may be a local directory with the hub layout.
Each expert is read once (safely, :mod:`evaluation.clip.checkpoints`), checked against the
architecture and stored as safetensors in open_clip's visual keys under
``<cache>/clip_experts/``; runs read it from there lazily, key by key. Hub files are keyed by
(repo, file, revision): pin ``revision`` to notice upstream changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from evaluation.clip.checkpoints import (
    hf_to_open_clip,
    load_visual,
    resolve_file,
    visual_from_open_clip,
)
from evaluation.clip.tasks import get_spec
from evaluation.cache import atomic_path, cache_root
from evaluation.sandbox.zoo import SafetensorsState
from evaluation.zoo import ClipZoo

Tensor = torch.Tensor
FAMILIES = ("tall_masks", "hf_transformers")
HF_NAMES = {  # open_clip architecture -> transformers model name
    "ViT-B-32": "clip-vit-base-patch32",
    "ViT-B-16": "clip-vit-base-patch16",
    "ViT-L-14": "clip-vit-large-patch14",
}
TALL_FOLDER = "{arch}/{task}Val"
TALL_FILES = ("nonlinear_finetuned.safetensors", "nonlinear_finetuned.pt")
HF_FILES = ("model.safetensors", "pytorch_model.bin")
EXPERT_CACHE_VERSION = 1


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (N, 3, S, S) -> ``(x / 255 - mean) / std`` per channel, float32."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected uint8 images (N, 3, S, S), got {images.dtype} {tuple(images.shape)}"
        )
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def _file_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def load_pretrained(cfg: Mapping[str, Any]) -> tuple[nn.Module, Any, Any, str]:
    """``(model, tokenizer, preprocess, name)`` of the pretrained open_clip CLIP of ``cfg``;
    ``name`` identifies its weights (the zero-shot head cache key)."""
    import open_clip

    where = f"model {cfg.get('name')!r}"
    arch, pretrained = cfg.get("arch"), cfg.get("pretrained")
    if not arch or not pretrained:
        raise ValueError(f"{where}: needs arch (open_clip architecture) and pretrained")
    identity = [arch, str(pretrained), f"quick_gelu={bool(cfg.get('quick_gelu'))}"]
    if cfg.get("arch_config"):
        path = Path(cfg["arch_config"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{where}: arch_config {path} does not exist")
        open_clip.add_model_config(path)
        identity.append(hashlib.sha256(path.read_bytes()).hexdigest()[:16])
    if Path(str(pretrained)).expanduser().is_file():
        identity[1] = _file_identity(Path(str(pretrained)).expanduser())
    try:
        model = open_clip.create_model(
            arch, pretrained=str(pretrained), force_quick_gelu=bool(cfg.get("quick_gelu"))
        )
    except RuntimeError as err:
        raise RuntimeError(
            f"{where}: cannot create open_clip {arch!r} with pretrained={pretrained!r} ({err}). "
            "A pretrained tag downloads its weights once (network needed); a local "
            "checkpoint file works offline."
        ) from err
    pp = open_clip.get_model_preprocess_cfg(model)
    if pp.get("resize_mode", "shortest") != "shortest" or pp.get("interpolation") != "bicubic":
        raise ValueError(
            f"{where}: preprocessing {pp} is not open_clip's shortest-side bicubic resize, "
            "which the benchmark's data cache assumes"
        )
    preprocess = functools.partial(normalise, mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    return (
        model.eval(),
        open_clip.get_tokenizer(arch),
        preprocess,
        "open_clip:" + ":".join(identity),
    )


def _location(cfg: Mapping[str, Any], family: str, task: str) -> tuple[str, tuple[str, ...], Any]:
    """(repo or local path, candidate files in it, revision) of ``task``'s expert; ``task``
    ``None`` is the base model of the hf_transformers family."""
    arch = cfg["arch"]
    options = dict(cfg.get(family) or {})
    override = (cfg.get("expert_sources") or {}).get(task) if task else None
    if family == "tall_masks":
        names = tuple(options.get("files") or TALL_FILES)
        if override:
            return str(override), names, options.get("revision")
        folder = str(options.get("folder") or TALL_FOLDER).format(arch=arch, task=task)
        files = tuple(f"{folder}/{name}" for name in names)
        return str(options.get("repo", "nik-dim/tall_masks")), files, options.get("revision")
    name = options.get("name") or HF_NAMES.get(arch)
    if not name:
        raise ValueError(
            f"model {cfg.get('name')!r}: no transformers name for arch {arch!r}; set "
            f"model.hf_transformers.name (known: {HF_NAMES})"
        )
    if task is None:
        return f"{options.get('base_owner', 'openai')}/{name}", HF_FILES, options.get("revision")
    slug = get_spec(task).hf_slug
    if override:
        return str(override), HF_FILES, options.get("revision")
    if slug is None:
        raise ValueError(
            f"model {cfg.get('name')!r}: the hf_transformers family has no expert for task "
            f"{task!r}; use model.experts=tall_masks, model.expert_sources.{task}=<id or path>, "
            "or a benchmark without it (the tanganke experts use EMNISTLetters for EMNIST)"
        )
    return f"{options.get('owner', 'tanganke')}/{name}_{slug}", HF_FILES, options.get("revision")


def _cached_ok(path: Path, expected: Mapping[str, Tensor]) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # an unreadable cache file is rebuilt, never trusted
        warnings.warn(f"rebuilding unreadable expert cache {path}: {err}", stacklevel=3)
        return False
    if shapes != {k: tuple(v.shape) for k, v in expected.items()}:
        warnings.warn(f"rebuilding expert cache {path}: keys or shapes differ", stacklevel=3)
        return False
    return True


def _from_hf(
    state: Mapping[str, Tensor], base: Mapping[str, Tensor] | None, where: str
) -> dict[str, Tensor]:
    """open_clip visual keys of a transformers state; experts without a projection (plain
    ``CLIPVisionModel``) share the base model's, which fine-tuning left untouched."""
    return {**({"proj": base["proj"]} if base is not None else {}), **hf_to_open_clip(state, where)}


def expert_state(
    cfg: Mapping[str, Any],
    family: str,
    task: str | None,
    expected: Mapping[str, Tensor],
    cache_dir: Path,
    base: Mapping[str, Tensor] | None = None,
) -> SafetensorsState:
    """``task``'s expert image encoder (``None``: the hf_transformers base model) in open_clip
    visual keys, read once into the expert cache and then lazily from there."""
    repo, files, revision = _location(cfg, family, task)
    what = (
        f"model {cfg.get('name')!r} {family} {'base model' if task is None else 'expert ' + task}"
    )
    local = Path(repo).expanduser()
    source = None
    if local.is_file():
        source = local
    elif local.is_dir():
        source = resolve_file(str(local), files, what=what)
    identity = {
        "version": EXPERT_CACHE_VERSION, "family": family, "arch": cfg["arch"],
        "repo": repo, "files": files, "revision": revision,
        "file": _file_identity(source) if source else None,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    out = (
        cache_root(cache_dir)
        / "clip_experts"
        / cfg["arch"]
        / family
        / f"{task or 'base'}-{key}.safetensors"
    )
    if out.exists() and _cached_ok(out, expected):
        return SafetensorsState(out)
    if source is None:
        source = resolve_file(repo, files, revision, what)
    convert = (
        visual_from_open_clip
        if family == "tall_masks"
        else functools.partial(_from_hf, base=base, where=what)
    )
    state = load_visual(source, expected, convert, bool(cfg.get("allow_pickle")), what)
    meta = {k: str(v) for k, v in identity.items()}
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return SafetensorsState(out)


def load_clip_zoo(
    cfg: Mapping[str, Any], task_names: list[str], cache_dir: str | os.PathLike | None,
    progress: bool = True,
) -> ClipZoo:  # fmt: skip
    """The zoo of ``cfg`` (conf/model/clip_*.yaml) for ``task_names``."""
    family = cfg.get("experts")
    if family not in FAMILIES:
        raise ValueError(
            f"model {cfg.get('name')!r}: unknown experts family {family!r}; "
            f"valid: {', '.join(FAMILIES)}"
        )
    for task in task_names:
        _location(cfg, family, task)  # bad names and missing experts fail before any download
    model, tokenizer, preprocess, name = load_pretrained(cfg)
    expected = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    if family == "hf_transformers":
        base = expert_state(cfg, family, None, expected, cache_dir)
        expected = {k: base[k] for k in expected}
        model.visual.load_state_dict(expected)
    experts = {
        task: expert_state(cfg, family, task, expected, cache_dir, base=expected)
        for task in tqdm(task_names, desc=f"{cfg.get('name')} experts", disable=not progress)
    }
    return ClipZoo(
        name=name, model=model, tokenizer=tokenizer, preprocess=preprocess,
        pretrained=expected, experts=experts,
    )  # fmt: skip
