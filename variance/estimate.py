"""Monte Carlo estimates with standard errors, and the check that compares them to a claim.

Every claim V1-V5 (docs/science.md section 4) is checked the same way: a ``predicted_*`` value,
a Monte Carlo :class:`~analysis.estimate.Estimate` (value and standard error; the one
estimate type of the toolkit, re-exported here), and

    z = (measured - predicted) / stderr,   verdict "pass" iff |measured - predicted| <= k stderr + bias

where ``bias`` is a stated bound on the prediction's known approximation error (0 for an
exact prediction) and ``k`` = 4 by default (a false alarm about once in 16 000 checks
for a Gaussian estimator).  Tolerances are thus derived from the returned standard
errors, never hand-tuned.

Two other row shapes share :class:`Check`:

- :func:`bound_check`: a derived inequality ``measured <= bound`` (a deterministic
  measurement, standard error 0), e.g. V4's band along training; ``relation`` is ``"<="``.
- :func:`observation`: a measurement with its standard error and no prediction (verdict
  ``"observed"``, ``predicted`` NaN or a reference value that nothing is checked against).

A check may also carry a competing prediction (``alternative``, e.g. the paper's
``d/(d-2)^2`` beside the exact ``1/d`` of V1) with its own ``z``, and says which of the two
the measurement supports (``supports``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analysis.estimate import Estimate, mean_estimate, variance_estimate

__all__ = ["Check", "Estimate", "bound_check", "check", "mean_estimate", "observation", "variance_estimate"]

VERDICTS = ("pass", "fail", "observed")


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
    verdict: str  # "pass" or "fail"; "observed" for an observation (no prediction)
    relation: str = "="  # "=": predicted within k stderr + bias; "<=": measured below a bound; "": none
    alternative: float | None = None  # a competing prediction of the same quantity, if any
    alternative_z: float | None = None  # (measured - alternative) / stderr
    supports: str | None = None  # which prediction the measurement supports, when there are two
    labels: tuple[str, str] | None = None  # names of (predicted, alternative) for ``supports``

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def with_prediction(self, predicted: float) -> Check:
        """The same measurement checked against another prediction (same ``k``, bias bound,
        relation and alternative): how a row shows that it can fail, e.g.
        ``row.with_prediction(1.05 * row.predicted).passed`` is False for a row that
        resolves a 5 % error.

        Raises:
            ValueError: an observation (it has no prediction to replace).
        """
        if self.relation == "":
            raise ValueError(f"an observation has no prediction to replace: {self.claim} {self.setting!r}")
        if self.relation == "<=":
            return bound_check(self.claim, self.setting, predicted, self.measured,
                               rtol=self.bias_bound / abs(self.predicted) if self.predicted else 0.0)
        estimate = Estimate(self.measured, self.stderr, 2)
        return check(self.claim, self.setting, predicted, estimate, k=self.k, bias_bound=self.bias_bound,
                     alternative=self.alternative, labels=self.labels or ("predicted", "alternative"))


def check(
    claim: str, setting: str, predicted: float, estimate: Estimate, *, k: float = 4.0,
    bias_bound: float = 0.0, alternative: float | None = None,
    labels: tuple[str, str] = ("predicted", "alternative"),
) -> Check:
    """Compare ``predicted`` with ``estimate`` (module docstring).

    A zero standard error (an exact, deterministic measurement such as V5's identity)
    passes only if ``|measured - predicted| <= bias_bound``.

    With an ``alternative`` (a competing prediction of the same quantity, e.g. the paper's
    approximation beside the exact value) the check *discriminates*: it passes only if
    ``predicted`` passes and ``alternative`` fails the same test (``|measured - alternative|
    > k stderr + bias_bound``); ``supports`` names the one the measurement supports
    (``labels[0]``, ``labels[1]``, ``"both (not resolved)"`` or ``"neither"``).

    Raises:
        ValueError: ``k <= 0`` or ``bias_bound < 0``.
    """
    if not (k > 0 and bias_bound >= 0):
        raise ValueError(f"need k > 0 and bias_bound >= 0, got k={k}, bias_bound={bias_bound}")
    ok, z = _within(predicted, estimate, k, bias_bound)
    if alternative is None:
        return Check(claim, setting, float(predicted), estimate.value, estimate.stderr, z,
                     float(bias_bound), float(k), "pass" if ok else "fail")
    alternative_ok, alternative_z = _within(alternative, estimate, k, bias_bound)
    supports = {(True, False): labels[0], (False, True): labels[1],
                (True, True): "both (not resolved)", (False, False): "neither"}[ok, alternative_ok]
    return Check(claim, setting, float(predicted), estimate.value, estimate.stderr, z, float(bias_bound),
                 float(k), "pass" if ok and not alternative_ok else "fail", alternative=float(alternative),
                 alternative_z=alternative_z, supports=supports, labels=tuple(labels))


def _within(predicted: float, estimate: Estimate, k: float, bias_bound: float) -> tuple[bool, float]:
    """``(|measured - predicted| <= k stderr + bias_bound, z)``."""
    diff = estimate.value - predicted
    z = diff / estimate.stderr if estimate.stderr > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return abs(diff) <= k * estimate.stderr + bias_bound, float(z)


def bound_check(claim: str, setting: str, bound: float, measured: float, *, rtol: float = 0.0) -> Check:
    """A derived inequality ``measured <= bound (1 + rtol)``, measured exactly (stderr 0).

    ``rtol`` is the stated round-off allowance of the computation (0: none).

    Raises:
        ValueError: ``rtol < 0`` or a non-finite ``bound``.
    """
    if not (rtol >= 0 and math.isfinite(bound)):
        raise ValueError(f"need rtol >= 0 and a finite bound, got rtol={rtol}, bound={bound}")
    ok = measured <= bound + rtol * abs(bound)
    return Check(claim, setting, float(bound), float(measured), 0.0, 0.0, float(rtol * abs(bound)), 0.0,
                 "pass" if ok else "fail", relation="<=")


def observation(claim: str, setting: str, estimate: Estimate, reference: float = math.nan) -> Check:
    """A measured quantity with its standard error and no prediction (verdict ``"observed"``).

    ``reference`` is shown beside it for scale (e.g. ``1/d``), never checked against.
    """
    z = (estimate.value - reference) / estimate.stderr if estimate.stderr > 0 else math.nan
    return Check(claim, setting, float(reference), estimate.value, estimate.stderr, float(z), 0.0, 0.0,
                 "observed", relation="")
