"""Monte Carlo estimates with standard errors, and the check that compares them to a claim.

Every claim V1-V5 (PAPER.md section 2) is checked the same way: a ``predicted_*`` value,
a Monte Carlo :class:`Estimate` (value and standard error), and

    z = (measured - predicted) / stderr,   verdict "pass" iff |measured - predicted| <= k stderr + bias

where ``bias`` is a stated bound on the prediction's known approximation error (0 for an
exact prediction) and ``k`` = 4 by default (a false alarm about once in 16 000 checks
for a Gaussian estimator).  Tolerances are thus derived from the returned standard
errors, never hand-tuned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Check", "Estimate", "check", "mean_estimate", "variance_estimate"]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error (both floats)."""

    value: float
    stderr: float
    samples: int

    def __str__(self) -> str:
        return f"{self.value:.4g} ± {self.stderr:.2g}"


def mean_estimate(samples: Tensor) -> Estimate:
    """Mean of i.i.d. ``samples`` [n] with standard error ``std / sqrt(n)`` (float64)."""
    x = samples.detach().double().flatten()
    n = x.numel()
    if n < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {n}")
    return Estimate(float(x.mean()), float(x.std(correction=1) / math.sqrt(n)), n)


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


@dataclass(frozen=True)
class Check:
    """One claim compared to its measurement (a row of the ``cnzsl variance`` table)."""

    claim: str  # "V1" .. "V5"
    setting: str  # what was measured, e.g. "cos, d=2048, gaussian"
    predicted: float
    measured: float
    stderr: float
    z: float  # (measured - predicted) / stderr
    bias_bound: float  # allowed approximation error of the prediction
    k: float  # number of standard errors allowed
    verdict: str  # "pass" or "fail"

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def check(
    claim: str, setting: str, predicted: float, estimate: Estimate, *, k: float = 4.0,
    bias_bound: float = 0.0,
) -> Check:
    """Compare ``predicted`` with ``estimate`` (module docstring).

    A zero standard error (an exact, deterministic measurement such as V5's identity)
    passes only if ``|measured - predicted| <= bias_bound``.
    """
    if not (k > 0 and bias_bound >= 0):
        raise ValueError(f"need k > 0 and bias_bound >= 0, got k={k}, bias_bound={bias_bound}")
    diff = estimate.value - predicted
    z = diff / estimate.stderr if estimate.stderr > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    ok = abs(diff) <= k * estimate.stderr + bias_bound
    return Check(claim, setting, float(predicted), estimate.value, estimate.stderr, float(z),
                 float(bias_bound), float(k), "pass" if ok else "fail")
