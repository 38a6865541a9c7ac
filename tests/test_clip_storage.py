"""Storage accounting reproduces the TALL masks paper's storage column."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pandas as pd
import pytest

from evaluation.storage import clip_param_counts, is_lower_bound, storage_bits

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference" / "tall_masks_vision.csv"
FN = {"Zero-shot": "zeroshot", "Weight averaging": "weight_averaging",
      "Task arithmetic": "task_arithmetic", "TIES": "ties", "Consensus TA": "consensus",
      "Consensus TIES": "consensus", "Fine-tuned": "finetuned",
      "Magnitude pruning": "magnitude_pruning", "Magnitude masking": "magnitude_masking",
      "TALL mask + TA": "tall_masks", "TALL mask + TIES": "tall_masks"}  # fmt: skip


@pytest.mark.parametrize("arch", ["ViT-B-32", "ViT-L-14"])
def test_published_storage_is_reproduced(arch):
    n_model, n_encoder = clip_param_counts(open_clip.create_model(arch, device="meta"))
    published = pd.read_csv(REFERENCE, dtype={"storage_gbit": str})
    rows = published[published.model == arch]
    assert len(rows) == 33
    for row in rows.itertuples():
        fn = FN[row.method]
        gbit = storage_bits(fn, {}, row.num_tasks, n_model, n_encoder) / 1e9
        assert row.storage_gbit == (">" if is_lower_bound(fn) else "") + f"{gbit:.1f}", row


def test_storage_rejects_impossible_counts():
    with pytest.raises(ValueError, match="storage of 'ties'"):
        storage_bits("ties", {}, 0, 10, 5)
    assert storage_bits("emr", {}, 4, 100, 50) == 32 * 100 + 32 * 50 + 4 * 50 + 32 * 4
