"""Wall time and peak memory of a block (the merge cost columns)."""

import torch

from evaluation.resources import Measured


def test_peak_memory_sees_a_short_lived_allocation():
    with Measured() as m:
        x = torch.ones(16 * 2**20)  # 64 MiB, freed before the block ends
        x.add_(1)
        del x
    assert m.seconds > 0
    assert 48 < m.peak_mib < 512
