"""Exact streaming top-k (merging.selection), in both counts: exactly ceil(density N), and
the authors' (int((N + extra) density) + 1, every tie kept)."""

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.merging.methods.sparse_references as ref
from merging import TaskVectors, merge
from merging.selection import authors_kept_count, kept_count, topk_masks


def random_task_vector(
    shapes: list[tuple[int, ...]], dtype: torch.dtype, levels: int, seed: int
) -> dict[str, torch.Tensor]:
    """Keys ``k0, k1, ...`` of random values, or (``levels`` > 0) of few multiples of 1/4:
    many equal magnitudes, zeros among them."""
    g = torch.Generator().manual_seed(seed)
    tv = {}
    for i, shape in enumerate(shapes):
        x = torch.randn(shape, generator=g)
        if levels:
            x = torch.randint(-levels, levels + 1, shape, generator=g).float() / 4
        tv[f"k{i}"] = x.to(dtype)
    return tv


def reference_topk(flat: torch.Tensor, k: float) -> torch.Tensor:
    """Top ceil(k * P) of |flat| (k read as a decimal), ties to the earliest index."""
    n = math.ceil(Fraction(str(k)) * flat.numel())
    order = torch.sort(flat.float().abs(), descending=True, stable=True).indices
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:n]] = True
    return mask


def streamed_flat_mask(tv: dict[str, torch.Tensor], k: float) -> torch.Tensor:
    (sel,) = topk_masks(TaskVectors([tv]), k)
    keys = [key for key, x in tv.items() if x.is_floating_point()]
    return torch.cat([sel.mask(key, tv[key].float()).flatten() for key in keys])


def test_kept_count_rounds_up_but_ignores_float_noise() -> None:
    assert kept_count(0.2, 10) == 2  # 0.2 * 10 is 2.0000000000000004 in floats
    assert kept_count(0.7, 10) == 7
    assert kept_count(0.25, 10) == 3
    assert kept_count(0.1, 3) == 1
    assert kept_count(1.0, 12345) == 12345
    assert kept_count(1e-9, 10**6) == 1


def test_hand_example_with_ties_across_keys() -> None:
    # magnitudes a = [3, 1, 2], b = [2, 2, 0.5]. Keep 3 of 6: the 3, a's 2, then b's first 2
    # (ties go to the earlier key, then the earlier index); keep 4: both of b's 2s.
    tv = {"a": torch.tensor([3.0, -1.0, 2.0]), "b": torch.tensor([-2.0, 2.0, 0.5])}
    assert streamed_flat_mask(tv, 0.5).tolist() == [True, False, True, True, False, False]
    assert streamed_flat_mask(tv, 4 / 6).tolist() == [True, False, True, True, True, False]
    assert streamed_flat_mask(tv, 1 / 6).tolist() == [True, False, False, False, False, False]
    assert all(streamed_flat_mask(tv, 1.0).tolist())


def test_zero_and_negative_zero_rank_equal() -> None:
    tv = {"a": torch.tensor([0.0, -0.0, 0.0, 1.0])}
    assert streamed_flat_mask(tv, 0.75).tolist() == [True, True, False, True]


shapes = st.lists(
    st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4
)


@settings(max_examples=40, deadline=None)
@given(
    shapes=shapes,
    k=st.sampled_from([0.01, 0.1, 0.2, 0.37, 0.5, 0.9, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    levels=st.sampled_from([0, 3, 50]),
    seed=st.integers(0, 10**6),
)
def test_streamed_topk_equals_sorted_reference(shapes, k, dtype, levels, seed) -> None:
    """Random tensors, or few distinct magnitudes (many ties), in several dtypes."""
    tv = random_task_vector(shapes, dtype, levels, seed)
    flat = torch.cat([x.flatten() for x in tv.values()])
    expected = reference_topk(flat, k)
    actual = streamed_flat_mask(tv, k)
    assert torch.equal(actual, expected)
    assert int(actual.sum()) == math.ceil(Fraction(str(k)) * flat.numel())


def test_large_tensor_wide_magnitude_range_and_many_ties() -> None:
    g = torch.Generator().manual_seed(0)
    tv = {
        "w": torch.randn(300, 257, generator=g) * torch.logspace(-20, 20, 257),
        "same": torch.full((1000,), 0.5),
        "b": torch.randn(77, generator=g),
    }
    flat = torch.cat([x.flatten() for x in tv.values()])
    for k in (0.013, 0.2, 0.999):
        assert torch.equal(streamed_flat_mask(tv, k), reference_topk(flat, k))


@pytest.mark.parametrize("count", ["exact", "authors"])
@pytest.mark.parametrize(
    "band", [(0, 0, 10**5), (2**31 - 1, 2**31 - 1, 10**5), (0, 2**31 - 1, 0), "sampled"]
)
def test_sampled_band_or_radix_fallback_selects_the_same(monkeypatch, count, band) -> None:
    """The threshold is found from the entries in a band bracketing it; where the band
    misses (forced here, both sides) or holds more entries than its limit, the radix select
    over the whole task gives the same selection, ties included, in several tasks."""
    import merging.selection as selection

    g = torch.Generator().manual_seed(1)
    tvs = [
        {
            "w": torch.randint(-6, 7, (120, 90), generator=g).float() / 3,
            "same": torch.full((500,), 1.0),
            "b": torch.randn(2000, generator=g),
        }
        for _ in range(3)
    ]
    with monkeypatch.context() as m:  # the reference: the radix select (the band always misses)
        m.setattr(selection, "_band", lambda sample, n, total: (0, 0, 10**5))
        expected = [
            [sel.mask(k, tv[k]) for k in tv]
            for sel, tv in zip(topk_masks(TaskVectors(tvs), 0.3, count=count), tvs, strict=True)
        ]
    resolved = []
    in_band = selection._resolve_in_band
    monkeypatch.setattr(selection, "_resolve_in_band", lambda *a: resolved.append(1) or in_band(*a))
    if band != "sampled":
        monkeypatch.setattr(selection, "_band", lambda sample, n, total: band)
    for sel, tv, masks in zip(
        topk_masks(TaskVectors(tvs), 0.3, count=count), tvs, expected, strict=True
    ):
        for key, mask in zip(tv, masks, strict=True):
            assert torch.equal(sel.mask(key, tv[key]), mask), key
        flat = torch.cat([x.flatten() for x in tv.values()])
        if count == "exact":
            assert torch.equal(torch.cat([m.flatten() for m in masks]), reference_topk(flat, 0.3))
    if band == "sampled":
        assert len(resolved) == len(tvs)  # every task's threshold came from its sampled band


def test_sample_that_fills_keeps_every_other_entry(monkeypatch) -> None:
    """A sample capacity far below the entries (the stride doubles several times, down
    to one entry per key) still brackets the threshold or falls back: the same selection."""
    import merging.selection as selection

    monkeypatch.setattr(selection, "_SAMPLE_SIZE", 40)
    g = torch.Generator().manual_seed(2)
    tv = {f"k{i}": torch.randn(n, generator=g) * (i + 1) for i, n in enumerate([5000, 3, 900])}
    flat = torch.cat(list(tv.values()))
    for k in (0.01, 0.2, 0.75):
        assert torch.equal(streamed_flat_mask(tv, k), reference_topk(flat, k))


def test_selection_is_per_task_and_skips_non_float_entries() -> None:
    tvs = [
        {"a": torch.tensor([1.0, 5.0]), "n": torch.tensor([9, 9]), "b": torch.tensor([2.0])},
        {"a": torch.tensor([-7.0, 0.1]), "n": torch.tensor([9, 9]), "b": torch.tensor([0.2])},
    ]
    s0, s1 = topk_masks(TaskVectors(tvs), 0.34)  # ceil(0.34 * 3) = 2 of 3 float entries
    assert (s0.kept, s0.total) == (2, 3)
    assert s0.mask("a", tvs[0]["a"]).tolist() == [False, True]
    assert s0.mask("b", tvs[0]["b"]).tolist() == [True]
    assert s1.mask("a", tvs[1]["a"]).tolist() == [True, False]
    assert s1.mask("b", tvs[1]["b"]).tolist() == [True]


def test_masking_is_stateless_and_deterministic() -> None:
    tv = {"a": torch.ones(5), "b": torch.ones(5)}
    (sel,) = topk_masks(TaskVectors([tv]), 0.7)
    first = [sel.mask("b", tv["b"]), sel.mask("a", tv["a"])]  # any order, any number of times
    again = [sel.mask("b", tv["b"]), sel.mask("a", tv["a"])]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert first[1].tolist() == [True] * 5 and first[0].tolist() == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_values_transform_is_ranked() -> None:
    tv = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    (sel,) = topk_masks(TaskVectors([tv]), 0.5, values=lambda t, key, x: -x.flip(0))
    assert sel.mask("a", -tv["a"].flip(0)).tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    "options, name",
    [
        ({"density": 0.0}, "'density'"),
        ({"density": -0.1}, "'density'"),
        ({"density": 1.5}, "'density'"),
        ({"count": "nearest"}, "'topk_count'"),
        ({"extra_entries": -3}, "'extra_entries'"),
    ],
)
def test_out_of_range_options_name_the_option(options: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        topk_masks(TaskVectors([{"a": torch.ones(3)}]), **{"density": 0.5, **options})


def test_nan_names_key_and_task() -> None:
    tvs = [{"a": torch.ones(3)}, {"a": torch.tensor([1.0, float("nan"), 0.0])}]
    with pytest.raises(ValueError, match=r"'a'.*task vector 1"):
        topk_masks(TaskVectors(tvs), 0.5)


# ---- the authors' count -------------------------------------------------------------------


def test_authors_kept_count() -> None:
    assert authors_kept_count(0.2, 10) == 3  # int(2.0000000000000004) + 1
    assert authors_kept_count(0.2, 10, extra_entries=10) == 5
    assert authors_kept_count(0.25, 10) == 3  # int(2.5) + 1 = ceil
    assert authors_kept_count(1.0, 7) == 8  # more than N: everything


def authors_flat_mask(tv: dict[str, torch.Tensor], density: float, extra: int) -> torch.Tensor:
    (sel,) = topk_masks(TaskVectors([tv]), density, count="authors", extra_entries=extra)
    keys = [key for key, x in tv.items() if x.is_floating_point()]
    return torch.cat([sel.mask(key, tv[key].float()).flatten() for key in keys])


@settings(max_examples=40, deadline=None)
@given(
    shapes=shapes,
    density=st.sampled_from([0.01, 0.1, 0.2, 0.37, 0.5, 0.9, 1.0]),
    extra=st.sampled_from([0, 1, 5, 40]),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    levels=st.sampled_from([0, 1, 3]),
    seed=st.integers(0, 10**6),
)
def test_streamed_authors_topk_equals_their_kthvalue_threshold(
    shapes, density, extra, dtype, levels, seed
) -> None:
    """Random tensors, or few distinct magnitudes (ties, zeros at the threshold)."""
    tv = random_task_vector(shapes, dtype, levels, seed)
    flat = torch.cat([x.float().flatten() for x in tv.values()])
    expected = ref.authors_topk_masks(flat.unsqueeze(0), density, extra)[0]
    actual = authors_flat_mask(tv, density, extra)
    assert torch.equal(actual, expected)
    (sel,) = topk_masks(TaskVectors([tv]), density, count="authors", extra_entries=extra)
    assert sel.kept == int(actual.sum()) and sel.total == flat.numel()


def test_extra_entries_count_in_authors_mode_only() -> None:
    tv = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    (exact,) = topk_masks(TaskVectors([tv]), 0.5, extra_entries=4)  # exact: extra ignored
    (authors,) = topk_masks(TaskVectors([tv]), 0.5, count="authors", extra_entries=4)
    assert exact.mask("a", tv["a"]).tolist() == [True, True, False, False]
    assert authors.mask("a", tv["a"]).tolist() == [True, True, True, True]  # int(4) + 1 = 5


@pytest.mark.parametrize("count", ["exact", "authors"])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.5, 0.97, 1.0])
def test_trim_is_the_masked_product(count: str, density: float) -> None:
    """``TopK.trim`` (hardshrink, then the tie quota) equals ``x * mask`` in value, with
    many ties (small integers, zeros included) spread over keys."""
    gen = torch.Generator().manual_seed(0)
    tv = {
        "a": torch.randint(-3, 4, (40, 5), generator=gen).float(),
        "b": torch.randint(-3, 4, (17,), generator=gen).float() / 2,
        "c": torch.randn(30, generator=gen),
    }
    (sel,) = topk_masks(TaskVectors([tv]), density, count=count)
    for key, x in tv.items():
        out = torch.full_like(x, float("nan"))
        trimmed = sel.trim(key, x, out)
        assert trimmed is out
        assert torch.equal(trimmed, x * sel.mask(key, x)), key


def test_a_density_that_keeps_no_entry_keeps_none() -> None:
    tvs = [{"w": torch.randn(5)}, {"w": torch.randn(5)}]  # 1e-10 * 5 entries: 0 kept
    assert all(s.kept == 0 for s in topk_masks(TaskVectors(tvs), 1e-10))
    assert torch.equal(merge("ties", tvs, density=1e-10)["w"], torch.zeros(5))
    assert all(not tv["w"].any() for tv in merge("magnitude_pruning", tvs, density=1e-10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_of_a_transposed_tensor_with_ties_at_the_threshold(dtype) -> None:
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(-3, 4, (2, 64, 32), generator=g).to(dtype) / 4  # many ties
    transposed = [{"w": x.t()} for x in levels]
    contiguous = [{"w": x.t().contiguous()} for x in levels]
    for method in ("magnitude_pruning", "magnitude_masking"):
        for a, b in zip(merge(method, transposed, density=0.1),
                        merge(method, contiguous, density=0.1), strict=True):  # fmt: skip
            assert torch.equal(a["w"], b["w"])
