"""Top Hessian eigenvalues (docs/science.md section 5.2): Lanczos stopped by the bound it gives for free.

:func:`lanczos_top_eigenvalues` grows one Krylov space with the recurrence of
:mod:`landscape.lanczos` and stops as soon as the wanted Ritz values meet a relative
tolerance on the eigenvalue, read off the tridiagonal without a matvec.  Eigenvalues are
*algebraic*: "largest" means closest to ``+inf`` (for the spectrum ``{-10, 3}`` it is 3),
"smallest" closest to ``-inf``; only :func:`landscape.power_iteration.power_iteration`
targets the largest *magnitude*.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from analysis.rng import resolve_generator
from landscape.lanczos import default_breakdown_tol, LanczosProcess
from landscape.matvec import Matvec, check_positive_int, check_start, random_vector, working_dtype_device

__all__ = ["EigenResult", "lanczos_top_eigenvalues"]


class EigenResult(NamedTuple):
    """Top-k (algebraic) eigenpairs, ordered from the most extreme: largest first for
    ``which="largest"``, smallest first for ``which="smallest"``."""

    eigenvalues: Tensor  # [k] float64, CPU
    eigenvectors: Tensor  # [k, n] unit rows, working dtype and device
    residuals: Tensor  # [k] ||A y - theta y|| from the recurrence, no matvec (float64, CPU)
    num_matvecs: int  # every product with A
    converged: bool  # every error bound <= tol * |theta| (see lanczos_top_eigenvalues)
    error_estimates: Tensor  # [k] estimated |lambda - theta|, min(r, r^2 / gap) (float64, CPU)


class _RunResult(NamedTuple):
    theta: Tensor  # [t] top Ritz values, descending (float64, CPU)
    vectors: Tensor  # [t, n] their Ritz vectors (working dtype/device)
    images: Tensor  # [t, n] A y_i = theta_i y_i + beta_m s_{m,i} q_{m+1}, no matvec
    residuals: Tensor  # [t] beta_m |s_{m,i}| (float64, CPU)
    others: Tensor  # [m - t] the remaining Ritz values (their gaps enter the bounds)
    converged: bool


def _error_estimates(theta: Tensor, residuals: Tensor, others: Tensor) -> Tensor:
    """Estimated eigenvalue errors ``min(r, r^2 / delta)`` of Ritz pairs (Parlett, *The
    Symmetric Eigenvalue Problem*, 11.7).

    For a unit ``y`` with ``||A y - theta y|| = r`` an eigenvalue of ``A`` lies within ``r``
    of ``theta`` (Krylov-Bogoliubov: a bound), and within ``r^2 / delta`` when no other
    eigenvalue is closer than ``delta`` (Kato-Temple).  ``delta`` is estimated by the
    distance to the nearest other Ritz value, which overestimates the true gap while the
    neighbours have not converged: an estimate of the error, not a bound (``r`` when no
    other Ritz value is known).
    """
    allv = torch.cat([theta, others])
    estimates = residuals.clone()
    for i in range(theta.numel()):
        dist = (allv - theta[i]).abs()
        dist[i] = math.inf
        delta = float(dist.min())
        if 0 < delta < math.inf:
            estimates[i] = min(float(residuals[i]), float(residuals[i]) ** 2 / delta)
    return estimates


def _tolerance(theta: Tensor, tol: float, scale: float, eps: float) -> Tensor:
    """``max(tol |theta|, 100 eps scale)``: relative to the eigenvalue, but never below the
    rounding level of the matvecs (an eigenvalue at zero can only be found to that)."""
    return torch.clamp(tol * theta.abs(), min=100 * eps * scale)


def _converge_run(run: LanczosProcess, target: int, tol: float, eps: float) -> _RunResult:
    """Step ``run`` until the error bounds of its ``target`` largest Ritz values meet ``tol``.

    For ``T = S diag(theta) S^T`` the Ritz pair ``(theta_i, y_i = Q^T s_i)`` has residual
    ``A y_i - theta_i y_i = beta_m s_{m,i} q_{m+1}`` (Golub & Van Loan 10.1.4; exact up to
    rounding under full reorthogonalization), so its norm ``beta_m |s_{m,i}|`` and the
    eigenvalue bound of :func:`_error_bounds` cost no matvec, and neither does ``A y_i``.
    """
    while True:
        run.step()
        m = run.size
        if m < target and not run.exhausted:
            continue
        theta, vecs = torch.linalg.eigh(run.tridiagonal())  # ascending
        t = min(target, m)
        top, rest = torch.arange(m - 1, m - 1 - t, -1), torch.arange(0, m - t)
        run.scale = max(run.scale, float(theta.abs().max()))
        residuals = (run.beta[-1] * vecs[m - 1, top]).abs()
        if run.breakdown:
            residuals = torch.zeros_like(residuals)  # span(Q) is invariant: Ritz pairs are eigenpairs
        ok = bool((residuals <= _tolerance(theta[top], tol, run.scale, eps)).all())
        if not (ok or run.exhausted):
            continue
        basis = run.basis()
        s = vecs[:, top].to(dtype=basis.dtype, device=basis.device)  # [m, t]
        ritz = s.T @ basis  # [t, n]
        images = theta[top].to(dtype=basis.dtype, device=basis.device)[:, None] * ritz
        q_next = run.next_vector()
        if q_next is not None:
            images = images + (run.beta[-1] * s[m - 1])[:, None] * q_next[None, :]
        return _RunResult(theta[top], ritz, images, residuals, theta[rest], ok)


def _rayleigh_ritz(y: Tensor, ay: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rayleigh-Ritz on span(rows of ``y``) [p, n] given ``ay = A y`` [p, n] (no matvec).

    ``H = sym(y ay^T) = U diag(theta) U^T``; returns (theta [p] float64 CPU, ``U^T y``,
    ``U^T ay``, residual norms ``||U^T ay - theta U^T y||`` [p] float64 CPU).
    """
    h = (y @ ay.T).double().cpu()
    theta, u = torch.linalg.eigh((h + h.T) / 2)
    u_w = u.T.to(dtype=y.dtype, device=y.device)
    z, az = u_w @ y, u_w @ ay
    res = (az - theta.to(dtype=y.dtype, device=y.device)[:, None] * z).norm(dim=1).double().cpu()
    return theta, z, az, res


def _restart_vector(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device,
                    distribution: Literal["rademacher", "gaussian"], locked: Tensor) -> Tensor | None:
    """A random vector orthogonal to ``locked`` [p, n], or None if none is found (p ~ n).

    Rademacher draws can lie in span(locked) for tiny n (there are only 2^n of them), so a
    draw that loses all but sqrt(eps) of its norm is replaced by a Gaussian one.
    """
    floor = math.sqrt(torch.finfo(dtype).eps)
    for attempt in range(10):
        v = random_vector(n, gen, dtype, device, distribution if attempt == 0 else "gaussian")
        norm = float(v.norm())
        for _ in range(2):  # CGS2 against the locked eigenvectors
            v = v - (v @ locked.T) @ locked
        if float(v.norm()) > floor * norm:
            return v
    return None


def lanczos_top_eigenvalues(
    matvec: Matvec,
    n: int,
    k: int = 1,
    *,
    which: Literal["largest", "smallest"] = "largest",
    tol: float = 1e-3,
    max_steps: int | None = None,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    start_distribution: Literal["rademacher", "gaussian"] = "rademacher",
    certify: bool = False,
) -> EigenResult:
    """The ``k`` largest (or smallest) *algebraic* eigenvalues of a symmetric ``A`` and their vectors.

    "largest" orders eigenvalues by value, not magnitude: for the spectrum ``{-10, 3}``
    it returns 3 (``which="smallest"`` returns -10).  ``which="smallest"`` runs the same
    algorithm on ``-A``.

    Algorithm (Lanczos with full reorthogonalization; Golub & Van Loan ch. 10, Parlett ch.
    11-13): grow the Krylov space ``K_m(A, q_1)`` one matvec at a time; after each step
    take the Ritz pairs ``(theta_i, y_i)`` of ``T = S diag(theta) S^T`` and stop as soon as
    each of the ``k`` wanted ones has

        r_i = ||A y_i - theta_i y_i|| = beta_m |S[m-1, i]|  <=  tol * |theta_i|,

    a relative tolerance on the **eigenvalue**: some eigenvalue of ``A`` lies within
    ``r_i`` of ``theta_i`` (Krylov-Bogoliubov), so each returned value is within
    ``tol`` relative of an eigenvalue (or within the rounding level ``100 eps ||A||`` of
    one, for eigenvalues too close to zero for a relative tolerance).  ``r_i`` comes from the tridiagonal for
    free: no matvec is spent on checking convergence, and none on the returned
    ``residuals``.  The actual error is usually far smaller, about ``r_i^2 / gap``
    (Kato-Temple): ``error_estimates`` reports ``min(r_i, r_i^2 / delta_i)`` with
    ``delta_i`` the distance to the nearest other Ritz value (an estimate, not a bound).

    A single Krylov space holds one direction of each eigenspace, so an exactly repeated
    eigenvalue (a zero gap) is returned once by default, followed by the next distinct
    one; every returned value is still within its bound of an eigenvalue of ``A``.  With
    ``certify=True`` converged pairs are locked and Lanczos restarts in their orthogonal
    complement until a restart's top Ritz value no longer beats the ``k``-th (deflation),
    which finds multiplicities at the price of at least one more run; a last
    Rayleigh-Ritz step on all locked vectors (their images under ``A`` come from the
    recurrence) removes the couplings between runs.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        k: number of eigenpairs, ``1 <= k <= n``.
        which: "largest" (largest algebraic, default) or "smallest" (smallest algebraic).
        tol: relative tolerance on each eigenvalue (default 1e-3), in ``[10 eps, 1)``.
        max_steps: Krylov dimension limit of each run (default ``100 + 20 k``; capped at
            ``n``).  The basis is stored (``max_steps x n`` numbers), the price of full
            reorthogonalization; a run stops as soon as its values meet ``tol``.
        start: start vector of the first run (None: random from ``generator``); restarts
            still draw from ``generator``.
        generator: source of the random start vectors (None: fresh OS-seeded generator).
        dtype, device: working precision (float32/float64) and device (default: the
            start's, else the operator's for ``op.matvec`` of a ``HessianOperator``, else
            float64 on CPU).
        start_distribution: "rademacher" or "gaussian" random starts.
        certify: restart in the complement of the converged pairs until no eigenvalue above
            the ``k``-th is missing (finds repeated eigenvalues; costs at least one run more).

    Returns:
        :class:`EigenResult`: eigenvalues [k] (most extreme first), unit eigenvectors
        [k, n], residual norms [k] (bounds on the distance to the nearest eigenvalue) and
        error estimates [k] from the recurrence, the number of matvecs, and ``converged``
        (False when ``max_steps`` ran out before every residual met ``tol``; the residuals
        then say how far off each value may be).

    Raises:
        ValueError: ``k < 1`` or ``k > n``, an unknown ``which``, a bad ``tol`` or
            ``max_steps``, a zero/misshapen start, or a misshapen/non-finite matvec output.
        TypeError: non-integer ``n``, ``k``, ``max_steps``; a non-generator ``generator``.

    Example (relations, not pinned numbers)::

        res = lanczos_top_eigenvalues(lambda v: A @ v, n, k=3, generator=g)
        # (A @ res.eigenvectors.T - res.eigenvectors.T * res.eigenvalues).norm(dim=0) ~= res.residuals
        # |eigvalsh(A)[-1] - res.eigenvalues[0]| <= res.residuals[0]  (the nearest eigenvalue)
    """
    n = check_positive_int("n", n)
    k = check_positive_int("k", k, n)
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest' (algebraic), got {which!r}")
    dtype, dev = working_dtype_device(start, dtype, device, matvec)
    eps = torch.finfo(dtype).eps
    if not (isinstance(tol, (int, float)) and 10 * eps <= tol < 1.0):
        raise ValueError(f"tol={tol} must lie in [10 * eps = {10 * eps:.2g}, 1) for {dtype}; "
                         "use a larger tol or float64")
    if max_steps is None:
        max_steps = 100 + 20 * k
    # a cap, not a request: a Krylov space cannot exceed n (tiny models have n < 40)
    max_steps = min(check_positive_int("max_steps", max_steps), n)
    if max_steps < k:
        raise ValueError(f"max_steps={max_steps} is smaller than k={k}; use max_steps >= k")
    if start is not None:
        start = check_start(start, n, dtype, dev)
    if start_distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"start_distribution must be 'rademacher' or 'gaussian', got {start_distribution!r}")
    gen = resolve_generator(generator)  # restarts always draw, even after a given start

    sign = 1.0 if which == "largest" else -1.0
    op: Matvec = matvec if sign > 0 else (lambda v: -matvec(v))
    breakdown_tol = default_breakdown_tol(dtype)
    v0 = start if start is not None else random_vector(n, gen, dtype, dev, start_distribution)
    run = LanczosProcess(op, v0, max_steps, locked=None, reorthogonalize=True, keep_basis=True,
                   breakdown_tol=breakdown_tol)
    first = _converge_run(run, k, tol, eps)
    num_matvecs, scale = run.size, run.scale
    if not certify:
        return EigenResult(
            eigenvalues=sign * first.theta, eigenvectors=first.vectors, residuals=first.residuals,
            num_matvecs=num_matvecs, converged=first.converged,
            error_estimates=_error_estimates(first.theta, first.residuals, first.others),
        )
    # certify: lock the converged pairs and look for more in their complement
    locked, a_locked, values = first.vectors, first.images, first.theta.tolist()
    others, converged = first.others, first.converged
    while converged and locked.shape[0] < n:
        v0 = _restart_vector(n, gen, dtype, dev, start_distribution, locked)
        if v0 is None:  # the locked vectors span the whole space
            break
        run = LanczosProcess(op, v0, min(max_steps, n - locked.shape[0]), locked=locked, reorthogonalize=True,
                       keep_basis=True, breakdown_tol=breakdown_tol, scale=scale)
        extra = _converge_run(run, 1, tol, eps)
        num_matvecs, scale = num_matvecs + run.size, max(scale, run.scale)
        kth = sorted(values, reverse=True)[min(k, len(values)) - 1]
        if len(values) >= k and float(extra.theta[0]) <= kth + float(_tolerance(torch.tensor([kth]), tol, scale, eps)):
            break  # nothing in the complement beats the k-th value: the result is complete
        converged = extra.converged
        values += extra.theta.tolist()
        locked, a_locked = torch.cat([locked, extra.vectors]), torch.cat([a_locked, extra.images])
    # Rayleigh-Ritz on everything locked: removes the couplings y_i^T A y_j = r_i^T y_j that
    # each locked pair's residual r_i leaves with later runs' vectors.
    theta, vectors, _, residuals = _rayleigh_ritz(locked, a_locked)
    order = torch.argsort(theta, descending=True)
    top, rest = order[:k], order[k:]
    return EigenResult(
        eigenvalues=sign * theta[top], eigenvectors=vectors[top.to(vectors.device)], residuals=residuals[top],
        num_matvecs=num_matvecs,
        converged=converged and bool((residuals[top] <= _tolerance(theta[top], tol, scale, eps)).all()),
        error_estimates=_error_estimates(theta[top], residuals[top], torch.cat([theta[rest], others])),
    )
