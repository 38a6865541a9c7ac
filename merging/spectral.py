"""Leading singular triplets and polar factors for the spectral merges (TSV, Iso-C, Iso-CTS).

The methods need, per matrix, only a task's top ``k`` singular triplets (``k ~ r / T``) and
the polar factor ``P Q^T`` of a matrix ``P S Q^T``. Both come from the eigendecomposition of
the Gram matrix of the smaller side in float64: for ``x`` (m x n, m >= n),
``x^T x = V diag(s^2) V^T`` and ``U = x V diag(1 / s)`` (for m < n the same with ``x x^T``).
On the CPU only the top ``k`` eigenpairs are computed (LAPACK ``syevr`` through
``scipy.linalg.eigh(subset_by_index=...)``), which skips the full bidiagonal SVD. Squaring
the condition number costs nothing at float32 precision as long as the kept singular values
are at least ``RELATIVE_FLOOR * s_1`` (float64 carries 16 digits, squaring leaves 8); a matrix
whose kept spectrum reaches below that (rank-deficient, or nearly) is decomposed by the full
``torch.linalg.svd`` instead, so those cases behave exactly as before; so is a nearly square
matrix when many triplets are needed, where the full SVD is faster (:func:`gram_pays`).
"""

from __future__ import annotations

import scipy.linalg
import torch

Tensor = torch.Tensor

RELATIVE_FLOOR = 1e-4
"""Smallest kept singular value, relative to the largest, served from the Gram matrix."""


def _top_eigh(gram: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest eigenvalues of a symmetric ``gram`` (n x n), descending, and their
    eigenvectors as columns. CPU and ``k <= n / 2``: only those ``k`` (``syevr``)."""
    n = gram.shape[0]
    if gram.device.type == "cpu" and k <= n // 2:
        w, v = scipy.linalg.eigh(
            gram.numpy(), subset_by_index=[n - k, n - 1], driver="evr", check_finite=False
        )
        w, v = torch.from_numpy(w), torch.from_numpy(v)
    else:
        w, v = torch.linalg.eigh(gram)
        w, v = w[n - k :], v[:, n - k :]
    return w.flip(0), v.flip(1)


def gram_pays(shape: tuple[int, ...], k: int | None = None) -> bool:
    """Whether the Gram route is faster than a full float32 SVD (measured on one CPU thread,
    768 x 768 and 3072 x 768): for a matrix at least twice as long as wide, or for at most a
    quarter of the triplets (``k``; None: all of them, a polar factor)."""
    short = min(shape)
    return max(shape) >= 2 * short or (k is not None and k <= short // 4)


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
    ``RELATIVE_FLOOR * s_1``, or where the full SVD is faster (:func:`gram_pays`), it *is*
    that (see the module docstring). ``k = 0`` gives empty factors (and no values unless
    ``all_values``).
    """
    if not gram_pays(x.shape, k):
        return _full_svd(x, k, all_values)
    if k == 0 and not all_values:
        empty = x.new_zeros(0, dtype=torch.float64)
        return x.new_zeros(x.shape[0], 0, dtype=torch.float64), empty, empty.view(0, x.shape[1])
    wide = x.shape[0] < x.shape[1]
    a = x.double().T if wide else x.double()  # tall: the Gram matrix is n x n
    gram = a.T @ a
    rank = gram.shape[0]
    w, v = _top_eigh(gram, rank if all_values else k)
    if not w[0] > 0 or w[max(k, 1) - 1] < RELATIVE_FLOOR**2 * w[0]:
        return _full_svd(x, k, all_values)
    s = w.clamp(min=0).sqrt()
    v = v[:, :k]
    u = (a @ v) / s[:k]
    return (v, s, u.T) if wide else (u, s, v.T)


def polar(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(P Q^T, s)`` for ``x = P diag(s) Q^T`` (thin SVD): the nearest matrix to ``x`` with
    orthonormal columns (rows, if ``x`` is wide; orthogonal Procrustes), in float64, and
    every singular value of ``x``, descending. ``P Q^T = x V diag(1 / s) V^T`` from the
    Gram matrix ``x^T x = V diag(s^2) V^T`` (smaller side); where ``s_min`` is below
    ``RELATIVE_FLOOR * s_1`` the polar factor is not determined by ``x`` to float
    precision and the full ``torch.linalg.svd`` gives it, as before; so it does for nearly
    square ``x``, where it is faster (:func:`gram_pays`)."""
    wide = x.shape[0] < x.shape[1]
    if gram_pays(x.shape):
        a = x.double().T if wide else x.double()
        w, v = torch.linalg.eigh(a.T @ a)
        w, v = w.flip(0), v.flip(1)
    if not gram_pays(x.shape) or not w[0] > 0 or w[-1] < RELATIVE_FLOOR**2 * w[0]:
        p, s, qh = _svd(x)
        return (p @ qh).double(), s.double()
    s = w.sqrt()
    factor = a @ ((v / s) @ v.T)
    return (factor.T if wide else factor), s
