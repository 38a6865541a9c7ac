"""Scores ``theta_0 + alpha * tau`` of a T5 on prompted NLP tasks (the
:class:`evaluation.zoo.Evaluator` protocol).

* Rank classification (T0 / TIES-Merging; Sanh et al., ICLR 2022; Yadav et al., NeurIPS
  2023, ``T5Wrapper.predict_mulChoice``): the input is encoded once; each answer choice is
  scored by ``log p(choice | input) = sum_j log p(c_j | c_<j, input)`` over its tokens (EOS
  included, no length normalisation); the prediction is the best-scoring choice (the first
  on ties) and the metric is accuracy.
* Generation (GLUE, ROPES): greedy decoding of at most the task's ``max_new_tokens``
  tokens, decoded without special tokens, scored by :mod:`evaluation.t5.metrics`.

Changing alpha never re-merges: the merged task vector is computed once and each alpha only
rewrites the weights in place. The states hold one key per tied group
(:mod:`evaluation.t5.checkpoints`); writing it writes the group, and every load checks the
group is still one tensor. On CUDA the model runs under bfloat16 autocast (the TIES-Merging
T5 evaluation's ``use_bfloat16_during_eval``; ``model.autocast``), on the CPU in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from evaluation.t5.data import TokenisedSplit
from evaluation.t5.metrics import GENERATION_METRICS
from evaluation.t5.tasks import TaskSpec
from evaluation.zoo import write_task_vector

Tensor = torch.Tensor


def pad_batch(rows: Sequence[Sequence[int]], value: int) -> tuple[Tensor, Tensor]:
    """(ids, mask) of ``rows`` right-padded with ``value`` to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


class T5Evaluator:
    """Scores weights of one T5 on cached, tokenised task splits (module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        pretrained: Mapping[str, Tensor],
        tied: Sequence[Sequence[str]],
        splits: Mapping[tuple[str, str], TokenisedSplit],
        specs: Mapping[str, TaskSpec],
        batch_size: int = 64,
        device: str = "cpu",
        autocast: str | None = "bfloat16",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer, self.splits, self.specs = tokenizer, splits, specs
        self.batch_size = batch_size
        self.tied = [tuple(g) for g in tied]
        # a private copy: the model's parameters must not share storage with ``pretrained``
        self.pretrained = {k: v.detach().to(self.device, copy=True) for k, v in pretrained.items()}
        state = self.model.state_dict(keep_vars=True)
        missing = sorted(set(self.pretrained) - set(state))
        if missing:
            raise KeyError(f"pretrained state has key {missing[0]!r}, which the model lacks")
        self._params = {k: state[k] for k in self.pretrained}
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(autocast or "")
        self._autocast_dtype = dtype if self.device.type == "cuda" else None
        self.check_tied()

    def autocast(self) -> contextlib.AbstractContextManager:
        """The evaluation's autocast context (bfloat16 on CUDA unless disabled)."""
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self._autocast_dtype)

    def check_tied(self) -> None:
        """Raise unless every tied group of the model is still one tensor."""
        state = self.model.state_dict(keep_vars=True)
        for group in self.tied:
            first = state[group[0]]
            for key in group[1:]:
                if state[key].data_ptr() != first.data_ptr():
                    raise RuntimeError(f"{key} is no longer tied to {group[0]}")

    @torch.no_grad()
    def load(self, tau: Mapping[str, Tensor] | None, alpha: float = 1.0) -> None:
        """Set the model to ``theta_0 + alpha * tau`` (``tau=None``: ``theta_0``)."""
        write_task_vector(self._params, self.pretrained, tau, alpha)
        self.check_tied()

    @torch.no_grad()
    def accuracy(self, task: str, split: str) -> float:
        """The task's metric (%) of the loaded weights on its ``split``."""
        data, spec = self.splits[task, split], self.specs[task]
        if spec.generative:
            predictions = self.generate(data, spec.max_new_tokens)
            return GENERATION_METRICS[spec.metric](predictions, data.references)
        predicted = self.rank_classify(data)
        hits = sum(int(p == y) for p, y in zip(predicted, data.labels, strict=True))
        return 100.0 * hits / max(len(data), 1)

    def _batches(self, data: TokenisedSplit, rows: Sequence[int]) -> list[list[int]]:
        """Examples in order of decreasing input length (less padding), in batches of at most
        ``batch_size`` decoded sequences (one example at least)."""
        order = sorted(range(len(data)), key=lambda i: -len(data.inputs[i]))
        batches: list[list[int]] = [[]]
        used = 0
        for i in order:
            if batches[-1] and used + rows[i] > self.batch_size:
                batches.append([])
                used = 0
            batches[-1].append(i)
            used += rows[i]
        return [b for b in batches if b]

    def _shift_right(self, labels: Tensor) -> Tensor:
        """Decoder inputs of teacher forcing: the start token, then ``labels[:, :-1]``."""
        start = torch.full_like(labels[:, :1], self.model.config.decoder_start_token_id)
        return torch.cat([start, labels[:, :-1]], dim=1)

    def rank_classify(self, data: TokenisedSplit) -> list[int]:
        """The best-scoring answer choice of each example (module docstring)."""
        pad = self.model.config.pad_token_id
        predicted = [0] * len(data)
        for batch in self._batches(data, [len(c) for c in data.choices]):
            ids, mask = pad_batch([data.inputs[i] for i in batch], pad)
            ids, mask = ids.to(self.device), mask.to(self.device)
            owner = torch.tensor(
                [k for k, i in enumerate(batch) for _ in data.choices[i]], device=self.device
            )
            labels, label_mask = pad_batch([c for i in batch for c in data.choices[i]], pad)
            labels, label_mask = labels.to(self.device), label_mask.to(self.device)
            with self.autocast():
                encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
                hidden = encoded.last_hidden_state[owner]
                logits = self.model(
                    encoder_outputs=(hidden,), attention_mask=mask[owner],
                    decoder_input_ids=self._shift_right(labels),
                ).logits  # fmt: skip
            token_logp = -F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
            scores = (token_logp * label_mask).sum(-1).cpu()
            start = 0
            for i in batch:
                n = len(data.choices[i])
                predicted[i] = int(scores[start : start + n].argmax())
                start += n
        return predicted

    def generate(self, data: TokenisedSplit, max_new_tokens: int) -> list[str]:
        """Greedy generations of every example, decoded without special tokens."""
        from transformers import GenerationConfig

        config = self.model.config
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            decoder_start_token_id=config.decoder_start_token_id,
            eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        )  # fmt: skip
        out = [""] * len(data)
        for batch in self._batches(data, [1] * len(data)):
            ids, mask = pad_batch([data.inputs[i] for i in batch], config.pad_token_id)
            with self.autocast():
                tokens = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                    generation_config=generation,
                )  # fmt: skip
            for i, text in zip(batch, self.tokenizer.batch_decode(tokens, skip_special_tokens=True),
                               strict=True):  # fmt: skip
                out[i] = text
        return out
