"""ZipIt! and CCA Merge of two states (``zipit_pair``, ``cca_merge_pair``) and their feature
maps."""

import pytest
import torch

from merging.alignment import PairStats, collect_activations, pair_statistics
from merging.methods.cca_merge import cca_maps, cca_merge_pair
from merging.methods.zipit import zip_features, zipit_pair
from tests.merging.toy_networks import (
    CASES,
    MLP,
    MLP_POINTS,
    MLP_SPEC,
    inputs,
    permuted_copy,
    seeded_model,
    with_state,
)


@pytest.mark.parametrize("method", [zipit_pair, cca_merge_pair], ids=["zipit", "cca"])
@pytest.mark.parametrize("cls,spec,points,shape", CASES)
def test_merging_a_model_with_its_permutation_keeps_its_function(method, cls, spec, points, shape):
    model_a = seeded_model(cls, 0)
    model_b, _ = permuted_copy(model_a, spec, seed=11)
    batches = list(inputs(shape, 128, seed=2).split(32))
    stats = pair_statistics(model_a, model_b, batches, points)
    merged = with_state(
        model_a, method(spec, model_a.state_dict(), model_b.state_dict(), stats=stats)
    )
    x = inputs(shape, 32, seed=4)
    with torch.no_grad():
        # float64 merge algebra; the tolerance covers the float32 round trip and CCA's
        # matrix square roots (exact permutation matrices up to ~1e-6)
        torch.testing.assert_close(merged(x), model_a(x), rtol=1e-4, atol=1e-4)


def test_zipit_accepts_raw_activations_and_differs_from_averaging_for_different_models():
    a, b = seeded_model(MLP, 0), seeded_model(MLP, 1)
    batches = [inputs((8,), 256)]
    acts_a, acts_b = (
        collect_activations(a, batches, MLP_POINTS),
        collect_activations(b, batches, MLP_POINTS),
    )
    merged = zipit_pair(MLP_SPEC, a.state_dict(), b.state_dict(), acts_a, acts_b)
    avg = {k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in merged}
    assert set(merged) == set(avg)
    assert not torch.allclose(merged["fc2.weight"], avg["fc2.weight"])
    torch.testing.assert_close(merged["fc3.bias"], avg["fc3.bias"])


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0.0, 1.0), (0.3, 0.5)])
def test_zip_features_partitions_into_n_clusters(alpha, beta):
    n = 12
    x = torch.randn(200, 2 * n, generator=torch.Generator().manual_seed(0))
    unmerge = zip_features(torch.corrcoef(x.T), alpha, beta)
    assert unmerge.shape == (2 * n, n)
    assert torch.equal(unmerge.sum(1), torch.ones(2 * n, dtype=unmerge.dtype))
    assert (unmerge.sum(0) >= 1).all()
    if alpha <= 0:
        assert torch.equal(unmerge.sum(0), torch.full((n,), 2.0, dtype=unmerge.dtype))
    within = ((unmerge[:n].sum(0) == 2) | (unmerge[n:].sum(0) == 2)).sum().item()
    assert within <= 2 * int(n // 2 * beta)
    if beta == 0:  # only across models: a permutation
        assert torch.equal(unmerge[:n].sum(0), unmerge[n:].sum(0))


def test_cca_maps_recover_a_linear_mixing():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 5, generator=gen, dtype=torch.float64)
    mix = torch.randn(5, 5, generator=gen, dtype=torch.float64) + 3 * torch.eye(
        5, dtype=torch.float64
    )
    b = a @ mix.T  # f_B = mix f_A
    t, t_inv = cca_maps(PairStats.from_acts(a, b), reg=0.0)
    torch.testing.assert_close(t @ mix, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(t @ t_inv, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)
