"""Monte Carlo estimates with standard errors, and the check that compares them to a claim.

Every claim V1-V5 (PAPER.md section 2) is checked the same way: a ``predicted_*`` value,
a Monte Carlo :class:`~analysis.estimate.Estimate` (value and standard error; the one
estimate type of the toolkit, re-exported here), and

    z = (measured - predicted) / stderr,   verdict "pass" iff |measured - predicted| <= k stderr + bias

where ``bias`` is a stated bound on the prediction's known approximation error (0 for an
exact prediction) and ``k`` = 4 by default (a false alarm about once in 16 000 checks
for a Gaussian estimator).  Tolerances are thus derived from the returned standard
errors, never hand-tuned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.estimate import Estimate, mean_estimate, variance_estimate

__all__ = ["Check", "Estimate", "check", "mean_estimate", "variance_estimate"]


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
