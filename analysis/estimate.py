"""One type for every Monte Carlo estimate in the toolkit: value, standard error, samples, cost.

``variance/`` (the V1-V5 checks) and ``landscape/`` (Hutchinson, Hutch++, XTrace, SLQ
moments) both return :class:`Estimate`; it lives here because neither package imports the
other (STYLE.md).

For ``m`` i.i.d. samples ``x_1 .. x_m`` of a quantity with mean ``mu``:

    value  = (1/m) sum_i x_i                        (unbiased for mu)
    stderr = std(x, correction=1) / sqrt(m)         (its standard error)

Estimates built from exchangeable rather than independent samples (XTrace) use the same
formula, as their authors do; each function that returns one says which it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Estimate", "mean_estimate", "variance_estimate"]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error.

    Attributes:
        value: the estimate.
        stderr: its standard error (nan when one sample leaves it undefined; 0 for an exact
            result).
        samples: the number of samples the standard error was computed from.
        num_matvecs: for an estimate that sees an operator through products (a trace, a
            spectral moment), the number of products it spent; None otherwise.
    """

    value: float
    stderr: float
    samples: int
    num_matvecs: int | None = None

    def __str__(self) -> str:
        cost = f" ({self.num_matvecs} matvecs)" if self.num_matvecs is not None else ""
        return f"{self.value:.6g} ± {self.stderr:.2g}{cost}"


def mean_estimate(samples: Tensor, *, num_matvecs: int | None = None) -> Estimate:
    """Mean of i.i.d. ``samples`` [m] with standard error ``std / sqrt(m)`` (float64).

    Raises:
        ValueError: fewer than 2 samples (no standard error), or a non-finite sample.
    """
    x = samples.detach().double().flatten()
    m = x.numel()
    if m < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {m}")
    if not bool(x.isfinite().all()):
        raise ValueError(f"{int((~x.isfinite()).sum())} of {m} samples are not finite (nan or inf): "
                         "the quantity they sample overflowed or was undefined")
    return Estimate(float(x.mean()), float(x.std(correction=1)) / math.sqrt(m), m, num_matvecs)


def variance_estimate(samples: Tensor, mean: float | None = None) -> Estimate:
    """Variance of i.i.d. ``samples`` [n] with its standard error.

    With a known ``mean`` the estimator is ``mean((x - mean)^2)``, an average of i.i.d.
    terms, so its standard error is that of a mean.  Otherwise it is the unbiased sample
    variance, with the delta-method standard error ``sqrt((m4 - s^4) / n)`` (m4 the
    fourth central moment).
    """
    x = samples.detach().double().flatten()
    n = x.numel()
    if n < 2:
        raise ValueError(f"need at least 2 samples for a variance, got {n}")
    if mean is not None:
        return mean_estimate((x - mean) ** 2)
    centered = x - x.mean()
    s2 = float(centered.pow(2).sum() / (n - 1))
    m4 = float(centered.pow(4).mean())
    return Estimate(s2, math.sqrt(max(m4 - s2 * s2, 0.0) / n), n)
