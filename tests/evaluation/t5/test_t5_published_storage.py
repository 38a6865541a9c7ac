"""The storage column of the TALL masks paper's NLP table (Wang et al., ICML 2024) is exactly
that of a T5 v1.1-large / Flan-T5-large (untied LM head, N = 783,150,080 parameters) with one
32128 x 1024 matrix left out of the merge (N_m = 750,251,008), as the T5 zoo counts with
``model.unmerged=[<that matrix>]``; T5-large v1.0 (tied head, 737,668,096) fits no cell."""

from __future__ import annotations

import pandas as pd
import torch

from merging import method_spec
from merging.storage import STORAGE_RULES, storage_bits
from tests.evaluation.t5.conftest import ROOT

COLUMNS = {"7 NLP tasks": 7, "8 QA tasks": 8, "All 11 tasks": 11}
FN = {"Zero-shot": "zeroshot", "Weight averaging": "weight_averaging",
      "Task arithmetic": "task_arithmetic", "TIES": "ties", "Consensus TA": "consensus",
      "Consensus TIES": "consensus", "Fine-tuned": "finetuned",
      "Magnitude pruning": "magnitude_pruning", "Magnitude masking": "magnitude_masking",
      "TALL mask + TA": "tall_masks", "TALL mask + TIES": "tall_masks"}  # fmt: skip


def large(**extra) -> int:
    """Parameters of a T5-large architecture (meta device, no weights), LM head untied."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(d_model=1024, num_layers=24, num_heads=16, d_kv=64, **extra)
    with torch.device("meta"):
        model = T5ForConditionalGeneration(config)
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return sum(p.numel() for p in model.parameters())


def cells(n: int, n_merged: int) -> list[bool]:
    published = pd.read_csv(ROOT / "results/reference/tall_masks_nlp.csv", dtype=str)
    out = []
    for row in published.itertuples():
        rule = method_spec(FN[row.method]).storage
        gbit = storage_bits(rule, COLUMNS[row.benchmark_column], n, n_merged) / 1e9
        bound = ">" if STORAGE_RULES[rule].lower_bound else ""
        out.append(row.storage_gbit == f"{bound}{gbit:.1f}")
    return out


def test_published_nlp_storage_is_a_v1_1_large_with_one_matrix_unmerged():
    n = large(d_ff=2816, feed_forward_proj="gated-gelu")
    assert n == 783_150_080
    assert all(cells(n, n - 32128 * 1024))  # all 33 cells
    assert not all(cells(n, n))  # the whole model merged: the experts' cells differ
    v1 = large(d_ff=4096) - 32128 * 1024  # T5-large v1.0 ties its head: one matrix fewer
    assert v1 == 737_668_096 and not any(cells(v1, v1))
