"""XTrace (Epperly, Tropp & Webber 2024): Hessian trace from exchangeable leave-one-out Hutch++.

The estimator sees a symmetric ``A`` [n, n] only through ``matvec(v [n]) -> A v [n]``
(docs/science.md section 5.2), as :mod:`landscape.hutchinson` does.  Reference: E. N. Epperly,
J. A. Tropp & R. J. Webber, "XTrace: Making the most of every sample in stochastic trace
estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024 (section 2 for the estimator; its
"improved" variant, with test vectors on a sphere and a rescaled Hutchinson term, is the
default here).

With ``s = num_matvecs // 2`` test vectors ``Omega = [omega_1 .. omega_s]`` [n, s]:

- ``Y = A Omega`` [n, s] (s matvecs), reduced QR ``Y = Q R`` (``Q`` [n, s], ``R`` [s, s]),
  ``Z = A Q`` [n, s] (s matvecs), ``H = Q^T Z`` [s, s] (symmetrized), ``W = Q^T Omega``.
- Leave one out: ``Q_(i)`` spans ``range(Y without column i)``.  Its normal inside
  ``range(Q)`` is ``s_i = R^{-T} e_i / ||R^{-T} e_i||`` (``s_i^T R e_j = 0`` for
  ``j != i``), so ``Q_(i) Q_(i)^T = Q (I - s_i s_i^T) Q^T``.
- Hutch++ with the sketch built from the other ``s - 1`` columns and ``omega_i`` as its one
  Hutchinson probe, ``w_i' = (I - Q_(i) Q_(i)^T) omega_i``:

  ``test_vectors="rademacher"`` (the basic estimator of the paper's section 2):
  ``t_i = tr(Q_(i)^T A Q_(i)) + w_i'^T A w_i'``.

  ``test_vectors="sphere"`` (the improved variant, default): ``omega_i`` uniform on the
  sphere of radius ``sqrt(n)`` (a normalized Gaussian) and
  ``t_i = tr(Q_(i)^T A Q_(i)) + (n - s + 1) w_i'^T A w_i' / ||w_i'||^2``.

  With ``w = W[:, i]``, ``r = R[:, i]``, ``c = s_i^T w`` and ``Q^T A omega_i = Q^T y_i = r``
  (this, and the cross terms, use the symmetry of ``A``) everything is ``s x s`` algebra::

      tr(Q_(i)^T A Q_(i)) = tr(H) - s_i^T H s_i
      w_i'^T A w_i'       = omega_i^T y_i - 2 w^T r + w^T H w + 2 c s_i^T (r - H w) + c^2 s_i^T H s_i
      ||w_i'||^2          = ||omega_i||^2 - ||w||^2 + c^2 = ||(I - Q Q^T) omega_i||^2 + c^2

  (the last form is a sum of two non-negative terms: no cancellation when ``s`` is close
  to ``n``; ``(I - Q Q^T) Omega`` costs ``O(n s^2)`` flops and no matvec).

- ``XTrace = mean_i t_i``; standard error ``std(t_i, ddof=1) / sqrt(s)`` (the paper's
  error estimate; the ``t_i`` are exchangeable but not independent, so it is a heuristic,
  checked over seeds in ``tests/test_xtrace.py``).

Why each ``t_i`` is unbiased.  ``Q_(i)`` is a function of the other columns only; write
``P_i = I - Q_(i) Q_(i)^T`` for the projector onto its complement ``V_i`` and condition on
the other columns.  Rademacher: ``E[omega omega^T] = I``, so
``E[w_i'^T A w_i'] = tr(P_i A P_i) = tr(A) - tr(Q_(i)^T A Q_(i))``.  Sphere: a uniform
``omega_i`` is ``sqrt(n) g / ||g||`` for a standard Gaussian ``g``, and ``P_i g`` is a
standard Gaussian in ``V_i``, so ``u = w_i' / ||w_i'|| = P_i g / ||P_i g||`` is uniform on the
unit sphere of ``V_i``, of dimension ``d_i = n - rank(Q_(i)) = n - s + 1``.  Then
``E[u u^T] = P_i / d_i`` and ``E[d_i u^T A u] = tr(P_i A P_i)`` again.  (The sphere estimate
does not depend on the norms of the ``omega_j`` at all: ``Q_(i)`` depends on the directions
of the ``A omega_j`` only, and the rescaled term is homogeneous of degree 0 in ``omega_i``;
the radius ``sqrt(n)`` is a convention.)

Why the sphere variant is better on a flat spectrum.  For ``A = mu I`` it is exact:
``t_i = mu (s - 1) + (n - s + 1) mu = mu n``, so its error comes only from the spread of the
eigenvalues around their mean.  The Rademacher variant gives
``t_i = mu (s - 1) + mu (n - omega_i^T Q_(i) Q_(i)^T omega_i)``: ``omega_i^T Q_(i) Q_(i)^T
omega_i`` is about ``sum_{j != i} (omega_i^T omega_j)^2 / n``, a ``chi^2_{s-1}``-like
variable, and averaged over ``i`` (each pair of columns appears twice) this leaves an error
of standard deviation about ``2 |mu| sqrt((s - 1) / s)`` for ``n >> s`` (``1.8 |mu|``
measured at ``n = 200``, ``s = 15``), whatever the spread.  Hutchinson with Rademacher
probes is exact on diagonal matrices and pays no such ``mu`` term either.  On a flat
spectrum there is nothing to deflate, and XTrace spends half its products on ``A Q`` (``s``
Hutchinson terms against Hutchinson's ``2 s``), so Hutchinson can still win, by about
``sqrt(2)`` in RMS error or a little less: measured in ``tests/test_xtrace.py`` (RMS errors
0.51 sphere, 1.93 Rademacher, 0.40 Hutchinson).

Assumptions and properties: ``A`` symmetric.  Both variants are unbiased (above).  If
``range(A omega_j, j != i) = range(A)`` for every ``i`` (almost surely when
``rank(A) <= s - 1`` and the eigenvectors are in general position) then
``(I - Q_(i) Q_(i)^T) A = 0`` and every ``t_i = tr(A)``: exact, stderr ~ 0.

Rank-deficient sketches (found by testing; see ``tests/test_xtrace.py``).  When
``rank(Y) < s`` the matrix ``R`` is singular, and ``Q`` has ``s - rank(Y)`` columns that
QR made up.  For a generic low-rank ``A`` they are rounding noise (``sigma_min(R) ~
sqrt(n) eps sigma_max(R)``).  The formula above then stays exact to ~1e-16 in float64,
because ``s_i`` is normalized, whether ``R^{-T}`` comes from an inverse or a triangular
solve.  Two cases break it:

1. ``R`` with exact zeros on its diagonal (``A = 0``, or, for Rademacher test vectors, a
   range aligned with coordinates, where their products vanish exactly).  ``inv`` raises and the triangular solve
   returns nan.
2. Worse: the made-up columns of ``Q`` depend on every column, ``y_i`` included.  When
   ``y_i`` is needed to span ``range(Y)``, ``s_i`` is that new direction and the made-up
   columns stay in ``Q_(i)``.  The leave-one-out basis then depends on ``omega_i`` and the
   estimate is biased.  Example: for ``A = v v^T - 2 u u^T``, ``v = (e_1 + e_2)/sqrt(2)``,
   ``u = (e_3 + e_4)/sqrt(2)``, ``n = 6``, ``s = 4``, the bias is -0.066, which is 15
   standard errors over 2000 seeds.  A Rademacher ``omega_j`` with ``v^T omega_j = 0``
   happens with probability 1/2 (a Gaussian sketch of a generic low-rank ``A`` has
   ``rank(Y) = rank(A)`` with every ``y_i`` redundant, so this is mostly a Rademacher case).

So when ``sigma_min(R) <= 10 s eps sigma_max(R)`` the samples use
:func:`_xtrace_samples_rank_revealing`.  That replaces ``Q_(i)`` by an orthonormal basis of
the numerical range of ``R`` without column ``i`` (singular values above the same
threshold), lifted by ``Q``.  This is ``range(Y without column i)``, a function of the
other columns only, so the estimate is unbiased again, and exact under the same condition.
With ``k_i`` kept singular values, ``Q_(i)`` has rank ``k_i`` (not ``s - 1``), so the sphere
variant rescales by ``d_i = n - k_i`` and takes ``||w_i'||^2`` from this projector.
It costs ``s`` SVDs of ``s x (s - 1)`` matrices, ``O(s^4)`` flops, and no matvecs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from analysis.estimate import Estimate, mean_estimate
from analysis.rng import resolve_generator
from landscape.matvec import (
    Matvec,
    apply_matvec,
    check_positive_int,
    operator_size_and_device,
    random_vector,
)

__all__ = ["xtrace"]

_RANK_RTOL_FACTOR = 10.0  # numerical rank threshold: 10 s eps sigma_max(R), above QR's backward error
_TEST_VECTORS = ("sphere", "rademacher")


def _sphere_vector(n: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A vector [n] uniform on the sphere of radius ``sqrt(n)``: a normalized standard Gaussian."""
    g = random_vector(n, generator, dtype, device, "gaussian")
    return g * (n ** 0.5 / g.norm())


def _leave_one_out_normals(r: Tensor) -> Tensor:
    """``S`` [s, s]: column ``i`` is ``s_i = R^{-T} e_i / ||R^{-T} e_i||`` for a nonsingular ``R``.

    ``s_i`` is the unit normal of ``range(R without column i)`` in ``R^s``.  A triangular
    solve ``R^T X = I`` rather than an explicit inverse; the normalization removes the
    ``1 / sigma_min(R)`` scale.
    """
    eye = torch.eye(r.shape[0], dtype=r.dtype, device=r.device)
    x = torch.linalg.solve_triangular(r.T, eye, upper=False)  # [s, s] = R^{-T}
    return x / x.norm(dim=0)


def _xtrace_samples(
    omega_y: Tensor, w: Tensor, r: Tensor, h: Tensor, normals: Tensor, *,
    outside_sq: Tensor | None = None, n: int | None = None,
) -> Tensor:
    """The ``s`` leave-one-out samples ``t_i`` [s] of the module docstring, all at once.

    Args:
        omega_y: ``omega_i^T y_i`` [s].
        w: ``W = Q^T Omega`` [s, s].
        r: ``R`` [s, s] with ``Y = Q R``.
        h: ``H = Q^T A Q`` [s, s], symmetric.
        normals: ``S`` [s, s], columns ``s_i`` (:func:`_leave_one_out_normals`).
        outside_sq, n: for sphere test vectors, ``||(I - Q Q^T) omega_i||^2`` [s] and the
            dimension ``n``: the Hutchinson term is rescaled by ``(n - s + 1) / ||w_i'||^2``.
            None (both): Rademacher, no rescaling.
    """
    hs, hw = h @ normals, h @ w  # [s, s]: column i is H s_i, H w_i
    s_h_s = (normals * hs).sum(0)  # [s] s_i^T H s_i
    c = (normals * w).sum(0)  # [s] c_i = s_i^T w_i
    projected = torch.trace(h) - s_h_s  # tr(Q_(i)^T A Q_(i))
    residual = (omega_y - 2 * (w * r).sum(0) + (w * hw).sum(0)
                + 2 * c * (normals * (r - hw)).sum(0) + c ** 2 * s_h_s)  # w_i'^T A w_i'
    if outside_sq is None or n is None:
        return projected + residual
    complement_dim = n - r.shape[1] + 1  # n - rank(Q_(i))
    return projected + complement_dim * residual / (outside_sq + c ** 2)  # ||w_i'||^2 = outside_sq + c^2


def _xtrace_samples_rank_revealing(
    omega_y: Tensor, w: Tensor, r: Tensor, h: Tensor, rtol: float, *,
    outside_sq: Tensor | None = None, n: int | None = None,
) -> Tensor:
    """The samples ``t_i`` [s] with ``Q_(i) = Q U_i`` for a numerically singular ``R``.

    ``U_i`` [s, k_i] holds the left singular vectors of ``R`` without column ``i`` whose
    singular values exceed ``rtol * sigma_max(R)``.  With ``p = U_i U_i^T w``:
    ``t_i = tr(U_i^T H U_i) + omega_i^T y_i - 2 p^T r + p^T H p``; for sphere test vectors
    the last three terms (``w_i'^T A w_i'``) are rescaled by ``(n - k_i) / ||w_i'||^2`` with
    ``||w_i'||^2 = ||omega_i||^2 - ||U_i^T w||^2 = outside_sq_i + ||w - p||^2``.  Arguments as
    in :func:`_xtrace_samples`.
    """
    s = r.shape[1]
    floor = rtol * float(torch.linalg.matrix_norm(r, ord=2))
    samples = torch.empty(s, dtype=r.dtype, device=r.device)
    for i in range(s):
        others = torch.cat([r[:, :i], r[:, i + 1:]], dim=1)  # [s, s - 1]
        u, sv, _ = torch.linalg.svd(others, full_matrices=False)  # u [s, s - 1]
        u = u[:, sv > floor]  # [s, k_i]; k_i = 0 when Y without column i vanishes
        p = u @ (u.T @ w[:, i])  # [s] = Q^T Q_(i) Q_(i)^T omega_i
        residual = omega_y[i] - 2 * (p @ r[:, i]) + p @ (h @ p)  # w_i'^T A w_i'
        if outside_sq is not None and n is not None:
            perp_sq = outside_sq[i] + (w[:, i] - p).square().sum()  # ||w_i'||^2
            residual = (n - u.shape[1]) * residual / perp_sq
        samples[i] = torch.trace(u.T @ h @ u) + residual
    return samples


def xtrace(
    matvec: Matvec,
    n: int,
    num_matvecs: int,
    *,
    test_vectors: str = "sphere",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Estimate:
    """XTrace estimate of ``tr(A)`` for a symmetric ``A`` with ``2 (num_matvecs // 2)`` matvecs.

    For ``i = 1..s``, ``s = num_matvecs // 2``, with ``Q_(i)`` an orthonormal basis of
    ``range(A [omega_1 .. omega_s] without column i)`` and ``w_i' = (I - Q_(i) Q_(i)^T) omega_i``:

    - ``test_vectors="sphere"`` (default; the paper's improved variant): ``omega_i`` [n]
      uniform on the sphere of radius ``sqrt(n)``,
      ``t_i = tr(Q_(i)^T A Q_(i)) + (n - s + 1) w_i'^T A w_i' / ||w_i'||^2``.
    - ``test_vectors="rademacher"``: ``omega_i`` [n] Rademacher,
      ``t_i = tr(Q_(i)^T A Q_(i)) + w_i'^T A w_i'`` (the basic estimator; what curvlinops'
      ``xtrace`` computes).

    Returns ``mean_i t_i`` and ``std(t_i) / sqrt(s)`` (the formulas are in the module
    docstring).  Both are unbiased and exact when ``rank(A) <= s - 1`` and the sketch spans
    ``range(A)`` without any one of its columns; the sphere variant is also exact for
    ``A = mu I`` and is the better one on flat spectra.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``; called one vector at a time.
        n: dimension of ``A``, ``>= 2``.
        num_matvecs: budget, ``4 <= num_matvecs <= 2 n``; an odd budget is floored to even
            (s = num_matvecs // 2 sketch columns, each used twice).
        test_vectors: ``"sphere"`` or ``"rademacher"`` (above).
        generator: source of the sketch (None: a fresh OS-seeded generator; the global RNG
            is never used).
        dtype, device: working precision (float32/float64) and device (default CPU); the
            ``s x s`` algebra is done in float64 on the CPU.

    Returns:
        :class:`~analysis.estimate.Estimate` with ``samples = s``, ``num_matvecs = 2 s`` (the
        matvecs actually spent).

    Raises:
        ValueError: ``n < 2``, ``num_matvecs < 4`` or ``> 2 n``, an unknown ``test_vectors``,
            a bad dtype, or a misshapen or non-finite matvec output.
        TypeError: non-integer ``n`` or ``num_matvecs``; a non-generator ``generator``;
            a matvec that returns no tensor.

    Example::

        est = xtrace(lambda v: A @ v, n, 40, generator=g)
        # A of rank <= 19, or A = mu I: est.value == A.trace() up to rounding, est.stderr ~ 0
    """
    n, dev = operator_size_and_device(n, dtype, device)
    if n < 2:
        raise ValueError(f"xtrace needs n >= 2 (two sketch columns for a standard error), got n={n}; "
                         "for n = 1 the trace is matvec(ones(1))")
    num_matvecs = check_positive_int("num_matvecs", num_matvecs, 2 * n, "2n", minimum=4,
                                      why=" (2 sketch columns and their 2 products)")
    if test_vectors not in _TEST_VECTORS:
        raise ValueError(f"test_vectors must be one of {', '.join(map(repr, _TEST_VECTORS))}, "
                         f"got test_vectors={test_vectors!r}")
    gen = resolve_generator(generator)
    s = num_matvecs // 2
    draw = _sphere_vector if test_vectors == "sphere" else random_vector
    omega = torch.stack([draw(n, gen, dtype, dev) for _ in range(s)], dim=1)  # [n, s]
    y = torch.stack([apply_matvec(matvec, omega[:, j]) for j in range(s)], dim=1)  # [n, s] = A Omega
    q, r = torch.linalg.qr(y)  # q [n, s], r [s, s]
    z = torch.stack([apply_matvec(matvec, q[:, j]) for j in range(s)], dim=1)  # [n, s] = A Q

    # s x s algebra in float64 on the CPU: cheap, and safe for a float32 R near singular
    def small(t: Tensor) -> Tensor:
        return t.to(dtype=torch.float64, device="cpu")

    h = small(q.T @ z)
    h = (h + h.T) / 2  # [s, s] = Q^T A Q, symmetric up to the matvec's rounding
    q_omega = q.T @ omega  # [s, s] in the working dtype
    w = small(q_omega)
    omega_y = small((omega * y).sum(0))  # [s] omega_i^T A omega_i
    r = small(r)
    # sphere: ||(I - Q Q^T) omega_i||^2 [s] from the residual itself, not ||omega||^2 - ||w||^2
    # (no cancellation when s is close to n; O(n s^2) flops, no matvec)
    sphere = {"outside_sq": small((omega - q @ q_omega).square().sum(0)), "n": n} if test_vectors == "sphere" else {}
    rtol = _RANK_RTOL_FACTOR * s * torch.finfo(dtype).eps  # QR ran in the working dtype
    sv = torch.linalg.svdvals(r)  # [s], descending
    if float(sv[-1]) > rtol * float(sv[0]):
        samples = _xtrace_samples(omega_y, w, r, h, _leave_one_out_normals(r), **sphere)
    else:  # numerically singular R: see "Rank-deficient sketches" in the module docstring
        samples = _xtrace_samples_rank_revealing(omega_y, w, r, h, rtol, **sphere)
    return mean_estimate(samples, num_matvecs=2 * s)
