"""ZipIt! and CCA Merge of two states (``zipit_pair``, ``cca_merge_pair``) and their feature
maps, against the authors' formulas (issue 9, items 6 and 8)."""

import math

import numpy as np
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
    t, t_inv = cca_maps(PairStats.from_acts(a, b), gamma=0.0)
    torch.testing.assert_close(t @ mix, torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(t @ t_inv, torch.eye(5, dtype=torch.float64), atol=1e-8, rtol=0)


def test_zip_budget_of_a_layer_under_16_units_follows_the_authors():
    """n = 2 units, beta = 0.125: floor(floor(n / 2) * beta) = 0 within-model merges. The
    authors' counter is checked only after a merge, so A still merges A0 with A1 (0.9) and
    then that cluster with B0; the exact budget pairs across models only."""
    corr = torch.tensor(
        [[1.0, 0.9, 0.5, 0.4],
         [0.9, 1.0, 0.45, 0.5],
         [0.5, 0.45, 1.0, 0.0],
         [0.4, 0.5, 0.0, 1.0]], dtype=torch.float64,
    )  # fmt: skip
    authors = zip_features(corr, alpha=0.3, beta=0.125, budget_count="authors")
    exact = zip_features(corr, alpha=0.3, beta=0.125, budget_count="exact")
    one = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(authors, one)
    assert torch.equal(exact, torch.eye(2, dtype=torch.float64).repeat(2, 1))
    with pytest.raises(ValueError, match="'budget_count'"):
        zip_features(corr, budget_count="paper")


def _authors_zip(corr: np.ndarray, a: float, b: float) -> np.ndarray:
    """Restated from ``match_tensors_zipit`` (gstoica27/ZipIt ``matching_functions.py``; the
    same in shoroi/align-n-merge) for two models: greedy merges on a matrix whose merged
    column/row is removed, the budget counter checked after each within-model merge."""
    sims, size = corr.copy(), len(corr)
    n = size // 2
    unmerge = np.eye(size)
    np.fill_diagonal(sims, -np.inf)
    origin = np.repeat([0, 1], n)
    budget = [int((n // 2) * b + 1e-4)] * 2
    while unmerge.shape[1] > n:
        best = int(np.argmax(sims))
        row, col = best % sims.shape[1], best // sims.shape[1]
        row, col = min(row, col), max(row, col)
        row_origin, col_origin = origin[row], origin[col]
        unmerge[:, row] += unmerge[:, col]
        unmerge = np.delete(unmerge, col, axis=1)
        sims[:, row] = np.minimum(sims[:, row], sims[:, col]) * a
        sims = np.delete(sims, col, axis=1)
        sims[row, :] = np.minimum(sims[row, :], sims[col, :]) * a
        sims = np.delete(sims, col, axis=0)
        origin = np.delete(origin, col)
        if row_origin == col_origin:
            budget[row_origin] -= 1
            if budget[row_origin] <= 0:
                own = origin == row_origin
                sims[np.ix_(own, own)] = -np.inf
    return unmerge


ZIP_ALPHAS = [1.0, 0.5, 0.3, 0.1, 0.01, 0.0001]  # the authors' search grid
ZIP_BETAS = [1.0, 0.25, 0.125, 0.075, 0.0375, 0.0]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 15, 16, 33])
def test_zip_features_equals_the_authors_algorithm_on_random_features(n):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(300, 2 * n, generator=gen, dtype=torch.float64)
    x = x + 0.7 * x[:, torch.randperm(2 * n, generator=gen)]  # some features correlate
    corr = torch.corrcoef(x.T)
    for a in ZIP_ALPHAS:
        for b in ZIP_BETAS:
            ours = zip_features(corr, a, b, budget_count="authors").numpy()
            assert np.array_equal(ours, _authors_zip(corr.numpy(), a, b)), (a, b)


def test_cca_ridge_is_absolute():
    """One feature each, var_A = 4, var_B = 1, cov = 1, gamma = 0.1: the authors'
    ``S + gamma I`` gives ``T = sqrt(4.1 / 1.1)``; a ridge scaled by the variances would give
    ``sqrt(4.4 / 1.1) = 2``."""
    a = torch.tensor([2.0, -2.0, 2.0, -2.0], dtype=torch.float64)
    b = a / 4 + math.sqrt(0.75) * torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    stats = PairStats.from_acts(a[:, None], b[:, None])
    torch.testing.assert_close(stats.cov, torch.tensor([[4.0, 1.0], [1.0, 1.0]]).double())
    t, t_inv = cca_maps(stats, gamma=0.1)
    assert t.item() == pytest.approx(math.sqrt(4.1 / 1.1), rel=1e-12)
    assert t_inv.item() == pytest.approx(math.sqrt(1.1 / 4.1), rel=1e-12)
    with pytest.raises(ValueError, match="'gamma'"):
        cca_maps(stats, gamma=-1)


def _authors_cca(cov: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Restated from ``match_tensors_cca`` (shoroi/align-n-merge ``core/matching_functions.py``),
    two models: B's merge map ``y_map`` and unmerge map ``y_unmerge_map``, square roots by
    SVD of the ridge-regularised covariances."""
    n = len(cov) // 2
    eye = torch.eye(n, dtype=cov.dtype)
    s_xx, s_yy, s_xy = cov[:n, :n] + gamma * eye, cov[n:, n:] + gamma * eye, cov[:n, n:]

    def roots(s):
        u, d, v = torch.svd(s)
        return u @ torch.diag(d**0.5) @ v.T, u @ torch.diag(d**-0.5) @ v.T

    xx_sqrt, xx_neg_sqrt = roots(s_xx)
    yy_sqrt, yy_neg_sqrt = roots(s_yy)
    u, _, v = torch.svd(xx_neg_sqrt @ s_xy @ yy_neg_sqrt)
    y_map = yy_neg_sqrt @ v @ u.T @ xx_sqrt.T
    y_unmerge_map = xx_neg_sqrt @ u @ v.T @ yy_sqrt.T
    return y_map, y_unmerge_map


@pytest.mark.parametrize("gamma", [1e7, 1e2, 1.0, 0.1, 1e-3])
def test_cca_maps_equal_the_authors_formula_on_random_features(gamma):
    """The merged feature is ``(f_A + y_map^T f_B) / 2`` and B's part of the unmerge matrix
    ``y_unmerge_map^T``: mergelab's ``T`` and ``T^{-1}``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=gen, dtype=torch.float64)
    b = a @ torch.randn(6, 6, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(
        500, 6, generator=gen, dtype=torch.float64
    )
    stats = PairStats.from_acts(a, b)
    y_map, y_unmerge_map = _authors_cca(stats.cov, gamma)
    t, t_inv = cca_maps(stats, gamma)
    torch.testing.assert_close(t, y_map.T, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(t_inv, y_unmerge_map.T, rtol=1e-7, atol=1e-9)
