"""A transformers BERT encoder used as a sentence encoder, as sentence-transformers'
all-MiniLM-L6-v2 is (``modules.json``: Transformer, mean Pooling, Normalize): the embedding
of a text is the mean of its last hidden states over its tokens, L2-normalised
(Reimers and Gurevych, EMNLP 2019). Texts are tokenised once (truncated to ``max_length``
tokens) and batched by length, so a batch is padded only to its longest text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.cache import file_sha256, json_digest
from evaluation.checkpoints import CheckpointError
from evaluation.real import sources

Tensor = torch.Tensor


def locate(pretrained: str, cache_dir: str | os.PathLike | None) -> tuple[str, str]:
    """(what transformers loads, an identity of the weights) for ``pretrained``: a registry
    source (converted into the cache, identified by its model file's SHA-256), a local
    directory (by its files' names, sizes and SHA-256 of the weights) or a hub id."""
    if pretrained in sources.sources():
        directory = sources.converted(pretrained, cache_dir)
        return str(directory), f"source:{pretrained}:{_weights_digest(directory)}"
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path), f"dir:{path.resolve()}:{_weights_digest(path)}"
    return pretrained, f"hub:{pretrained}"


def _weights_digest(directory: Path) -> str:
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return json_digest([(p.name, file_sha256(p)) for p in files])[:16]


def load_encoder(
    location: str,
    revision: str | None,
    where: str,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[nn.Module, Any]:
    """The encoder (float32, eval mode, pooler removed: mean pooling replaces it) and its
    tokenizer from a hub id or local directory; errors name ``where`` and, for a hub id,
    the command that fetches the registry's copy into the cache at ``cache_dir``."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(location, revision=revision, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(location, revision=revision)
    except (OSError, ValueError) as err:
        hint = (
            ""
            if Path(location).is_dir()
            else (
                " Without network access use the registry's copy (model.pretrained=minilm; "
                f"{sources.get_source('minilm').fetch_hint(cache_dir)}) or a local directory."
            )
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{where}: cannot load {location!r} ({first}).{hint}") from err
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model.eval(), tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, ``[CLS] ... [SEP]``, truncated to ``max_length``."""
    if not texts:
        return []
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def pad(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input ids, attention mask), both int64 (B, longest)."""
    longest = max(len(x) for x in ids)
    out = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), longest), dtype=torch.long)
    for row, x in enumerate(ids):
        out[row, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[row, : len(x)] = 1
    return out, mask


def by_length(
    ids: Sequence[Sequence[int]], batch_size: int, max_tokens: int | None = None
) -> Iterator[list[int]]:
    """Indices of ``ids`` in batches, shortest texts first: at most ``batch_size`` texts and,
    if ``max_tokens`` is given, at most ``max_tokens`` tokens once padded to the batch's
    longest text (a text longer than ``max_tokens`` gets a batch of its own). Small batches
    of texts of similar length waste little on padding (the cost of a forward pass is about
    proportional to the padded tokens)."""
    if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size={batch_size}, max_tokens={max_tokens}: must be >= 1")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batch: list[int] = []
    budget = max_tokens if max_tokens is not None else float("inf")
    for i in order:
        if batch and (len(batch) == batch_size or (len(batch) + 1) * len(ids[i]) > budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def embed(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean-pooled, L2-normalised last hidden states (B, hidden)."""
    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return F.normalize(pooled.float(), dim=-1)


def autocast(device: torch.device, dtype: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` (``bfloat16``, ``float16``) on ``device``, or nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, dtype))


@torch.no_grad()
def embeddings(
    model: nn.Module,
    ids: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    device: str,
    max_tokens: int | None = None,
) -> Tensor:
    """Embeddings (N, hidden) of tokenised texts, in their order (float32, no dropout),
    computed in length-sorted batches (:func:`by_length`)."""
    out = torch.empty(len(ids), model.config.hidden_size)
    for batch in by_length(ids, batch_size, max_tokens):
        x, mask = pad([ids[i] for i in batch], pad_id)
        out[batch] = embed(model, x.to(device), mask.to(device)).cpu()
    return out
