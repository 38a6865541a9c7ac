"""1-bit mask storage (merging.masks): packing, unpacking, and task vectors stored as a
(scaled) mask of a shared vector."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from merging import pack_masks, storage_bits, unpack_masks
from merging.masks import MaskedVector, PackedMask, pack_mask, unpack_mask

shapes = st.lists(
    st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4
)


@settings(max_examples=30, deadline=None)
@given(shapes=shapes, seed=st.integers(0, 10**6), density=st.floats(0.0, 1.0))
def test_masks_round_trip_bit_exactly(shapes, seed, density) -> None:
    g = torch.Generator().manual_seed(seed)
    masks = {f"m{i}": torch.rand(s, generator=g) < density for i, s in enumerate(shapes)}
    packed = pack_masks(masks)
    back = unpack_masks(packed)
    assert list(back) == list(masks)
    for key, m in masks.items():
        assert back[key].dtype == torch.bool and back[key].shape == m.shape
        assert torch.equal(back[key], m)
    assert storage_bits(packed) == sum(8 * math.ceil(m.numel() / 8) for m in masks.values())


def test_packed_masks_are_one_bit_per_weight() -> None:
    packed = pack_mask(torch.ones(1001, 17, dtype=torch.bool))
    assert len(packed.data) == 1001 * 17 // 8 + 1
    assert storage_bits({"w": packed}) == 8 * len(packed.data)


def test_pack_rejects_non_boolean_and_unpack_rejects_truncated_data() -> None:
    with pytest.raises(TypeError, match="'w'"):
        pack_masks({"w": torch.ones(3)})
    with pytest.raises(ValueError, match="'w'"):
        unpack_masks({"w": PackedMask((20,), b"\x00")})


def test_masked_vector_reads_mask_times_vector() -> None:
    vector = {"w": torch.tensor([1.0, -2.0, 3.0], dtype=torch.float16), "n": torch.tensor(4)}
    masked = MaskedVector(vector, {"w": pack_mask(torch.tensor([True, False, True]))})
    assert list(masked) == ["w", "n"] and len(masked) == 2
    assert masked["w"].dtype == torch.float16 and masked["w"].tolist() == [1.0, 0.0, 3.0]
    assert masked["n"] is vector["n"]
    assert torch.equal(unpack_mask(masked.masks["w"]), torch.tensor([True, False, True]))


def test_masked_vector_scales_then_casts() -> None:
    vector = {"w": torch.tensor([1.0, -3.0, 0.5]), "n": torch.tensor(4)}
    masked = MaskedVector(
        vector, {"w": pack_mask(torch.tensor([True, True, False]))}, scale=1.5,
        dtypes={"w": torch.float16},
    )  # fmt: skip
    assert masked["w"].dtype == torch.float16 and masked["w"].tolist() == [1.5, -4.5, 0.0]
    assert masked["n"] is vector["n"]
