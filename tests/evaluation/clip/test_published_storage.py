"""CLIP parameter counts and the methods' storage rules reproduce the TALL masks paper's
storage column (Wang et al., ICML 2024, Tables 1-2), as the task-vector pipeline computes it:
``merging.storage.storage_bits(spec.storage, T, *experts.param_counts)``."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pandas as pd
import pytest

from evaluation.clip.model import param_counts
from merging import method_spec
from merging.storage import STORAGE_RULES, storage_bits

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "results" / "reference" / "tall_masks_vision.csv"
FN = {"Zero-shot": "zeroshot", "Weight averaging": "weight_averaging",
      "Task arithmetic": "task_arithmetic", "TIES": "ties", "Consensus TA": "consensus",
      "Consensus TIES": "consensus", "Fine-tuned": "finetuned",
      "Magnitude pruning": "magnitude_pruning", "Magnitude masking": "magnitude_masking",
      "TALL mask + TA": "tall_masks", "TALL mask + TIES": "tall_masks"}  # fmt: skip


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-L-14"])
def test_published_storage_is_reproduced(arch):
    counts = param_counts(open_clip.create_model(arch, device="meta"))
    if arch == "ViT-B-32":
        assert round(counts[0] / 1e6, 1) == 113.4 and round(counts[1] / 1e6, 1) == 87.8
    # the text-side entries of the authors' ImageEncoder (results/fidelity.md)
    assert counts[0] - counts[1] == {"ViT-B-32": 25_599_489, "ViT-L-14": 38_595_841}[arch]
    published = pd.read_csv(REFERENCE, dtype={"storage_gbit": str})
    rows = published[published.model == arch]
    assert len(rows) == 33
    for row in rows.itertuples():
        rule = method_spec(FN[row.method]).storage
        gbit = storage_bits(rule, row.num_tasks, *counts) / 1e9
        bound = ">" if STORAGE_RULES[rule].lower_bound else ""
        assert row.storage_gbit == f"{bound}{gbit:.1f}", row
