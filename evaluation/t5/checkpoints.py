"""T5 checkpoints: transformers models, tied weights, and PEFT LoRA adapters made dense.

Tied weights. T5 ties ``shared.weight``, ``encoder.embed_tokens.weight`` and
``decoder.embed_tokens.weight`` (one embedding), and the original T5 (v1.0) ties
``lm_head.weight`` to them as well; T5 v1.1 / Flan-T5 keep a separate LM head. A tied group
is one parameter: the zoo keeps only its first key (in state-dict order, ``shared.weight``)
in every state it hands to merging, so a merge sees it once (one mask, counted once in any
top-k), and writing that key into the model writes the whole group, which stays tied.

LoRA (Hu et al., ICLR 2022; PEFT's ``LoraModel``): an adapter with rank ``r``, scaling
``alpha`` and matrices ``A`` (r, in), ``B`` (out, r) on a linear layer changes its weight by
``B A * alpha / r`` (``alpha / sqrt(r)`` with rsLoRA; transposed with ``fan_in_fan_out``); on
an embedding (``lora_embedding_A`` (r, num), ``_B`` (dim, r)) by ``(B A)^T * alpha / r``.
``rank_pattern`` / ``alpha_pattern`` override ``r`` / ``alpha`` per module as in PEFT
(``(.*\\.)?<pattern>$``). Other adapter entries (``modules_to_save``, trained biases)
replace the base weight. DoRA adapters are refused (not a low-rank sum).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from evaluation.checkpoints import CheckpointError, read_state_dict, resolve_file

Tensor = torch.Tensor
PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = ("adapter_config.json",)
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
_LORA = re.compile(r"(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight")
_LORA_EMBEDDING = re.compile(r"(?P<module>.+)\.lora_embedding_(?P<part>A|B)(?:\.[^.]+)?")


def tied_groups(model: torch.nn.Module) -> list[tuple[str, ...]]:
    """Groups (of two keys or more) of the state-dict entries of ``model`` that are one
    tensor (same storage, offset, shape and strides), each in state-dict order."""
    groups: dict[tuple, list[str]] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(),
                 tuple(value.shape), tuple(value.stride()))  # fmt: skip
        groups.setdefault(ident, []).append(key)
    return [tuple(keys) for keys in groups.values() if len(keys) > 1]


def aliases(groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Every non-first key of a tied group -> the group's first key."""
    return {key: group[0] for group in groups for key in group[1:]}


def unique_state(state: Mapping[str, Tensor], groups: Sequence[Sequence[str]]) -> dict:
    """``state`` with one entry per tied group (its first key)."""
    alias = aliases(groups)
    return {k: v for k, v in state.items() if k not in alias}


def check_tied(state: Mapping[str, Tensor], groups: Sequence[Sequence[str]], where: str) -> None:
    """Raise unless every tied group holds equal tensors in ``state`` (a checkpoint that
    unties what the pretrained model ties cannot be merged as one parameter)."""
    for group in groups:
        first = state[group[0]]
        for key in group[1:]:
            if not torch.equal(state[key], first):
                raise CheckpointError(
                    f"{where}: {key} differs from {group[0]}, which the pretrained model ties "
                    "to it; an expert must keep tied weights tied"
                )


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's per-module override: the first pattern ``p`` with ``(.*\\.)?p$`` matching."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def lora_delta(
    adapter: Mapping[str, Tensor],
    config: Mapping[str, Any],
    base: Mapping[str, Tensor],
    where: str = "LoRA adapter",
) -> dict[str, Tensor]:
    """Dense weight changes (float32) of a PEFT LoRA ``adapter`` with ``config``
    (``adapter_config.json``) for a model with state ``base`` (module docstring); entries
    that replace a base weight come back as ``new - base``. Errors name the key."""
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise CheckpointError(f"{where}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise CheckpointError(f"{where}: DoRA adapters are not a low-rank sum; not supported")
    pairs: dict[tuple[str, bool], dict[str, Tensor]] = {}
    delta: dict[str, Tensor] = {}
    for raw_key, value in adapter.items():
        key = raw_key[len(PEFT_PREFIX) :] if raw_key.startswith(PEFT_PREFIX) else raw_key
        if "lora_magnitude_vector" in key:
            raise CheckpointError(f"{where}: {raw_key} is a DoRA entry; not supported")
        if m := _LORA.fullmatch(key):
            pairs.setdefault((m["module"], False), {})[m["part"]] = value
        elif m := _LORA_EMBEDDING.fullmatch(key):
            pairs.setdefault((m["module"], True), {})[m["part"]] = value
        else:
            name = key.replace(".modules_to_save.default.", ".")
            if name not in base:
                raise CheckpointError(f"{where}: {raw_key} is neither LoRA nor a model weight")
            delta[name] = value.float() - base[name].float()
    for (module, embedding), parts in pairs.items():
        if sorted(parts) != ["A", "B"]:
            raise CheckpointError(f"{where}: module {module} has lora_{list(parts)} only")
        a, b = parts["A"].float(), parts["B"].float()
        r = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha"))
        if r is None or alpha is None or a.shape[0] != int(r):
            raise CheckpointError(
                f"{where}: module {module}: A has rank {a.shape[0]}, the config r={r} "
                f"(lora_alpha={alpha})"
            )
        scale = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
        change = (b @ a) * scale
        if embedding or config.get("fan_in_fan_out"):
            change = change.T
        key = f"{module}.weight"
        if key not in base or base[key].shape != change.shape:
            shape = tuple(base[key].shape) if key in base else "absent"
            raise CheckpointError(
                f"{where}: LoRA of {module} gives a {tuple(change.shape)} change; the model's "
                f"{key} is {shape}"
            )
        delta[key] = delta.get(key, 0) + change.contiguous()
    if not delta:
        raise CheckpointError(f"{where}: the adapter holds no LoRA weights")
    return delta


def read_lora(repo: str, revision: str | None, where: str) -> tuple[dict, dict[str, Tensor]]:
    """(adapter config, adapter tensors) of a PEFT adapter: a local directory or hub repo."""
    config_path = resolve_file(repo, ADAPTER_CONFIG, revision, where)
    weights = resolve_file(repo, ADAPTER_WEIGHTS, revision, where)
    return json.loads(Path(config_path).read_text()), read_state_dict(weights, where=where)


def load_seq2seq(repo: str, revision: str | None, where: str) -> torch.nn.Module:
    """A transformers sequence-to-sequence model (float32, eval mode) from a hub repo or a
    local directory; errors name ``where`` and the way out when offline."""
    from transformers import AutoModelForSeq2SeqLM

    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(repo, revision=revision, dtype=torch.float32)
    except (OSError, ValueError) as err:
        local = Path(repo).expanduser().is_dir()
        hint = (
            ""
            if local
            else (
                " Without network access, download it elsewhere (huggingface-cli download "
                f"{repo}) and point the config at that local directory, or set HF_HUB_OFFLINE=1 "
                "if it is in the hub cache."
            )
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{where}: cannot load {repo!r} ({first}).{hint}") from err
    return model.eval()
