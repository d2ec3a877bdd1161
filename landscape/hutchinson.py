"""Hessian trace with its standard error (docs/science.md section 5.2): Hutchinson and Hutch++.

Both estimators see a symmetric ``A`` [n, n] only through ``matvec(v [n]) -> A v [n]``.

- :func:`hutchinson_trace` (Hutchinson 1989): ``tr(A) = E[z^T A z]`` for Rademacher
  ``z`` (i.i.d. +-1 entries); the mean of ``m`` quadratic forms has variance
  ``2 sum_{i != j} A_ij^2 / m`` (the diagonal does not contribute, so a diagonal ``A``
  is estimated exactly).
- :func:`hutchpp_trace` (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic
  Trace Estimation", SOSA 2021): deflate the top of the spectrum with a sketch first,
  so the error falls like ``1/m`` instead of ``1/sqrt(m)`` for decaying spectra.

Each returns an :class:`~analysis.estimate.Estimate`: the value, the standard error of its
random part (sample std / sqrt(probes)), the number of probes behind it and the number of
matvecs spent.
"""

from __future__ import annotations

import torch

from analysis.estimate import Estimate, mean_estimate
from analysis.rng import resolve_generator
from landscape.matvec import (
    Matvec,
    apply_matvec,
    check_positive_int,
    operator_size_and_device,
    random_vector,
)

__all__ = ["hutchinson_trace", "hutchpp_trace"]


def hutchinson_trace(
    matvec: Matvec,
    n: int,
    num_probes: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Estimate:
    """Hutchinson's estimate ``(1/m) sum_i z_i^T A z_i`` of ``tr(A)``, Rademacher ``z_i`` [n].

    Unbiased for any square ``A``; its standard error is estimated by
    ``std({z_i^T A z_i}) / sqrt(m)`` (Hutchinson, "A stochastic estimator of the trace of
    the influence matrix for Laplacian smoothing splines", 1989).  For a diagonal ``A``
    every sample equals ``tr(A)`` (``z_j^2 = 1``), so the estimate is exact, stderr 0.

    Args:
        matvec: ``v [n] -> A v [n]``.
        n: dimension of ``A``.
        num_probes: number ``m >= 2`` of probes (= matvecs); 2 is the least with a stderr.
        generator: source of the probes (None: a fresh OS-seeded generator).
        dtype, device: working precision (float32/float64) and device (default CPU).

    Returns:
        :class:`~analysis.estimate.Estimate` (value, stderr, ``samples = num_matvecs = m``).

    Raises:
        ValueError: ``n < 1``, ``num_probes < 2``, a bad dtype, or a matvec returning a
            misshapen or non-finite vector.
        TypeError: non-integer ``n`` or ``num_probes``; a non-generator ``generator``.

    Example::

        est = hutchinson_trace(lambda v: A @ v, n, 100, generator=g)
        # |est.value - A.trace()| <= 4 * est.stderr in all but ~1e-4 of seeds
    """
    n, dev = operator_size_and_device(n, dtype, device)
    num_probes = check_positive_int("num_probes", num_probes, minimum=2, why=" for a standard error")
    gen = resolve_generator(generator)
    samples = torch.empty(num_probes, dtype=torch.float64)
    for i in range(num_probes):
        z = random_vector(n, gen, dtype, dev)
        samples[i] = float(z @ apply_matvec(matvec, z))
    return mean_estimate(samples, num_matvecs=num_probes)


def hutchpp_trace(
    matvec: Matvec,
    n: int,
    num_matvecs: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Estimate:
    """Hutch++ estimate of ``tr(A)`` for a symmetric ``A`` with a budget of ``num_matvecs``.

    With ``s = min(num_matvecs // 3, n)`` and ``p = num_matvecs - 2 s`` (Meyer, Musco,
    Musco & Woodruff 2021, Algorithm 1):

    1. sketch: ``S`` [n, s] Rademacher, ``Q`` [n, s] = orthonormal basis of ``A S``
       (reduced QR; s matvecs);
    2. exact part: ``tr(Q^T A Q)`` (s matvecs);
    3. remainder: Hutchinson with ``p`` Rademacher probes ``g_i`` on the deflated operator
       ``(I - Q Q^T) A (I - Q Q^T)``, i.e. the samples ``h_i^T A h_i`` with
       ``h_i = g_i - Q Q^T g_i`` (p matvecs).

    ``tr(A) = tr(Q^T A Q) + tr((I - QQ^T) A (I - QQ^T))`` for any orthonormal ``Q``, so the
    estimate is unbiased; the standard error is that of the remainder's mean (the exact
    part has none).  If ``rank(A) <= s`` then ``range(A S) = range(A)`` almost surely, the
    remainder vanishes and the estimate is exact (stderr ~ rounding).

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        num_matvecs: total budget, ``>= 4`` (s >= 1 sketch column and p >= 2 probes).
        generator: source of the sketch and probes (None: a fresh OS-seeded generator).
        dtype, device: working precision (float32/float64) and device (default CPU).

    Returns:
        :class:`~analysis.estimate.Estimate` with ``samples = p`` and ``num_matvecs = 2 s + p``
        (the budget).

    Raises:
        ValueError: ``n < 1``, ``num_matvecs < 4``, a bad dtype, or a misshapen or
            non-finite matvec output.
        TypeError: non-integer ``n`` or ``num_matvecs``; a non-generator ``generator``.
    """
    n, dev = operator_size_and_device(n, dtype, device)
    num_matvecs = check_positive_int("num_matvecs", num_matvecs, minimum=4,
                                      why=" (1 sketch column, its product and 2 probes)")
    gen = resolve_generator(generator)
    s = min(num_matvecs // 3, n)
    p = num_matvecs - 2 * s
    sketch = torch.stack([random_vector(n, gen, dtype, dev) for _ in range(s)], dim=1)  # [n, s]
    a_sketch = torch.stack([apply_matvec(matvec, sketch[:, j]) for j in range(s)], dim=1)  # [n, s]
    q, _ = torch.linalg.qr(a_sketch)  # [n, s], orthonormal columns even if A S is rank-deficient
    exact = sum(float(q[:, j] @ apply_matvec(matvec, q[:, j])) for j in range(s))
    samples = torch.empty(p, dtype=torch.float64)
    for i in range(p):
        g = random_vector(n, gen, dtype, dev)
        h = g - q @ (q.T @ g)  # (I - Q Q^T) g
        samples[i] = float(h @ apply_matvec(matvec, h))
    rest = mean_estimate(samples)
    return Estimate(exact + rest.value, rest.stderr, rest.samples, 2 * s + p)
