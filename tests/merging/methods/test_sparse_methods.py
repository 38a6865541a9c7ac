"""TIES, DARE, magnitude pruning/masking, TALL masks and Consensus: hand-computed cases,
equality with the flatten-everything references in sparse_references.py, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.merging.methods.sparse_references as ref
from merging import merge, method_spec, pack_masks, tall_masks_of, unpack_masks
from merging.methods.consensus import TALL_MASKS_OPTIONS
from merging.methods.dare import drop_and_rescale
from merging.methods.tall_masks import TallMaskRule

StateDict = dict[str, torch.Tensor]
T = torch.tensor


def make_tvs(
    num_tasks: int,
    shapes: list[tuple[int, ...]],
    dtype: torch.dtype = torch.float32,
    levels: int = 0,
    seed: int = 0,
) -> list[StateDict]:
    """Random task vectors with an integer buffer in the middle; ``levels`` > 0 draws
    values from a few multiples of 1/4 (many equal magnitudes)."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        if levels:
            return (torch.randint(-levels, levels + 1, shape, generator=g).float() / 4).to(dtype)
        return torch.randn(shape, generator=g).to(dtype)

    tvs = []
    for _ in range(num_tasks):
        tv = {f"p{i}": draw(s) for i, s in enumerate(shapes)}
        tv["bn.num_batches_tracked"] = T(11)
        tv["last"] = draw((3,))
        tvs.append(tv)
    return tvs


def assert_state_close(actual, expected: StateDict) -> None:
    assert list(actual.keys()) == list(expected.keys())
    for key, e in expected.items():
        a = actual[key]
        assert a.dtype == e.dtype and a.shape == e.shape, key
        if e.is_floating_point():
            torch.testing.assert_close(a, e, msg=key)
        else:
            assert torch.equal(a, e), key


def values(tv) -> dict[str, list]:
    return {key: x.tolist() for key, x in tv.items()}


# ---- hand-computed examples -------------------------------------------------------------

THREE = [{"w": T([1.0, -2.0, 3.0])}, {"w": T([3.0, 2.0, -1.0])}, {"w": T([-1.0, 1.0, -1.0])}]


def test_ties_by_hand() -> None:
    # k = 1: nothing trimmed; signs of the sums [3, 1, 1] are all +.
    assert merge("ties", THREE, density=1.0)["w"].tolist() == [2.0, 1.5, 3.0]
    assert merge("ties", THREE, density=1.0, agg="sum")["w"].tolist() == [4.0, 3.0, 3.0]
    # k = 0.6 keeps 2 of 3 per task: [0, -2, 3], [3, 2, 0], [-1, 1, 0] (a tie: earliest wins).
    assert merge("ties", THREE, density=0.6)["w"].tolist() == [3.0, 1.5, 3.0]
    assert merge("ties", THREE, density=0.6, agg="sum")["w"].tolist() == [3.0, 3.0, 3.0]


def test_ties_zero_sum_and_global_trim_by_hand() -> None:
    tvs = [
        {"a": T([1.0, -2.0, 3.0, 0.0]), "b": T([[0.5, -4.0]]), "n": T([3])},
        {"a": T([-1.0, 2.0, 1.0, 1.0]), "b": T([[2.0, 1.0]]), "n": T([3])},
    ]
    # task 0 keeps 4, 3, 2 (over both keys); task 1 keeps 2, 2 and its first 1.
    out = merge("ties", tvs, density=0.5)
    assert values(out) == {"a": [-1.0, 0.0, 3.0, 0.0], "b": [[2.0, -4.0]], "n": [3]}


TWO = [{"w": T([1.0, -2.0]), "n": T(5)}, {"w": T([3.0, 1.0]), "n": T(5)}]


def test_tall_masks_by_hand() -> None:
    # tau_MTL = [4, -1]; lam 0.5: m_1 = [1 >= 1.5, 2 >= 0.5], m_2 = [3 >= 0.5, 1 >= 1].
    out = merge("tall_masks", TWO, lam=0.5)
    assert [values(o) for o in out] == [{"w": [0.0, -1.0], "n": 5}, {"w": [4.0, -1.0], "n": 5}]
    masks = tall_masks_of(TWO, 0.5)
    assert [m["w"].tolist() for m in masks] == [[False, True], [True, True]]
    # per-task lambdas: lam_2 = 2 drops task 2's second weight (1 < 2 * 2).
    masks = tall_masks_of(TWO, [0.5, 2.0])
    assert [m["w"].tolist() for m in masks] == [[False, True], [True, False]]


def test_consensus_by_hand() -> None:
    # votes from the masks above: [1, 2].
    assert merge("consensus", TWO, lam=0.5)["w"].tolist() == [0.0, -1.0]
    assert merge("consensus", TWO, lam=0.5, k=1)["w"].tolist() == [4.0, -1.0]
    assert merge("consensus", TWO, lam=0.5, k=0)["w"].tolist() == [4.0, -1.0]
    with pytest.raises(ValueError, match="from 0 to the number of tasks"):
        merge("consensus", TWO, lam=0.5, k=3)  # above T nothing is kept: refused
    assert merge("consensus", TWO, lam=0.5)["n"].tolist() == 5


PAIR = [{"a": T([1.0, -4.0]), "b": T([2.0])}, {"a": T([3.0, 0.5]), "b": T([-0.1])}]


def test_magnitude_pruning_and_masking_by_hand() -> None:
    # k = 0.5 keeps 2 of 3 per task: task 1 keeps -4 and 2; task 2 keeps 3 and 0.5.
    pruned = merge("magnitude_pruning", PAIR, density=0.5)
    assert [values(o) for o in pruned] == [
        {"a": [0.0, -4.0], "b": [2.0]},
        {"a": [3.0, 0.5], "b": [0.0]},
    ]
    # the same masks applied to tau_MTL = {a: [4, -3.5], b: [1.9]}.
    masked = merge("magnitude_masking", PAIR, density=0.5)
    assert values(masked[0]) == {"a": [0.0, -3.5], "b": [pytest.approx(1.9)]}
    assert values(masked[1]) == {"a": [4.0, -3.5], "b": [0.0]}


def test_dare_drops_and_rescales() -> None:
    tv = {"w": torch.ones(20000), "n": T(2)}
    assert torch.equal(merge("dare", [tv, tv], p=0.0)["w"], torch.full((20000,), 2.0))
    out = merge("dare", [tv], p=0.75, seed=3)["w"]
    assert set(out.unique().tolist()) == {0.0, 4.0}
    assert abs((out == 0).float().mean().item() - 0.75) < 0.02
    assert torch.equal(out, merge("dare", [tv], p=0.75, seed=3)["w"])
    assert not torch.equal(out, merge("dare", [tv], p=0.75, seed=4)["w"])
    two = merge("dare", [tv, tv], p=0.5, seed=3)["w"]  # each task draws its own mask
    assert set(two.unique().tolist()) == {0.0, 2.0, 4.0}


def test_dare_draws_do_not_depend_on_read_order() -> None:
    tv = {"a": torch.randn(100), "b": torch.randn(50)}
    forward = merge("dare", [tv, tv], p=0.5, seed=1)
    backward = merge("dare", [{"b": tv["b"], "a": tv["a"]}] * 2, p=0.5, seed=1)
    assert all(torch.equal(forward[k], backward[k]) for k in tv)


# ---- equality with the flattened references ---------------------------------------------

shapes = st.lists(
    st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=3
)
dtypes = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
settings_ = settings(max_examples=25, deadline=None)


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(2, 5),
    dtype=dtypes,
    levels=st.sampled_from([0, 2]),
    k=st.sampled_from([0.1, 0.2, 0.55, 1.0]),
    agg=st.sampled_from(["mean", "sum"]),
    seed=st.integers(0, 10**6),
)
def test_ties_equals_reference(shapes, num_tasks, dtype, levels, k, agg, seed) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    expected = ref.unflatten(ref.ties(ref.flatten(tvs), k, agg), tvs[0])
    assert_state_close(merge("ties", tvs, density=k, agg=agg), expected)


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(2, 5),
    dtype=dtypes,
    levels=st.sampled_from([0, 2]),
    base=st.sampled_from(["ta", "ties"]),
    seed=st.integers(0, 10**6),
    data=st.data(),
)
def test_tall_masks_and_consensus_equal_reference(
    shapes, num_tasks, dtype, levels, base, seed, data
) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    lam = data.draw(
        st.one_of(
            st.sampled_from([0.0, 0.2, 0.6]),
            st.lists(st.floats(0, 2), min_size=num_tasks, max_size=num_tasks),
        )
    )
    lams = [lam] * num_tasks if isinstance(lam, float) else lam
    x = ref.flatten(tvs)
    mtl = ref.multitask(x, base, 0.2, "sum")
    masks = ref.tall_masks(x, mtl, lams)

    outs = merge("tall_masks", tvs, lam=lam, base=base)
    assert len(outs) == num_tasks
    for out, m in zip(outs, masks, strict=True):
        assert_state_close(out, ref.unflatten(mtl * m, tvs[0]))
    for got, m in zip(tall_masks_of(tvs, lam, base), masks, strict=True):
        assert torch.equal(torch.cat([v.flatten() for v in got.values()]), m)
        assert list(got) == ref.float_keys(tvs[0])

    k = data.draw(st.integers(0, num_tasks))
    expected = ref.unflatten(mtl * (masks.sum(0) >= k), tvs[0])
    assert_state_close(merge("consensus", tvs, k=k, lam=lam, base=base), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("comparison", ["inclusive", "strict"])
def test_tall_mask_rule_is_the_formula_bit_for_bit(dtype, comparison) -> None:
    """float32 on the CPU runs through numpy, anything else through torch (as on a GPU):
    both give the formula's torch result exactly, across blocks and per-task lambdas."""
    g = torch.Generator().manual_seed(0)
    n = 2 * (1 << 18) + 1000  # three blocks, the last one short
    taus = [(torch.randn(n, generator=g) * 1e-3).to(dtype) for _ in range(3)]
    taus[1][:50] = 0.0  # equal sides: |0| >= lam * |mtl - 0| only where mtl is 0 or lam 0
    mtl = taus[0] + taus[1] + taus[2]
    lams = [0.4, 0.23, 1.7]
    rule = TallMaskRule(lams, comparison)
    cmp = torch.gt if comparison == "strict" else torch.ge
    expected = [cmp(x.abs(), (mtl - x).abs() * lam) for x, lam in zip(taus, lams, strict=True)]
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):  # numpy's blocks split over torch's thread count
            torch.set_num_threads(threads)
            for m, e in zip(rule("key", taus, mtl), expected, strict=True):
                assert torch.equal(m, e)
            # the vote count without the masks: their sum, in uint8
            votes = rule.votes(taus, mtl)
            assert votes.dtype == torch.uint8
            assert torch.equal(votes, torch.stack(expected).sum(0).to(torch.uint8))
    finally:
        torch.set_num_threads(previous)


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(1, 4),
    dtype=dtypes,
    levels=st.sampled_from([0, 2]),
    k=st.sampled_from([0.1, 0.3, 1.0]),
    seed=st.integers(0, 10**6),
)
def test_magnitude_pruning_and_masking_equal_reference(
    shapes, num_tasks, dtype, levels, k, seed
) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    x = ref.flatten(tvs)
    masks = ref.topk_masks(x, k)
    pruned = merge("magnitude_pruning", tvs, density=k)
    masked = merge("magnitude_masking", tvs, density=k)
    for t in range(num_tasks):
        assert_state_close(pruned[t], ref.unflatten(x[t] * masks[t], tvs[0]))
        assert_state_close(masked[t], ref.unflatten(x.sum(0) * masks[t], tvs[0]))


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(1, 4),
    dtype=dtypes,
    p=st.sampled_from([0.0, 0.3, 0.9]),
    base=st.sampled_from(["ta", "ties"]),
    seed=st.integers(0, 10**6),
)
def test_dare_equals_reference(shapes, num_tasks, dtype, p, base, seed) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, 0, seed)
    drop = drop_and_rescale(p, seed)
    dropped = [
        {key: drop(t, key, x.float()) if x.is_floating_point() else x for key, x in tv.items()}
        for t, tv in enumerate(tvs)
    ]
    x = ref.flatten(dropped)
    merged = x.sum(0) if base == "ta" else ref.ties(x, 0.3, "mean")
    out = merge("dare", tvs, p=p, seed=seed, base=base, density=0.3)
    assert_state_close(out, ref.unflatten(merged, tvs[0]))


# ---- equality with the restated authors' code (the authors' options) -------------------

AUTHORS = {"topk_count": "authors", "zero_sign": "majority"}
extras = st.sampled_from([0, 3, 40])


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(2, 5),
    dtype=dtypes,
    levels=st.sampled_from([0, 1, 2]),
    density=st.sampled_from([0.1, 0.2, 0.55, 1.0]),
    agg=st.sampled_from(["mean", "sum"]),
    extra=extras,
    seed=st.integers(0, 10**6),
)
def test_ties_with_authors_options_equals_their_code(
    shapes, num_tasks, dtype, levels, density, agg, extra, seed
) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    expected = ref.authors_ties(ref.flatten(tvs), density, agg, extra)
    out = merge("ties", tvs, density=density, agg=agg, extra_entries=extra, **AUTHORS)
    assert_state_close(out, ref.unflatten(expected, tvs[0]))


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(2, 5),
    dtype=dtypes,
    levels=st.sampled_from([0, 2]),
    base=st.sampled_from(["ta", "ties"]),
    extra=extras,
    seed=st.integers(0, 10**6),
    data=st.data(),
)
def test_tall_masks_and_consensus_with_authors_options_equal_their_code(
    shapes, num_tasks, dtype, levels, base, extra, seed, data
) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    lams = data.draw(st.lists(st.sampled_from([0.2, 0.3, 0.4, 0.5, 0.6]), min_size=num_tasks,
                              max_size=num_tasks))  # fmt: skip
    x = ref.flatten(tvs)
    mtl = ref.authors_multitask(x, base, 0.2, "sum", extra)
    masks = ref.tall_masks_strict(x, mtl, lams)
    options = {"base": base, "extra_entries": extra, "comparison": "strict", **AUTHORS}
    outs = merge("tall_masks", tvs, lam=lams, **options)
    for out, m in zip(outs, masks, strict=True):
        assert_state_close(out, ref.unflatten(mtl * m, tvs[0]))
    k = data.draw(st.integers(0, num_tasks))
    expected = ref.unflatten(mtl * (masks.sum(0) >= k), tvs[0])
    assert_state_close(merge("consensus", tvs, k=k, lam=lams, **options), expected)


@settings_
@given(
    shapes=shapes,
    num_tasks=st.integers(1, 4),
    dtype=dtypes,
    levels=st.sampled_from([0, 1, 2]),
    density=st.sampled_from([0.1, 0.3, 1.0]),
    extra=extras,
    seed=st.integers(0, 10**6),
)
def test_magnitude_pruning_and_masking_with_authors_count_equal_their_code(
    shapes, num_tasks, dtype, levels, density, extra, seed
) -> None:
    tvs = make_tvs(num_tasks, shapes, dtype, levels, seed)
    x = ref.flatten(tvs)
    masks = ref.authors_topk_masks(x, density, extra)
    options = {"density": density, "topk_count": "authors", "extra_entries": extra}
    pruned = merge("magnitude_pruning", tvs, **options)
    masked = merge("magnitude_masking", tvs, **options)
    for t in range(num_tasks):
        assert_state_close(pruned[t], ref.unflatten(x[t] * masks[t], tvs[0]))
        assert_state_close(masked[t], ref.unflatten(x.sum(0) * masks[t], tvs[0]))


def test_dare_ties_with_authors_options_equals_their_code() -> None:
    for seed in range(4):
        tvs = make_tvs(3, [(6, 7), (9,)], levels=2 * (seed % 2), seed=seed)
        drop = drop_and_rescale(0.4, seed)
        x = ref.flatten(
            [{k: drop(t, k, v) for k, v in tv.items() if v.is_floating_point()}
             for t, tv in enumerate(tvs)]
        )  # fmt: skip
        out = merge("dare", tvs, p=0.4, seed=seed, base="ties", extra_entries=5, **AUTHORS)
        assert_state_close(out, ref.unflatten(ref.authors_ties(x, 0.2, "mean", 5), tvs[0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dare_ties_on_half_inputs_ranks_the_float32_dropped_values(dtype) -> None:
    for seed in range(3):
        tvs = make_tvs(3, [(20, 30), (50,)], dtype, 0, seed)
        drop = drop_and_rescale(0.3, seed)
        x = ref.flatten(
            [
                {k: drop(t, k, v.float()) for k, v in tv.items() if v.is_floating_point()}
                for t, tv in enumerate(tvs)
            ]
        )
        out = merge("dare", tvs, p=0.3, seed=seed, base="ties", density=0.3)
        assert_state_close(out, ref.unflatten(ref.ties(x, 0.3, "mean"), tvs[0]))


def test_same_inputs_same_outputs_with_many_ties() -> None:
    tvs = make_tvs(4, [(6, 7), (7,), (2, 3, 3)], levels=1, seed=5)
    for name, opts in [
        ("ties", {"density": 0.3}),
        ("dare", {"p": 0.5, "base": "ties"}),
        ("consensus", {"base": "ties"}),
    ]:
        a, b = merge(name, tvs, **opts), merge(name, tvs, **opts)
        assert all(torch.equal(a[key], b[key]) for key in a), name
    for name in ["tall_masks", "magnitude_pruning", "magnitude_masking"]:
        a, b = merge(name, tvs), merge(name, tvs)
        assert all(torch.equal(x[key], y[key]) for x, y in zip(a, b, strict=True) for key in x), (
            name
        )


def test_consensus_votes_over_the_tall_masks_of_its_mapped_options() -> None:
    tvs = make_tvs(3, [(5, 4), (7,)], levels=2, seed=4)
    options = {"base": "ties", "ties_density": 0.4, "agg": "mean", "topk_count": "authors",
               "extra_entries": 6, "zero_sign": "majority", "comparison": "strict"}  # fmt: skip
    assert set(TALL_MASKS_OPTIONS) <= set(method_spec("consensus").hparams)
    assert set(TALL_MASKS_OPTIONS.values()) <= set(method_spec("tall_masks").hparams)
    tall = {TALL_MASKS_OPTIONS[k]: v for k, v in options.items()}
    lams = [0.2, 0.5, 0.3]
    outs = merge("tall_masks", tvs, lam=lams, **tall)
    out = merge("consensus", tvs, k=2, lam=lams, **options)
    mtl = merge("ties", tvs, **{k: v for k, v in tall.items() if k not in ("base", "comparison")})
    for key in ["p0", "p1", "last"]:
        votes = sum(unpack_masks(o.masks)[key].int() for o in outs)
        assert torch.equal(out[key], torch.where(votes >= 2, mtl[key], 0)), key


def test_task_specific_masks_round_trip_through_one_bit_storage() -> None:
    tvs = make_tvs(3, [(5, 9), (9,)], seed=2)
    masks = tall_masks_of(tvs, [0.2, 0.4, 0.6], base="ties", density=0.5, agg="mean")
    outs = merge("tall_masks", tvs, lam=[0.2, 0.4, 0.6], base="ties", density=0.5, agg="mean")
    for m, out in zip(masks, outs, strict=True):
        back = unpack_masks(pack_masks(m))
        assert all(torch.equal(back[key], m[key]) for key in m)
        stored = unpack_masks(out.masks)
        assert all(torch.equal(stored[key], m[key]) for key in m)


def test_device_option_runs_the_math_there() -> None:
    tvs = make_tvs(3, [(4, 5)], seed=1)
    for name in ["ties", "consensus", "dare"]:
        a, b = merge(name, tvs), merge(name, tvs, device="cpu")
        assert all(torch.equal(a[k], b[k]) for k in a)


# ---- bad input ---------------------------------------------------------------------------

GOOD = make_tvs(3, [(3, 4), (4,)], seed=0)


@pytest.mark.parametrize(
    "name, opts, option",
    [
        ("ties", {"density": 0.0}, "'density'"),
        ("ties", {"density": 1.5}, "'density'"),
        ("ties", {"agg": "median"}, "'agg'"),
        ("ties", {"topk_count": "ceil"}, "'topk_count'"),
        ("ties", {"extra_entries": -1}, "'extra_entries'"),
        ("ties", {"extra_entries": 2.5}, "'extra_entries'"),
        ("ties", {"zero_sign": "minority"}, "'zero_sign'"),
        ("magnitude_pruning", {"density": -0.1}, "'density'"),
        ("magnitude_pruning", {"topk_count": "all"}, "'topk_count'"),
        ("magnitude_masking", {"density": 2.0}, "'density'"),
        ("magnitude_masking", {"extra_entries": True}, "'extra_entries'"),
        ("dare", {"p": 1.0}, "'p'"),
        ("dare", {"p": -0.1}, "'p'"),
        ("dare", {"base": "tsv"}, "'base'"),
        ("dare", {"base": "ties", "density": 0.0}, "'density'"),
        ("dare", {"zero_sign": "one"}, "'zero_sign'"),
        ("tall_masks", {"lam": -0.1}, "'lam'"),
        ("tall_masks", {"lam": [0.2, 0.3]}, "'lam'"),
        ("tall_masks", {"base": "ties", "density": 1.01}, "'density'"),
        ("tall_masks", {"base": "mean"}, "'base'"),
        ("tall_masks", {"comparison": ">"}, "'comparison'"),
        ("tall_masks", {"topk_count": "nearest"}, "'topk_count'"),
        ("consensus", {"k": -1}, "'k'"),
        ("consensus", {"k": 1.5}, "'k'"),
        ("consensus", {"lam": [0.1, -0.2, 0.1]}, "'lam'"),
        ("consensus", {"lam": "from_tall_masks"}, "'lam'"),
        ("consensus", {"base": "ties", "ties_density": 0.0}, "'ties_density'"),
        ("consensus", {"agg": "max"}, "'agg'"),
        ("consensus", {"comparison": "gt"}, "'comparison'"),
        ("consensus", {"zero_sign": "majority!"}, "'zero_sign'"),
    ],
)
def test_out_of_range_options_name_the_option(name, opts, option) -> None:
    with pytest.raises(ValueError, match=option):
        merge(name, GOOD, **opts)


def test_tall_masks_of_checks_its_options() -> None:
    with pytest.raises(ValueError, match="'lam'"):
        tall_masks_of(GOOD, -1.0)
    with pytest.raises(TypeError, match="'alpha'"):
        tall_masks_of(GOOD, 0.3, alpha=2)
    with pytest.raises(ValueError, match="'comparison'"):
        tall_masks_of(GOOD, 0.3, comparison="ge")


@pytest.mark.parametrize("name", ["tall_masks", "consensus"])
def test_fewer_than_two_task_vectors(name) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        merge(name, GOOD[:1])


def test_tall_masks_of_needs_two_task_vectors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        tall_masks_of(GOOD[:1], 0.4)


METHODS = [
    "ties",
    "dare",
    "magnitude_pruning",
    "magnitude_masking",
    "tall_masks",
    "consensus",
]


def spoiled(key: str, value: torch.Tensor | None) -> list[StateDict]:
    bad = dict(GOOD[2])
    if value is None:
        del bad[key]
    else:
        bad[key] = value
    return [GOOD[0], GOOD[1], bad]


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize(
    "tvs, error, pattern",
    [
        (spoiled("p1", None), KeyError, r"task vector 2.*'p1'"),
        (spoiled("p1", torch.zeros(5)), ValueError, r"'p1'.*task vector 2"),
        (spoiled("p0", torch.zeros(3, 4, dtype=torch.float64)), TypeError, r"'p0'.*task vector 2"),
        (spoiled("last", T([0.0, float("nan"), 1.0])), ValueError, r"'last'.*task vector 2"),
        (spoiled("p0", torch.full((3, 4), float("inf"))), ValueError, r"'p0'.*task vector 2"),
    ],
)
def test_bad_task_vectors_name_key_and_task(name, tvs, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        out = merge(name, tvs)
        for tv in out if isinstance(out, list) else [out]:
            dict(tv)
