"""XTrace (Epperly, Tropp & Webber 2024): Hessian trace from exchangeable leave-one-out Hutch++.

The estimator sees a symmetric ``A`` [n, n] only through ``matvec(v [n]) -> A v [n]``
(PAPER.md section 3), as :mod:`landscape.hutchinson` does.  Reference: E. N. Epperly,
J. A. Tropp & R. J. Webber, "XTrace: Making the most of every sample in stochastic trace
estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024 (section 2; Rademacher columns are
one of the isotropic choices it allows).

With ``s = num_matvecs // 2`` Rademacher columns ``Omega = [omega_1 .. omega_s]`` [n, s]:

- ``Y = A Omega`` [n, s] (s matvecs), reduced QR ``Y = Q R`` (``Q`` [n, s], ``R`` [s, s]),
  ``Z = A Q`` [n, s] (s matvecs), ``H = Q^T Z`` [s, s] (symmetrized), ``W = Q^T Omega``.
- Leave one out: ``Q_(i)`` spans ``range(Y without column i)``.  Its normal inside
  ``range(Q)`` is ``s_i = R^{-T} e_i / ||R^{-T} e_i||`` (``s_i^T R e_j = 0`` for
  ``j != i``), so ``Q_(i) Q_(i)^T = Q (I - s_i s_i^T) Q^T``.
- Sample ``t_i = tr(Q_(i)^T A Q_(i)) + w_i'^T A w_i'`` with
  ``w_i' = (I - Q_(i) Q_(i)^T) omega_i``: Hutch++ with the sketch built from the other
  ``s - 1`` columns and ``omega_i`` as its one Hutchinson probe.  With ``w = W[:, i]``,
  ``r = R[:, i]``, ``c = s_i^T w`` and ``Q^T A omega_i = Q^T y_i = r`` (this, and the cross
  terms, use the symmetry of ``A``) everything is ``s x s`` algebra::

      tr(Q_(i)^T A Q_(i)) = tr(H) - s_i^T H s_i
      w_i'^T A w_i'       = omega_i^T y_i - 2 w^T r + w^T H w + 2 c s_i^T (r - H w) + c^2 s_i^T H s_i

- ``XTrace = mean_i t_i``; standard error ``std(t_i, ddof=1) / sqrt(s)`` (the paper's
  error estimate; the ``t_i`` are exchangeable but not independent, so it is a heuristic,
  checked over seeds in ``tests/test_xtrace.py``).

Assumptions and properties: ``A`` symmetric.  Each ``Q_(i)`` is a function of the other
columns only, so ``E[t_i | Omega without omega_i] = tr(A)`` for any isotropic ``omega_i``
(``E[omega omega^T] = I``): unbiased.  If ``range(A omega_j, j != i) = range(A)`` for
every ``i`` (almost surely when ``rank(A) <= s - 1`` and the eigenvectors are in general
position) then ``(I - Q_(i) Q_(i)^T) A = 0`` and every ``t_i = tr(A)``: exact, stderr ~ 0.

Rank-deficient sketches (found by testing; see ``tests/test_xtrace.py``).  When
``rank(Y) < s`` the matrix ``R`` is singular, and ``Q`` has ``s - rank(Y)`` columns that
QR made up.  For a generic low-rank ``A`` they are rounding noise (``sigma_min(R) ~
sqrt(n) eps sigma_max(R)``).  The formula above then stays exact to ~1e-16 in float64,
because ``s_i`` is normalized, whether ``R^{-T}`` comes from an inverse or a triangular
solve.  Two cases break it:

1. ``R`` with exact zeros on its diagonal (``A = 0``, or a range aligned with coordinates,
   where Rademacher products vanish exactly).  ``inv`` raises and the triangular solve
   returns nan.
2. Worse: the made-up columns of ``Q`` depend on every column, ``y_i`` included.  When
   ``y_i`` is needed to span ``range(Y)``, ``s_i`` is that new direction and the made-up
   columns stay in ``Q_(i)``.  The leave-one-out basis then depends on ``omega_i`` and the
   estimate is biased.  Example: for ``A = v v^T - 2 u u^T``, ``v = (e_1 + e_2)/sqrt(2)``,
   ``u = (e_3 + e_4)/sqrt(2)``, ``n = 6``, ``s = 4``, the bias is -0.066, which is 15
   standard errors over 2000 seeds.  A Rademacher ``omega_j`` with ``v^T omega_j = 0``
   happens with probability 1/2.

So when ``sigma_min(R) <= 10 s eps sigma_max(R)`` the samples use
:func:`_xtrace_samples_rank_revealing`.  That replaces ``Q_(i)`` by an orthonormal basis of
the numerical range of ``R`` without column ``i`` (singular values above the same
threshold), lifted by ``Q``.  This is ``range(Y without column i)``, a function of the
other columns only, so the estimate is unbiased again, and exact under the same condition.
It costs ``s`` SVDs of ``s x (s - 1)`` matrices, ``O(s^4)`` flops, and no matvecs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.hutchinson import TraceEstimate, _check_common, _mean_and_stderr
from landscape.lanczos import Matvec, _apply, _check_positive_int, _random_vector, _resolve_generator

__all__ = ["xtrace"]

_RANK_RTOL_FACTOR = 10.0  # numerical rank threshold: 10 s eps sigma_max(R), above QR's backward error


def _leave_one_out_normals(r: Tensor) -> Tensor:
    """``S`` [s, s]: column ``i`` is ``s_i = R^{-T} e_i / ||R^{-T} e_i||`` for a nonsingular ``R``.

    ``s_i`` is the unit normal of ``range(R without column i)`` in ``R^s``.  A triangular
    solve ``R^T X = I`` rather than an explicit inverse; the normalization removes the
    ``1 / sigma_min(R)`` scale.
    """
    eye = torch.eye(r.shape[0], dtype=r.dtype, device=r.device)
    x = torch.linalg.solve_triangular(r.T, eye, upper=False)  # [s, s] = R^{-T}
    return x / x.norm(dim=0)


def _xtrace_samples(omega_y: Tensor, w: Tensor, r: Tensor, h: Tensor, normals: Tensor) -> Tensor:
    """The ``s`` leave-one-out samples ``t_i`` [s] of the module docstring, all at once.

    Args:
        omega_y: ``omega_i^T y_i`` [s].
        w: ``W = Q^T Omega`` [s, s].
        r: ``R`` [s, s] with ``Y = Q R``.
        h: ``H = Q^T A Q`` [s, s], symmetric.
        normals: ``S`` [s, s], columns ``s_i`` (:func:`_leave_one_out_normals`).
    """
    hs, hw = h @ normals, h @ w  # [s, s]: column i is H s_i, H w_i
    s_h_s = (normals * hs).sum(0)  # [s] s_i^T H s_i
    c = (normals * w).sum(0)  # [s] c_i = s_i^T w_i
    projected = torch.trace(h) - s_h_s  # tr(Q_(i)^T A Q_(i))
    residual = (omega_y - 2 * (w * r).sum(0) + (w * hw).sum(0)
                + 2 * c * (normals * (r - hw)).sum(0) + c ** 2 * s_h_s)  # w_i'^T A w_i'
    return projected + residual


def _xtrace_samples_rank_revealing(omega_y: Tensor, w: Tensor, r: Tensor, h: Tensor, rtol: float) -> Tensor:
    """The samples ``t_i`` [s] with ``Q_(i) = Q U_i`` for a numerically singular ``R``.

    ``U_i`` [s, k_i] holds the left singular vectors of ``R`` without column ``i`` whose
    singular values exceed ``rtol * sigma_max(R)``.  With ``p = U_i U_i^T w``:
    ``t_i = tr(U_i^T H U_i) + omega_i^T y_i - 2 p^T r + p^T H p``.  Arguments as in
    :func:`_xtrace_samples`.
    """
    s = r.shape[1]
    floor = rtol * float(torch.linalg.matrix_norm(r, ord=2))
    samples = torch.empty(s, dtype=r.dtype, device=r.device)
    for i in range(s):
        others = torch.cat([r[:, :i], r[:, i + 1:]], dim=1)  # [s, s - 1]
        u, sv, _ = torch.linalg.svd(others, full_matrices=False)  # u [s, s - 1]
        u = u[:, sv > floor]  # [s, k_i]; k_i = 0 when Y without column i vanishes
        p = u @ (u.T @ w[:, i])  # [s] = Q^T Q_(i) Q_(i)^T omega_i
        samples[i] = torch.trace(u.T @ h @ u) + omega_y[i] - 2 * (p @ r[:, i]) + p @ (h @ p)
    return samples


def xtrace(
    matvec: Matvec,
    n: int,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> TraceEstimate:
    """XTrace estimate of ``tr(A)`` for a symmetric ``A`` with ``2 (num_matvecs // 2)`` matvecs.

    ``t_i = tr(Q_(i)^T A Q_(i)) + omega_i^T (I - Q_(i) Q_(i)^T) A (I - Q_(i) Q_(i)^T) omega_i``
    for ``i = 1..s``, ``s = num_matvecs // 2``, where ``Q_(i)`` is an orthonormal basis of
    ``range(A [omega_1 .. omega_s] without column i)`` and the ``omega_i`` [n] are Rademacher.
    Returns ``mean_i t_i`` and ``std(t_i) / sqrt(s)`` (the formulas are in the module
    docstring).  Unbiased.  Exact when ``rank(A) <= s - 1`` and the sketch spans ``range(A)``
    without any one of its columns.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``; called one vector at a time.
        n: dimension of ``A``, ``>= 2``.
        num_matvecs: budget, ``4 <= num_matvecs <= 2 n``; an odd budget is floored to even
            (s = num_matvecs // 2 sketch columns, each used twice).
        generator: source of the sketch (None: a fresh OS-seeded generator; the global RNG
            is never used).
        dtype, device: working precision (float32/float64) and device (default CPU); the
            ``s x s`` algebra is done in float64 on the CPU.

    Returns:
        :class:`~landscape.hutchinson.TraceEstimate` with ``num_matvecs = 2 s`` (the
        matvecs actually spent).

    Raises:
        ValueError: ``n < 2``, ``num_matvecs < 4`` or ``> 2 n``, a bad dtype, or a
            misshapen or non-finite matvec output.
        TypeError: non-integer ``n`` or ``num_matvecs``; a non-generator ``generator``;
            a matvec that returns no tensor.

    Example::

        est = xtrace(lambda v: A @ v, n, 40, generator=g)
        # A of rank <= 19: est.value == A.trace() up to rounding and est.stderr ~ 0
    """
    n, dev = _check_common(n, dtype, device)
    if n < 2:
        raise ValueError(f"xtrace needs n >= 2 (two sketch columns for a standard error), got n={n}; "
                         "for n = 1 the trace is matvec(ones(1))")
    num_matvecs = _check_positive_int("num_matvecs", num_matvecs, 2 * n, "2n", minimum=4,
                                      why=" (2 sketch columns and their 2 products)")
    gen = _resolve_generator(generator)
    s = num_matvecs // 2
    omega = torch.stack([_random_vector(n, gen, dtype, dev) for _ in range(s)], dim=1)  # [n, s]
    y = torch.stack([_apply(matvec, omega[:, j]) for j in range(s)], dim=1)  # [n, s] = A Omega
    q, r = torch.linalg.qr(y)  # q [n, s], r [s, s]
    z = torch.stack([_apply(matvec, q[:, j]) for j in range(s)], dim=1)  # [n, s] = A Q

    # s x s algebra in float64 on the CPU: cheap, and safe for a float32 R near singular
    def small(t: Tensor) -> Tensor:
        return t.to(dtype=torch.float64, device="cpu")

    h = small(q.T @ z)
    h = (h + h.T) / 2  # [s, s] = Q^T A Q, symmetric up to the matvec's rounding
    w = small(q.T @ omega)  # [s, s]
    omega_y = small((omega * y).sum(0))  # [s] omega_i^T A omega_i
    r = small(r)
    rtol = _RANK_RTOL_FACTOR * s * torch.finfo(dtype).eps  # QR ran in the working dtype
    sv = torch.linalg.svdvals(r)  # [s], descending
    if float(sv[-1]) > rtol * float(sv[0]):
        samples = _xtrace_samples(omega_y, w, r, h, _leave_one_out_normals(r))
    else:  # numerically singular R: see "Rank-deficient sketches" in the module docstring
        samples = _xtrace_samples_rank_revealing(omega_y, w, r, h, rtol)
    value, stderr = _mean_and_stderr(samples)
    return TraceEstimate(value, stderr, 2 * s)
