"""Power iteration: the baseline the Lanczos eigenvalues are compared with (docs/science.md section 5.2)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from analysis.rng import resolve_generator
from landscape.matvec import Matvec, apply_matvec, check_positive_int, check_start, random_vector, working_dtype_device

__all__ = ["PowerIterationResult", "power_iteration"]


class PowerIterationResult(NamedTuple):
    """The dominant (largest-magnitude) eigenpair found by power iteration."""

    eigenvalue: float
    eigenvector: Tensor  # [n] unit vector
    num_matvecs: int
    converged: bool


def power_iteration(
    matvec: Matvec,
    n: int,
    *,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PowerIterationResult:
    """The largest-*magnitude* eigenpair by power iteration: the baseline for Lanczos only.

    ``v <- A v / ||A v||`` with the Rayleigh quotient ``lambda = v^T A v`` until
    ``||A v - lambda v|| <= tol * |lambda|``.  The error shrinks like
    ``|lambda_2 / lambda_1|^t``, so it converges slowly on clustered spectra (and not at
    all when ``lambda`` and ``-lambda`` are both dominant), where Lanczos needs far fewer
    matvecs; it finds ``-10`` for the spectrum ``{-10, 3}``, unlike
    ``lanczos_top_eigenvalues(which="largest")``.  PyHessian (Yao et al. 2020) used it
    for the top Hessian eigenvalue.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        tol: relative residual tolerance, in (0, 1).
        max_iter: maximal number of matvecs.
        start: start vector [n] (None: Rademacher from ``generator``).
        generator: source of the random start (None: fresh OS-seeded generator).
        dtype, device: working precision and device (default the start's, else float64, CPU).

    Returns:
        :class:`PowerIterationResult` (eigenvalue, unit eigenvector [n], num_matvecs,
        converged); unpack as ``value, vector, num_matvecs, converged``.

    Raises:
        ValueError: bad ``n``, ``tol`` or ``max_iter``, a zero start, or a misshapen or
            non-finite matvec output.
        TypeError: non-integer ``n`` or ``max_iter``; a non-generator ``generator``.
    """
    n = check_positive_int("n", n)
    max_iter = check_positive_int("max_iter", max_iter)
    if not (0.0 < tol < 1.0):
        raise ValueError(f"tol must be in (0, 1), got tol={tol}")
    dtype, dev = working_dtype_device(start, dtype, device)
    if start is None:
        v = random_vector(n, resolve_generator(generator), dtype, dev)
    else:
        v = check_start(start, n, dtype, dev)
    v = v / v.norm()
    eigenvalue = math.nan
    for it in range(1, max_iter + 1):
        w = apply_matvec(matvec, v)
        eigenvalue = float(v @ w)
        if float((w - eigenvalue * v).norm()) <= tol * abs(eigenvalue):
            return PowerIterationResult(eigenvalue, v, it, True)
        v = w / w.norm()  # w != 0 here: w = 0 would have passed the residual test
    return PowerIterationResult(eigenvalue, v, max_iter, False)
