"""EMR-Merging: hand-computed cases, the restated authors' code on random inputs, and the
properties the method relies on (signs, rescaled mass, 1-bit storage)."""

import pytest
import torch

import tests.merging.methods.sparse_references as ref
from merging import merge
from merging.masks import MaskedVector


def random_tvs(num_tasks: int, seed: int = 0, dtype=torch.float32) -> list[dict]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g).to(dtype)

    return [
        {
            "tall.weight": rand(12, 8),
            "tall.bias": rand(12),
            "conv.weight": rand(3, 2, 2, 2),
            "scale": rand(),
            "bn.num_batches_tracked": torch.tensor(7),
        }
        for _ in range(num_tasks)
    ]


def test_emr_hand_computed() -> None:
    # sum = [3, -1, 2, 0]: gamma = [+, -, +, -] (a zero sum counts as negative);
    # tau_uni = [2, -2, 3, -1]; M_1 = [1, 1, 1, 0], M_2 = [1, 0, 0, 1];
    # lambda_1 = mean[1, 2, 3, 1] / mean[2, 2, 3, 0] = 7/7, lambda_2 = 5/3.
    tvs = [{"w": torch.tensor([1.0, -2.0, 3.0, 1.0])}, {"w": torch.tensor([2.0, 1.0, -1.0, -1.0])}]
    out = merge("emr", tvs)
    torch.testing.assert_close(out[0]["w"], torch.tensor([2.0, -2.0, 3.0, 0.0]))
    torch.testing.assert_close(out[1]["w"], torch.tensor([2.0, 0.0, 0.0, -1.0]) * 5 / 3)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("levels", [False, True])
def test_emr_equals_the_authors_code(num_tasks: int, levels: bool) -> None:
    tvs = random_tvs(num_tasks, seed=num_tasks)
    if levels:  # quarter steps: many exact zero sums and equal magnitudes
        tvs = [{k: (v * 2).round() / 4 if v.is_floating_point() else v for k, v in tv.items()}
               for tv in tvs]  # fmt: skip
    out = merge("emr", tvs)
    for got, want in zip(out, ref.authors_emr(tvs), strict=True):
        assert list(got) == list(tvs[0])
        for key, value in want.items():
            torch.testing.assert_close(got[key], value.float(), atol=1e-6, rtol=1e-5)
        assert torch.equal(got["bn.num_batches_tracked"], torch.tensor(7))


def test_emr_signs_agree_and_rescaler_preserves_summed_mean_magnitudes() -> None:
    tvs = random_tvs(4, seed=1)
    out = merge("emr", tvs)
    floats = [k for k, v in tvs[0].items() if v.is_floating_point()]
    for key in floats:
        stacked = torch.stack([tv[key] for tv in tvs])
        gamma = torch.where(stacked.sum(0) > 0, 1.0, -1.0)
        for t in range(len(tvs)):
            assert (out[t][key] * gamma >= 0).all()
            assert (out[t][key] * stacked[t] >= 0).all()  # kept only where tau_t agrees
    for t in range(len(tvs)):
        mass_in = sum(tvs[t][k].abs().mean() for k in floats)
        mass_out = sum(out[t][k].abs().mean() for k in floats)
        torch.testing.assert_close(mass_out, mass_in)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emr_serves_the_input_dtype_from_a_float32_vector(dtype) -> None:
    tvs = random_tvs(3, seed=2, dtype=dtype)
    out = merge("emr", tvs)
    full = merge("emr", [{k: v.float() if v.is_floating_point() else v for k, v in tv.items()}
                         for tv in tvs])  # fmt: skip
    for got, want in zip(out, full, strict=True):
        assert isinstance(got, MaskedVector)
        for key, value in got.items():
            assert value.dtype == tvs[0][key].dtype
            if value.is_floating_point():
                assert torch.equal(value, want[key].to(dtype))


def test_emr_stores_one_vector_and_one_bit_masks() -> None:
    out = merge("emr", random_tvs(3))
    assert all(o.vector is out[0].vector for o in out)
    assert set(out[0].masks) == {"tall.weight", "tall.bias", "conv.weight", "scale"}


def test_emr_empty_mask_gives_a_zero_task_vector() -> None:
    # task 2 never agrees with the elected sign: lambda_2 = 0 (the authors divide by 0)
    out = merge("emr", [{"w": torch.tensor([3.0, 3.0])}, {"w": torch.tensor([-1.0, -1.0])}])
    assert out[1]["w"].tolist() == [0.0, 0.0]
    assert out[0]["w"].tolist() == [3.0, 3.0]


def test_emr_needs_two_tasks_and_names_the_key_at_fault() -> None:
    with pytest.raises(ValueError, match="'emr' needs at least 2"):
        merge("emr", random_tvs(1))
    tvs = random_tvs(2)
    tvs[1]["tall.weight"] = torch.randn(12, 7)
    with pytest.raises(ValueError, match=r"'tall.weight'.*task vector 1"):
        merge("emr", tvs)


def test_emr_deterministic_across_devices_and_calls() -> None:
    tvs = random_tvs(3, seed=5)
    first, second = merge("emr", tvs, device="cpu"), merge("emr", tvs)
    for a, b in zip(first, second, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_emr_merges_a_model_with_an_empty_entry() -> None:
    g = torch.Generator().manual_seed(0)
    tvs = [{"w": torch.randn(3, generator=g), "empty": torch.zeros(0, 2)} for _ in range(2)]
    out = merge("emr", tvs)
    assert [tuple(tv["empty"].shape) for tv in out] == [(0, 2), (0, 2)]
    assert all(tv["w"].shape == (3,) for tv in out)
