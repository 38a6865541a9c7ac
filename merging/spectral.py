"""Leading singular triplets and polar factors for the spectral merges (TSV, Iso-C, Iso-CTS).

The methods need, per matrix, only a task's top ``k`` singular triplets (``k ~ r / T``) and
the polar factor ``P Q^T`` of a matrix ``P S Q^T``. Both come from the eigendecomposition of
the Gram matrix of the smaller side in float64: for ``x`` (m x n, m >= n),
``x^T x = V diag(s^2) V^T`` and ``U = x V diag(1 / s)`` (for m < n the same with ``x x^T``).
On the CPU the Gram matrix is a symmetric rank-k update (numpy's ``a.T @ a``, BLAS ``syrk``,
half the flops of a general product), only the top ``k`` eigenpairs are computed where
``k <= n / 2`` (LAPACK ``syevr`` through ``scipy.linalg.eigh(subset_by_index=...)``) and all
of them otherwise by divide and conquer (``syevd``); the full bidiagonal SVD is skipped.
Squaring the condition number costs nothing at float32 precision as long as the kept singular
values are at least ``RELATIVE_FLOOR * s_1`` (float64 carries 16 digits, squaring leaves 8);
a matrix whose kept spectrum reaches below that (rank-deficient, or nearly) is decomposed by
the full ``torch.linalg.svd`` instead, so those cases behave exactly as before. On other
devices the same steps run as torch operations (``torch.linalg.eigh``).
"""

from __future__ import annotations

import scipy.linalg
import torch

Tensor = torch.Tensor

RELATIVE_FLOOR = 1e-4
"""Smallest kept singular value, relative to the largest, served from the Gram matrix."""


def gram(a: Tensor) -> Tensor:
    """``a^T a`` in float64 (a: m x n, any strides; n x n). On the CPU numpy's ``a.T @ a``,
    which BLAS computes as a symmetric rank-k update (``syrk``)."""
    a = a.double()
    if a.device.type != "cpu":
        return a.T @ a
    b = a.numpy()
    return torch.from_numpy(b.T @ b)


def _top_eigh(g: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest eigenvalues of a symmetric ``g`` (n x n), descending, and their
    eigenvectors as columns. CPU: only those ``k`` when ``k <= n / 2`` (``syevr``), else all
    (``syevd``, faster than torch's on one thread)."""
    n = g.shape[0]
    if g.device.type == "cpu" and n:
        partial = 0 < k <= n // 2
        w, v = scipy.linalg.eigh(
            g.numpy(),
            subset_by_index=[n - k, n - 1] if partial else None,
            driver="evr" if partial else "evd",
            check_finite=False,
        )
        w, v = torch.from_numpy(w), torch.from_numpy(v)
    else:
        w, v = torch.linalg.eigh(g)
    return w[len(w) - k :].flip(0), v[:, v.shape[1] - k :].flip(1)


def _svd(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd``; in float64 where float32 ``gesdd`` fails to converge (nearly
    singular inputs, e.g. Iso-CTS's concatenated factors)."""
    try:
        return torch.linalg.svd(x, full_matrices=False)
    except torch.linalg.LinAlgError:
        return torch.linalg.svd(x.double(), full_matrices=False)


def _full_svd(x: Tensor, k: int, all_values: bool) -> tuple[Tensor, Tensor, Tensor]:
    u, s, vh = _svd(x)
    return u[:, :k].double(), (s if all_values else s[:k]).double(), vh[:k].double()


def top_svd(x: Tensor, k: int, all_values: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The top ``k`` singular triplets of ``x`` (m x n): ``(U_k, s, V_k^T)`` in float64 with
    ``x ~ U_k diag(s_k) V_k^T``, singular values descending; ``s`` holds the top ``k``
    values, or all ``min(m, n)`` with ``all_values``. ``0 <= k <= min(m, n)``.

    Equal, within float tolerance and up to the sign of each pair ``(u_i, v_i)``, to the
    leading part of ``torch.linalg.svd(x, full_matrices=False)``; where ``s_k`` is below
    ``RELATIVE_FLOOR * s_1`` it *is* that (see the module docstring). ``k = 0`` gives empty
    factors (and no values unless ``all_values``).
    """
    if k == 0 and not all_values:
        empty = x.new_zeros(0, dtype=torch.float64)
        return x.new_zeros(x.shape[0], 0, dtype=torch.float64), empty, empty.view(0, x.shape[1])
    wide = x.shape[0] < x.shape[1]
    x64 = x.double()
    g = gram(x64.T if wide else x64)  # the smaller side's Gram matrix
    w, v = _top_eigh(g, g.shape[0] if all_values else k)
    if not w[0] > 0 or w[max(k, 1) - 1] < RELATIVE_FLOOR**2 * w[0]:
        return _full_svd(x, k, all_values)
    s = w.clamp(min=0).sqrt()
    v = v[:, :k]
    if wide:  # x^T v as (v^T x)^T: contiguous operands
        return v, s, (v.T @ x64) / s[:k, None]
    return (x64 @ v) / s[:k], s, v.T


def top_svd_outside(x: Tensor, basis: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`top_svd` of ``(I - B B^T) x``, the part of ``x`` (m x n, m >= n) outside the
    span of ``basis`` ``B`` (m x j, orthonormal columns, float64), without forming it: its
    Gram matrix is ``x^T x - C^T C`` with ``C = B^T x`` (float64), and
    ``U_k = (x V_k - B (C V_k)) diag(1 / s_k)``. Where the kept part is below
    ``RELATIVE_FLOOR`` of ``||x||_F`` (the subtraction would cancel digits) the projection is
    formed and decomposed by :func:`top_svd`. ``1 <= k <= n``."""
    x64 = x.double()
    c = basis.T @ x64
    g = gram(x64)
    total = float(torch.trace(g))
    g -= gram(c)
    w, v = _top_eigh(g, k)
    if not w[k - 1] > RELATIVE_FLOOR**2 * total:
        return top_svd(x64 - basis @ c, k)
    s = w.sqrt()
    return (x64 @ v - basis @ (c @ v)) / s, s, v.T


def polar(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(P Q^T, s)`` for ``x = P diag(s) Q^T`` (thin SVD): the nearest matrix to ``x`` with
    orthonormal columns (rows, if ``x`` is wide; orthogonal Procrustes), in float64, and
    every singular value of ``x``, descending. ``P Q^T = x V diag(1 / s) V^T`` from the
    Gram matrix ``x^T x = V diag(s^2) V^T`` (smaller side); where ``s_min`` is below
    ``RELATIVE_FLOOR * s_1`` the polar factor is not determined by ``x`` to float
    precision and the full ``torch.linalg.svd`` gives it, as before."""
    wide = x.shape[0] < x.shape[1]
    a = x.double().T if wide else x.double()
    g = gram(a)
    w, v = _top_eigh(g, g.shape[0])
    if not w[0] > 0 or w[-1] < RELATIVE_FLOOR**2 * w[0]:
        p, s, qh = _svd(x)
        return (p @ qh).double(), s.double()
    s = w.sqrt()
    inverse_root = (v / s) @ v.T  # (x^T x)^(-1/2), symmetric
    return (inverse_root @ a.T if wide else a @ inverse_root), s
