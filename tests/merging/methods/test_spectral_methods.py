"""TSV-Merge, Iso-C and Iso-CTS: hand-computed cases, references written here (the papers'
and the authors' layouts), and the properties each paper relies on."""

import numpy as np
import pytest
import torch

from merging import merge

SPECTRAL = ["tsv", "iso_c", "iso_cts"]


def diag(*values: float) -> torch.Tensor:
    return torch.diag(torch.tensor(values, dtype=torch.float64))


def random_tvs(num_tasks: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Task vectors with matrices (tall, wide, square), a bias, a conv kernel, a scalar and
    an integer buffer; float64 so the references below can be tight."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return [
        {
            "tall.weight": rand(12, 8),
            "wide.weight": rand(6, 10),
            "square.weight": rand(9, 9),
            "tall.bias": rand(12),
            "conv.weight": rand(3, 2, 2, 2),
            "scale": rand(()),
            "bn.num_batches_tracked": torch.tensor(7),
        }
        for _ in range(num_tasks)
    ]


def matrices(tvs: list[dict[str, torch.Tensor]]) -> list[str]:
    return [k for k, v in tvs[0].items() if v.ndim == 2]


def others(tvs: list[dict[str, torch.Tensor]]) -> list[str]:
    return [k for k, v in tvs[0].items() if v.ndim != 2 and v.is_floating_point()]


def assert_close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    expected = torch.as_tensor(np.asarray(expected), dtype=actual.dtype)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=1e-5)


# ---- references, written from the papers with numpy in float64 ----------------------------


def polar_np(x: np.ndarray) -> np.ndarray:
    p, _, qh = np.linalg.svd(x, full_matrices=False)
    return p @ qh


def tsv_reference(taus: list[np.ndarray], authors: bool = False) -> np.ndarray:
    """The paper's layout: task t's top r//T triplets placed in block t of r-wide factors;
    ``authors``: ``int(r * (1 / T))`` triplets, none when r < T (then the product is 0)."""
    rank, num_tasks = min(taus[0].shape), len(taus)
    k = int(rank * (1 / num_tasks)) if authors else rank // num_tasks
    u_sum = np.zeros((taus[0].shape[0], rank))
    s_sum = np.zeros(rank)
    vh_sum = np.zeros((rank, taus[0].shape[1]))
    for t, tau in enumerate(taus):
        u, s, vh = np.linalg.svd(tau, full_matrices=False)
        block = slice(t * k, (t + 1) * k)
        u_sum[:, block], s_sum[block], vh_sum[block] = u[:, :k], s[:k], vh[:k]
    return polar_np(u_sum) @ np.diag(s_sum) @ polar_np(vh_sum)


def iso_cts_reference(taus: list[np.ndarray], common_fraction: float) -> np.ndarray:
    rank, num_tasks = min(taus[0].shape), len(taus)
    common = int(rank * common_fraction)
    per_task = round((rank - common) / num_tasks)
    common = rank - per_task * num_tasks
    u, s, vh = np.linalg.svd(sum(taus), full_matrices=False)
    us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
    for tau in taus:
        projector = u[:, :common] @ u[:, :common].T
        u_t, s_t, vh_t = np.linalg.svd(tau - projector @ tau, full_matrices=False)
        us.append(u_t[:, :per_task])
        ss.append(s_t[:per_task])
        vhs.append(vh_t[:per_task])
    s_all = np.concatenate(ss)
    return s_all.mean() * polar_np(np.concatenate(us, 1)) @ polar_np(np.concatenate(vhs, 0))


# ---- TSV-Merge -----------------------------------------------------------------------------


def test_tsv_hand_computed() -> None:
    # r = 2, T = 2: each task keeps its top direction, e1 (3) and e2 (2), already orthogonal.
    out = merge("tsv", [{"w": diag(3.0, 1.0)}, {"w": diag(0.5, 2.0)}])
    assert_close(out["w"], diag(3.0, 2.0))


def test_tsv_single_task_full_fraction_returns_the_task_vector() -> None:
    (tv,) = random_tvs(1)
    for fraction in (None, 1.0):
        out = merge("tsv", [tv], fraction=fraction)
        for key in matrices([tv]) + others([tv]):
            assert_close(out[key], tv[key])


def test_tsv_matches_paper_layout_reference() -> None:
    tvs = random_tvs(3)
    out = merge("tsv", tvs)
    for key in matrices(tvs):
        assert_close(out[key], tsv_reference([tv[key].numpy() for tv in tvs]))
    for key in others(tvs):
        assert_close(out[key], torch.stack([tv[key] for tv in tvs]).mean(0))


def test_tsv_fraction_concatenates_every_tasks_top_triplets() -> None:
    # fraction = 1 keeps all triplets of every task (the lossless variant): T r directions.
    tvs = random_tvs(2, seed=2)
    out = merge("tsv", tvs, fraction=1.0)
    for key in matrices(tvs):
        svds = [np.linalg.svd(tv[key].numpy(), full_matrices=False) for tv in tvs]
        u = np.concatenate([u for u, _, _ in svds], 1)
        s = np.concatenate([s for _, s, _ in svds])
        vh = np.concatenate([vh for _, _, vh in svds], 0)
        assert_close(out[key], polar_np(u) @ np.diag(s) @ polar_np(vh))


def test_tsv_rejects_bad_options() -> None:
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="'fraction'"):
            merge("tsv", random_tvs(2), fraction=bad)
    with pytest.raises(ValueError, match="'rank_count'"):
        merge("tsv", random_tvs(2), rank_count="floor")


@pytest.mark.parametrize("num_tasks", [3, 7, 9, 13])
def test_tsv_authors_rank_count_matches_the_authors_layout(num_tasks: int) -> None:
    # ranks 8, 6, 9: below T = 9 or 13 for some or all matrices, which then merge to 0
    tvs = random_tvs(num_tasks, seed=num_tasks)
    out = merge("tsv", tvs, rank_count="authors")
    paper = merge("tsv", tvs)
    for key in matrices(tvs):
        taus = [tv[key].numpy() for tv in tvs]
        # float32 math; T k of r directions can leave the concatenated U ill-conditioned
        assert_close(out[key], tsv_reference(taus, authors=True), atol=1e-4)
        if min(taus[0].shape) < num_tasks:
            assert not out[key].any() and paper[key].any()
        else:
            assert_close(paper[key], out[key])
    for key in others(tvs):
        assert_close(out[key], torch.stack([tv[key] for tv in tvs]).mean(0))


# ---- Iso-C and Iso-CTS ---------------------------------------------------------------------


def test_iso_c_hand_computed() -> None:
    # sum = diag(3, 1): singular values replaced by their mean, 2.
    out = merge("iso_c", [{"w": diag(2.0, 0.0)}, {"w": diag(1.0, 1.0)}])
    assert_close(out["w"], 2.0 * torch.eye(2, dtype=torch.float64))


def test_iso_cts_hand_computed() -> None:
    # r = 4, T = 2, common_fraction = 0.5: common = {e1, e2} (3, 3); outside it task 1 keeps
    # e3 (2), task 2 keeps e4 (1), so the level is mean(3, 3, 2, 1) = 2.25. Iso-C instead
    # averages the summed spectrum (3, 3, 1.5, 1) = 2.125.
    tvs = [{"w": diag(3.0, 0.0, 2.0, 0.0)}, {"w": diag(0.0, 3.0, -0.5, 1.0)}]
    eye = torch.eye(4, dtype=torch.float64)
    assert_close(merge("iso_cts", tvs, common_fraction=0.5)["w"], 2.25 * eye)
    assert_close(merge("iso_c", tvs)["w"], 2.125 * eye)


def test_iso_c_matches_reference_and_is_isotropic() -> None:
    tvs = random_tvs(3)
    out = merge("iso_c", tvs)
    for key in matrices(tvs):
        u, s, vh = np.linalg.svd(sum(tv[key].numpy() for tv in tvs), full_matrices=False)
        assert_close(out[key], s.mean() * u @ vh)
        singular = torch.linalg.svdvals(out[key])
        assert_close(singular, torch.full_like(singular, float(s.mean())))
    for key in others(tvs):
        assert_close(out[key], torch.stack([tv[key] for tv in tvs]).mean(0))


@pytest.mark.parametrize("common_fraction", [0.8, 0.5, 0.3])
def test_iso_cts_matches_reference_and_is_isotropic(common_fraction: float) -> None:
    tvs = random_tvs(3, seed=3)
    out = merge("iso_cts", tvs, common_fraction=common_fraction)
    for key in matrices(tvs):
        want = iso_cts_reference([tv[key].numpy() for tv in tvs], common_fraction)
        # The merge reads the inputs in float32 and computes in float64: the complement
        # route (square, wide: U_t = U_r Z_t, the polar factor [U_c, U_r polar(Z)]) and the
        # Gram route outside the common subspace (tall: x^T x - C^T C, the polar factor
        # [U_c, polar([U_1 ..])]) agree to the inputs' float32 rounding. (The k + T d
        # directions fill the rank, so the concatenated U can be ill-conditioned, sigma_min
        # ~ 0.05 here; a float32 SVD of it, the code before, agreed only to ~1e-4.)
        assert_close(out[key], want, atol=1e-5)
        singular = torch.linalg.svdvals(out[key])
        assert_close(singular, singular.mean().expand_as(singular))
    for key in others(tvs):
        assert_close(out[key], torch.stack([tv[key] for tv in tvs]).mean(0))


def test_iso_cts_with_full_common_space_is_iso_c() -> None:
    tvs = random_tvs(2, seed=4)
    cts, c = merge("iso_cts", tvs, common_fraction=1.0), merge("iso_c", tvs)
    for key in matrices(tvs):
        assert_close(cts[key], c[key])


def test_iso_cts_rejects_bad_common_fraction() -> None:
    for bad in (0.0, -0.2, 1.01):
        with pytest.raises(ValueError, match="'common_fraction'"):
            merge("iso_cts", random_tvs(2), common_fraction=bad)


# ---- shared behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SPECTRAL)
def test_deterministic_on_device_and_carries_non_float_entries(name: str) -> None:
    tvs = random_tvs(3, seed=5)
    out, again = merge(name, tvs, device="cpu"), merge(name, tvs)
    assert list(out) == list(tvs[0])
    for key, value in out.items():
        assert torch.equal(value, again[key])
        assert value.dtype == tvs[0][key].dtype and value.shape == tvs[0][key].shape
    assert torch.equal(out["bn.num_batches_tracked"], torch.tensor(7))


@pytest.mark.parametrize("name", SPECTRAL)
def test_reports_the_key_and_task_at_fault(name: str) -> None:
    tvs = random_tvs(2)
    tvs[1]["square.weight"] = torch.randn(9, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"'square.weight'.*task vector 1"):
        merge(name, tvs)


# ---- leading triplets from the Gram matrix (merging.spectral) ------------------------------

from merging.spectral import polar, top_svd  # noqa: E402


def low_rank(m: int, n: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, rank, generator=g) @ torch.randn(rank, n, generator=g)


SHAPES = [(40, 40), (96, 24), (24, 96), (70, 33)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("rank", [None, 5])
@pytest.mark.parametrize("k", [0, 1, 4, 12, 24])
def test_top_svd_equals_the_leading_full_svd(shape: tuple[int, int], rank, k: int) -> None:
    x = (
        torch.randn(*shape, generator=torch.Generator().manual_seed(k))
        if rank is None
        else (low_rank(*shape, rank, seed=k))
    )
    u, s, vh = top_svd(x, k)
    u_ref, s_ref, vh_ref = torch.linalg.svd(x.double(), full_matrices=False)
    assert u.shape == (shape[0], k) and s.shape == (k,) and vh.shape == (k, shape[1])
    assert u.dtype == s.dtype == vh.dtype == torch.float64
    scale = float(s_ref[0])
    torch.testing.assert_close(s, s_ref[:k], atol=1e-5 * scale, rtol=1e-5)
    # the rank-k approximation, unique whenever s_k > s_{k+1}; below the rank (k > 5 for the
    # low-rank matrices) the full SVD is used and the product is the matrix itself
    torch.testing.assert_close(
        (u * s) @ vh, (u_ref[:, :k] * s_ref[:k]) @ vh_ref[:k], atol=1e-5 * scale, rtol=1e-5
    )
    if k:
        torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(vh @ vh.T, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)
        if rank is None or k <= rank:  # each pair up to its sign (a random spectrum: no ties)
            signs = (u * u_ref[:, :k]).sum(0).sign()
            torch.testing.assert_close(u * signs, u_ref[:, :k], atol=1e-4, rtol=0)
            torch.testing.assert_close(vh * signs[:, None], vh_ref[:k], atol=1e-4, rtol=0)


def test_top_svd_all_values_and_cpu_partial_path_agree() -> None:
    x = torch.randn(100, 30, generator=torch.Generator().manual_seed(1))
    s_ref = torch.linalg.svdvals(x.double())
    _, s_all, _ = top_svd(x, 3, all_values=True)
    torch.testing.assert_close(s_all, s_ref, atol=1e-5, rtol=1e-5)
    # k <= n / 2 takes LAPACK's partial solver, k > n / 2 the full eigh: same leading part
    u_few, s_few, _ = top_svd(x, 15)
    u_many, s_many, _ = top_svd(x, 16)
    torch.testing.assert_close(s_few, s_many[:15], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        (u_few * u_many[:, :15]).sum(0).abs(), torch.ones(15, dtype=torch.float64)
    )


@pytest.mark.parametrize("shape", [*SHAPES, (12, 36)])
def test_polar_equals_the_svd_polar_factor(shape: tuple[int, int]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    factor, s = polar(x)
    p, s_ref, qh = torch.linalg.svd(x.double(), full_matrices=False)
    torch.testing.assert_close(factor, p @ qh, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(s, s_ref, atol=1e-6, rtol=1e-6)


def test_polar_of_a_rank_deficient_matrix_falls_back_to_the_full_svd() -> None:
    x = low_rank(60, 20, 4, seed=0)
    factor, s = polar(x)
    p, s_ref, qh = torch.linalg.svd(x, full_matrices=False)
    assert torch.equal(factor, (p @ qh).double()) and torch.equal(s, s_ref.double())


# ---- the spectral merges against their previous full-SVD implementation --------------------


def full_svd_polar(x: torch.Tensor) -> torch.Tensor:
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def full_svd_tsv(taus: list[torch.Tensor], k: int) -> torch.Tensor:
    """TSV-M as computed before the Gram-matrix helpers: float32, full SVDs."""
    us, ss, vhs = [], [], []
    for tau in taus:
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k])
        vhs.append(vh[:k])
    return (full_svd_polar(torch.cat(us, 1)) * torch.cat(ss)) @ full_svd_polar(torch.cat(vhs, 0))


def full_svd_iso_c(taus: list[torch.Tensor]) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * (u @ vh)


def full_svd_iso_cts(taus: list[torch.Tensor], common: int, per_task: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    us, ss, vhs = [u[:, :common]], [s[:common]], [vh[:common]]
    for tau in taus:
        u_t, s_t, vh_t = torch.linalg.svd(tau - us[0] @ (us[0].T @ tau), full_matrices=False)
        us.append(u_t[:, :per_task])
        ss.append(s_t[:per_task])
        vhs.append(vh_t[:per_task])
    return torch.cat(ss).mean() * (
        full_svd_polar(torch.cat(us, 1)) @ full_svd_polar(torch.cat(vhs, 0))
    )


def float32_tvs(num_tasks: int, rank: int | None) -> list[dict[str, torch.Tensor]]:
    """float32 task vectors with tall, wide and square matrices of a realistic aspect ratio
    (3072 x 768 scaled down), full rank or of rank ``rank``."""
    shapes = {"fc.weight": (96, 24), "proj.weight": (24, 96), "attn.weight": (32, 32)}
    out = []
    for t in range(num_tasks):
        g = torch.Generator().manual_seed(100 + t)
        tv = {}
        for key, (m, n) in shapes.items():
            tv[key] = torch.randn(m, n, generator=g) if rank is None else low_rank(m, n, rank, t)
        out.append(tv)
    return out


@pytest.mark.parametrize("rank", [None, 6])
@pytest.mark.parametrize("num_tasks", [2, 5])
def test_spectral_merges_equal_their_full_svd_versions(rank, num_tasks: int) -> None:
    from merging.methods.iso_cts import _split_rank

    tvs = float32_tvs(num_tasks, rank)
    tsv, iso_c, iso_cts = (merge(name, tvs) for name in SPECTRAL)
    for key in tvs[0]:
        taus = [tv[key] for tv in tvs]
        r = min(taus[0].shape)
        scale = float(torch.linalg.matrix_norm(sum(taus), 2))
        torch.testing.assert_close(
            tsv[key], full_svd_tsv(taus, r // num_tasks), atol=1e-4 * scale, rtol=1e-4
        )
        torch.testing.assert_close(iso_c[key], full_svd_iso_c(taus), atol=1e-4 * scale, rtol=1e-4)
        if rank is None:  # rank-deficient sums: Iso-CTS's common/task split is not unique
            want = full_svd_iso_cts(taus, *_split_rank(r, num_tasks, 0.8))
            torch.testing.assert_close(iso_cts[key], want, atol=1e-3 * scale, rtol=1e-3)


@pytest.mark.parametrize("rank", [None, 3])
def test_tsv_c_factors_rebuild_the_full_svd_truncation(rank) -> None:
    tvs = float32_tvs(4, rank)
    for t, low in enumerate(merge("tsv_c", tvs)):
        for key, tau in tvs[t].items():
            k = max(1, min(tau.shape) // 4)
            u, s, vh = torch.linalg.svd(tau, full_matrices=False)
            scale = float(s[0])
            want = (u[:, :k] * s[:k]) @ vh[:k]
            torch.testing.assert_close(low[key], want, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("inside", [False, True])
def test_top_svd_outside_equals_the_svd_of_the_projection(inside: bool) -> None:
    # inside: x lies in span(B) up to 1e-9, below RELATIVE_FLOOR of ||x||, so the projection
    # is formed explicitly instead of subtracting Gram matrices
    from merging.spectral import top_svd_outside

    g = torch.Generator().manual_seed(8)
    basis = torch.linalg.qr(torch.randn(60, 12, generator=g, dtype=torch.float64))[0]
    x = torch.randn(60, 20, generator=g, dtype=torch.float64)
    if inside:
        x = basis @ (basis.T @ x) + 1e-9 * x
    u, s, vh = top_svd_outside(x, basis, 4)
    u_ref, s_ref, vh_ref = torch.linalg.svd(x - basis @ (basis.T @ x), full_matrices=False)
    scale = float(s_ref[0])
    torch.testing.assert_close(s, s_ref[:4], atol=1e-9 * scale, rtol=1e-6)
    want = (u_ref[:, :4] * s_ref[:4]) @ vh_ref[:4]
    torch.testing.assert_close((u * s) @ vh, want, atol=1e-9 * scale, rtol=1e-6)
    assert float((basis.T @ u).abs().max()) < 1e-6


def test_iso_cts_tall_with_a_task_inside_the_common_subspace_stays_isotropic() -> None:
    # a zero task has no direction outside the common subspace: its "directions" are the
    # arbitrary vectors of zero singular values, not orthogonal to U_c, so the Procrustes
    # factor of the whole concatenation is taken (the merge stays isotropic)
    g = torch.Generator().manual_seed(9)
    tvs = [{"w": torch.randn(30, 10, generator=g)}, {"w": torch.zeros(30, 10)}]
    out = merge("iso_cts", tvs, common_fraction=0.6)["w"]
    singular = torch.linalg.svdvals(out)
    assert singular.isfinite().all()
    torch.testing.assert_close(singular, singular.mean().expand_as(singular))
