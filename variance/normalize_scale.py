"""V1 (docs/science.md section 4.1): the variance of normalize+scale logits, ``Var[gamma^2 cos(z, p)]``.

Setting: ``z, p in R^d`` independent, each with i.i.d. zero-mean coordinates; the NS logit
is ``y = gamma^2 cos(z, p)`` (:func:`analysis.normalization.normalize_scale_logits`), so

    Var[y] = gamma^4 Var[cos(z, p)].

**The paper's approximation** ``Var[cos] ~ d / (d - 2)^2``.  Write
``cos = <z, p> / (||z|| ||p||)`` and treat the numerator and the two norms as independent
(they are not: that is the approximation).  For ``z, p ~ N(0, sigma^2 I_d)``,
``E[cos] = 0``, ``E[<z, p>^2] = d sigma^4`` and ``||z||^2 / sigma^2 ~ chi^2_d`` with
``E[1 / chi^2_d] = 1 / (d - 2)`` (finite only for ``d >= 3``), so

    Var[cos] ~ E[<z, p>^2] E[1/||z||^2] E[1/||p||^2] = d sigma^4 / (sigma^2 (d - 2))^2 = d / (d - 2)^2.

**The exact value** ``Var[cos] = 1/d``.  For isotropic vectors ``u = z/||z||`` and
``v = p/||p||`` are independent and uniform on the sphere; conditioning on ``v``,
``<u, v>`` is one coordinate of a uniform unit vector, and ``E[<u, v>^2] = 1/d`` since
the ``d`` squared coordinates sum to 1.  The same holds for *any* i.i.d. coordinate law
that is symmetric about 0 (Gaussian, Rademacher, uniform on [-1, 1], ...) with
``P(z = 0) = 0``, isotropic or not:

    E[cos^2] = sum_{i,j} E[z_i z_j / ||z||^2] E[p_i p_j / ||p||^2]       (z, p independent)
             = sum_i E[z_i^2 / ||z||^2] E[p_i^2 / ||p||^2]               (i != j terms: flip z_i -> -z_i)
             = d (1/d)(1/d) = 1/d                                        (exchangeability, sum_i z_i^2/||z||^2 = 1)

and ``E[cos] = 0`` by the same sign flip, so ``Var[cos] = E[cos^2] = 1/d`` exactly.  (Zero
mean alone is not enough: an asymmetric law leaves the cross terms.)  The paper's value
overestimates it by ``d/(d-2)^2 - 1/d = 4(d-1) / (d (d-2)^2) ~ 4/d^2``, relatively ``~4/d``.

**The scale for unit logit variance** solves ``gamma^4 Var[cos] = 1``:

    gamma* = ((d - 2)^2 / d)^(1/4)   (paper; 6.72 at d = 2048),     gamma* = d^(1/4)   (exact; 6.73).

Both explain why practitioners pick ``gamma`` in [5, 10] for ``d_z = 2048``.

**Telling the two apart** (:func:`check_v1_discriminating`).  The estimator
``mean(cos^2)`` has relative standard error ``sqrt(r/n)`` over ``n`` pairs, with
``r = Var[cos^2] / E[cos^2]^2``: for Gaussian coordinates ``cos^2 ~ Beta(1/2, (d-1)/2)``, so
``r = 2(d-1)/(d+2) < 2``; for Rademacher ones ``r = 2 - 2/d < 2``.  To resolve a relative
departure ``delta`` by ``m`` standard errors, ``n = ceil(2 m^2 / delta^2)`` pairs suffice
(:func:`num_pairs_to_resolve`).  The paper's relative gap ``4(d-1)/(d-2)^2`` is 13.8 %, 6.6 %
and 3.2 % at d = 32, 64, 128: with ``m = 10`` that is 10 500, 46 500 and 195 000 pairs;
asking the row to resolve a 5 % error of its own prediction as well raises the first two to
80 000 (under a second of drawing in all).  The exact value then lies within ``k = 4``
standard errors and the paper's about 10 or more away.  At d = 2048 the gap (0.2 %) needs ``5 10^6`` pairs of 2048-d
vectors: there the two are not told apart, which is why the paper's value serves at d_z.

Real features are neither zero-mean nor isotropic (pooled ResNet activations are
non-negative): :func:`estimate_cosine_variance_of` measures the mean and variance of the
cosine between given rows, and :meth:`CosineStatistics.ratio_to_isotropic` says how far
the variance is from ``1/d``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.rng import resolve_generator
from analysis.estimate import Estimate, mean_estimate, variance_estimate
from variance.estimate import Check, check

__all__ = [
    "COSINE_DISTRIBUTIONS",
    "CosineStatistics",
    "check_v1",
    "check_v1_discriminating",
    "estimate_cosine_variance",
    "estimate_cosine_variance_of",
    "estimate_cosine_variance_slope",
    "estimate_logit_variance",
    "exact_isotropic_cosine_variance",
    "num_pairs_to_resolve",
    "predicted_cosine_variance",
    "predicted_logit_variance",
    "unit_variance_gamma",
]

# Coordinate laws for the Monte Carlo draws: all i.i.d. and symmetric about 0, so Var[cos] = 1/d
# exactly for each (module docstring); only "gaussian" is isotropic.
COSINE_DISTRIBUTIONS = ("gaussian", "rademacher", "uniform")

_CHUNK_ELEMENTS = 1 << 22  # entries of one [n, d] draw (16 MiB in float32): bounds temporary memory


# --------------------------------------------------------------------------- predictions


def _check_dim(d: int, minimum: int, what: str) -> int:
    if isinstance(d, bool) or not isinstance(d, numbers.Integral):
        raise TypeError(f"d must be an int, got {type(d).__name__} {d!r}")
    if d < minimum:
        raise ValueError(f"{what} needs d >= {minimum}, got d={d}")
    return int(d)


def predicted_cosine_variance(d: int) -> float:
    """The paper's ``Var[cos(z, p)] ~ d / (d - 2)^2`` (module docstring).

    Raises:
        ValueError: ``d < 3``: the approximation uses ``E[1/||z||^2] = 1/(d - 2)``, which is
            infinite for ``d <= 2`` (use :func:`exact_isotropic_cosine_variance`).

    Example: ``predicted_cosine_variance(d) > exact_isotropic_cosine_variance(d)`` for every
    ``d >= 3``, with relative gap ``4(d-1)/(d-2)^2``.
    """
    d = _check_dim(d, 3, "the paper's approximation d/(d-2)^2 (E[1/||z||^2] = 1/(d-2) is finite only then)")
    return d / (d - 2) ** 2


def exact_isotropic_cosine_variance(d: int) -> float:
    """The exact ``Var[cos(z, p)] = 1/d`` for i.i.d. symmetric coordinates (module docstring).

    Raises:
        ValueError: ``d < 1``.
    """
    d = _check_dim(d, 1, "the cosine of two vectors")
    return 1.0 / d


def _check_gamma(gamma: float) -> float:
    if not (isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
    return float(gamma)


def predicted_logit_variance(d: int, gamma: float, exact: bool = False) -> float:
    """``Var[gamma^2 cos(z, p)] = gamma^4 Var[cos]``, paper (``exact=False``) or exact ``1/d``.

    Raises:
        ValueError: ``gamma`` not positive and finite, or ``d`` out of range (see the two
            ``*_cosine_variance`` functions).
    """
    gamma = _check_gamma(gamma)
    var = exact_isotropic_cosine_variance(d) if exact else predicted_cosine_variance(d)
    return gamma**4 * var


def unit_variance_gamma(d: int, exact: bool = False) -> float:
    """The scale with unit logit variance: ``((d - 2)^2 / d)^(1/4)`` (paper) or ``d^(1/4)`` (exact).

    Example: ``predicted_logit_variance(d, unit_variance_gamma(d)) == 1`` up to round-off;
    ``unit_variance_gamma(2048)`` is 6.72.
    """
    var = exact_isotropic_cosine_variance(d) if exact else predicted_cosine_variance(d)
    return var ** -0.25


# --------------------------------------------------------------------------- Monte Carlo



def _check_num_pairs(num_pairs: int) -> None:
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 2:
        raise ValueError(f"num_pairs must be an int >= 2 (a standard error needs 2 samples), got {num_pairs!r}")


def _draw(n: int, d: int, distribution: str, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """``[n, d]`` i.i.d. coordinates of the named symmetric law (unit variance is irrelevant:
    the cosine is scale-free)."""
    device = generator.device
    if distribution == "gaussian":
        return torch.randn(n, d, generator=generator, dtype=dtype, device=device)
    if distribution == "rademacher":
        return torch.randint(0, 2, (n, d), generator=generator, dtype=dtype, device=device).mul_(2).sub_(1)
    return torch.rand(n, d, generator=generator, dtype=dtype, device=device).mul_(2).sub_(1)  # U[-1, 1]


def _row_cosines(z: Tensor, p: Tensor) -> Tensor:
    """``cos(z_i, p_i)`` for paired rows ``[n, d] x [n, d] -> [n]``; norms floored as in
    :func:`analysis.normalization.normalize_scale_logits`."""
    # one pass for <z, p> and one per norm: 3-4x faster than multiplying normalized copies
    dots = torch.einsum("nd,nd->n", z, p)
    z_norm = torch.linalg.vector_norm(z, dim=1).clamp_min(1e-12)
    norms = z_norm * torch.linalg.vector_norm(p, dim=1).clamp_min(1e-12)
    return dots / norms


def _sample_cosines(
    d: int, num_pairs: int, distribution: str, generator: torch.Generator | None, dtype: torch.dtype
) -> Tensor:
    d = _check_dim(d, 1, "the cosine of two vectors")
    _check_num_pairs(num_pairs)
    if distribution not in COSINE_DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {COSINE_DISTRIBUTIONS}")
    gen = resolve_generator(generator)
    rows = max(1, _CHUNK_ELEMENTS // d)
    chunks = []
    for start in range(0, num_pairs, rows):
        n = min(rows, num_pairs - start)
        z = _draw(n, d, distribution, gen, dtype)  # [n, d]
        p = _draw(n, d, distribution, gen, dtype)  # [n, d], independent of z
        chunks.append(_row_cosines(z, p).double())  # [n]
    return torch.cat(chunks)  # [num_pairs]


def estimate_cosine_variance(
    d: int,
    num_pairs: int,
    *,
    distribution: str = "gaussian",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Monte Carlo ``Var[cos(z, p)]`` over ``num_pairs`` independent pairs ``z, p in R^d``.

    The mean of the cosine is exactly 0 for every law in :data:`COSINE_DISTRIBUTIONS` (sign
    flip), so the estimator is ``mean(cos^2)`` (``variance_estimate(cos, mean=0.0)``), an
    average of i.i.d. terms with standard error ``std(cos^2)/sqrt(n)`` (about
    ``sqrt(2/n)/d`` for large d).  Pairs are drawn in chunks of about 4M entries.

    Args:
        d: dimension, >= 1.
        num_pairs: number of pairs, >= 2.
        distribution: coordinate law, one of :data:`COSINE_DISTRIBUTIONS`.
        dtype: of the draws and cosines (float32 suffices: its round-off is far below the
            standard error; the statistics are accumulated in float64).
        generator: source of every draw (its device is used); ``None``: a fresh,
            OS-seeded generator, never the global one.

    Raises:
        ValueError: ``d < 1``, ``num_pairs < 2`` or an unknown distribution.

    Example: the estimate lies within a few standard errors of
    :func:`exact_isotropic_cosine_variance` ``(d)`` (see :func:`check_v1`).
    """
    cos = _sample_cosines(d, num_pairs, distribution, generator, dtype)
    return variance_estimate(cos, mean=0.0)


def estimate_logit_variance(
    d: int,
    gamma: float,
    num_pairs: int,
    *,
    distribution: str = "gaussian",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Monte Carlo ``Var[gamma^2 cos(z, p)]``, the NS logit variance (known zero mean, as in
    :func:`estimate_cosine_variance`, whose arguments and errors it shares).

    Raises:
        ValueError: as :func:`estimate_cosine_variance`, or ``gamma`` not positive and finite.
    """
    gamma = _check_gamma(gamma)
    cos = _sample_cosines(d, num_pairs, distribution, generator, dtype)
    return variance_estimate(gamma**2 * cos, mean=0.0)


def estimate_cosine_variance_slope(
    dims: Sequence[int],
    num_pairs: int,
    *,
    distribution: str = "gaussian",
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> Estimate:
    """Slope of ``log Var[cos]`` against ``log d``, fitted by weighted least squares (-1 for V1).

    Each point ``y_i = log v_i`` has standard error ``s_i ~ stderr(v_i) / v_i`` (delta
    method); with weights ``w_i = 1/s_i^2`` the slope is
    ``sum w (x - xbar)(y - ybar) / sum w (x - xbar)^2`` (``xbar, ybar`` weighted means) and its
    standard error ``1 / sqrt(sum w (x - xbar)^2)``.  The exact ``Var[cos] = 1/d`` gives slope
    exactly -1 (the delta method's ``O(s_i^2)`` bias of ``log v`` is the same at every d when
    ``num_pairs`` is); the paper's ``d/(d-2)^2`` is steeper at small d.

    Raises:
        ValueError: fewer than 2 distinct dimensions, or as :func:`estimate_cosine_variance`.
    """
    dims = [int(d) for d in dims]
    if len(set(dims)) < 2:
        raise ValueError(f"a slope needs at least 2 distinct dimensions, got {dims}")
    gen = resolve_generator(generator)
    estimates = [estimate_cosine_variance(d, num_pairs, distribution=distribution, dtype=dtype, generator=gen)
                 for d in dims]
    x = torch.tensor([math.log(d) for d in dims], dtype=torch.float64)
    y = torch.tensor([math.log(e.value) for e in estimates], dtype=torch.float64)
    w = torch.tensor([(e.value / e.stderr) ** 2 for e in estimates], dtype=torch.float64)
    xc = x - (w * x).sum() / w.sum()
    yc = y - (w * y).sum() / w.sum()
    sxx = float((w * xc * xc).sum())
    return Estimate(float((w * xc * yc).sum()) / sxx, 1.0 / math.sqrt(sxx), sum(e.samples for e in estimates))


# --------------------------------------------------------------------------- real-like vectors


@dataclass(frozen=True)
class CosineStatistics:
    """Mean and variance of the cosine between random pairs of given vectors of dimension ``dim``."""

    mean: Estimate
    variance: Estimate
    dim: int

    def ratio_to_isotropic(self) -> Estimate:
        """``Var[cos] / (1/d) = d Var[cos]`` with its standard error (1 for i.i.d. symmetric
        coordinates; far from 1 for non-negative, non-isotropic features)."""
        return Estimate(self.variance.value * self.dim, self.variance.stderr * self.dim, self.variance.samples)


def estimate_cosine_variance_of(
    features: Tensor,
    prototypes: Tensor | None = None,
    num_pairs: int = 20_000,
    *,
    generator: torch.Generator | None = None,
) -> CosineStatistics:
    """Mean and variance of ``cos(z_i, p_j)`` over uniformly random pairs of given rows.

    With ``prototypes`` ``[M, d]`` the pair is a uniform row ``i`` of ``features`` ``[N, d]``
    and an independent uniform row ``j`` of ``prototypes``; without, two *distinct* rows of
    ``features`` (``N >= 2``).  Pairs are drawn with replacement, so conditionally on the
    rows the cosines are i.i.d. and the estimand is the variance over all pairs of these
    rows.  The mean is unknown here, so the variance is the unbiased sample variance with
    its delta-method standard error (``variance_estimate(cos)``).  Computed in float64.

    Raises:
        ValueError: a non-matrix input, different widths, too few rows, ``num_pairs < 2``.
    """
    _check_num_pairs(num_pairs)
    bad_prototypes = prototypes is not None and (
        prototypes.ndim != 2 or features.ndim != 2 or prototypes.shape[1] != features.shape[1])
    if features.ndim != 2 or bad_prototypes:
        shapes = tuple(features.shape), None if prototypes is None else tuple(prototypes.shape)
        raise ValueError(
            f"expected features [N, d] and prototypes [M, d] (or None) with the same d, got shapes {shapes}"
        )
    n, d = features.shape
    gen = resolve_generator(generator)
    device = features.device
    z_all = features.detach().double()
    if prototypes is None:
        if n < 2:
            raise ValueError(f"pairs of distinct rows need at least 2 feature rows, got {n}")
        p_all = z_all
        i = torch.randint(0, n, (num_pairs,), generator=gen, device=gen.device).to(device)
        j = torch.randint(0, n - 1, (num_pairs,), generator=gen, device=gen.device).to(device)
        j = j + (j >= i).long()  # uniform over the n - 1 rows other than i
    else:
        p_all = prototypes.detach().double().to(device)
        m = p_all.shape[0]
        if n < 1 or m < 1:
            raise ValueError(f"need at least one feature row and one prototype row, got {n} and {m}")
        i = torch.randint(0, n, (num_pairs,), generator=gen, device=gen.device).to(device)
        j = torch.randint(0, m, (num_pairs,), generator=gen, device=gen.device).to(device)
    rows = max(1, _CHUNK_ELEMENTS // max(d, 1))
    cos = torch.cat([_row_cosines(z_all[ii], p_all[jj]) for ii, jj in zip(i.split(rows), j.split(rows))])
    return CosineStatistics(mean_estimate(cos), variance_estimate(cos), d)


# --------------------------------------------------------------------------- the check


def check_v1(
    d: int,
    gamma: float = 5.0,
    num_pairs: int = 20_000,
    *,
    distribution: str = "gaussian",
    k: float = 4.0,
    generator: torch.Generator | None = None,
) -> list[Check]:
    """V1 against one Monte Carlo estimate of ``Var[gamma^2 cos]``: two rows.

    1. the exact ``gamma^4 / d``, bias bound 0;
    2. the paper's ``gamma^4 d/(d-2)^2``, bias bound ``gamma^4 |d/(d-2)^2 - 1/d|`` (its exact
       error for every law in :data:`COSINE_DISTRIBUTIONS`, module docstring).

    Raises:
        ValueError: ``d < 3`` (the paper row is undefined), or as :func:`estimate_logit_variance`.
    """
    predicted_cosine_variance(d)  # validates d >= 3 before drawing anything
    est = estimate_logit_variance(d, gamma, num_pairs, distribution=distribution, generator=generator)
    setting = f"Var[logit], d={d}, gamma={gamma:g}, {distribution}"
    exact = predicted_logit_variance(d, gamma, exact=True)
    paper = predicted_logit_variance(d, gamma)
    return [
        check("V1", setting + ", exact 1/d", exact, est, k=k),
        check("V1", setting + ", paper d/(d-2)^2", paper, est, k=k, bias_bound=abs(paper - exact)),
    ]


def num_pairs_to_resolve(relative_gap: float, separation: float = 10.0) -> int:
    """Pairs for which a relative departure ``relative_gap`` of ``Var[cos]`` from ``1/d`` is
    ``separation`` standard errors: ``ceil(2 separation^2 / relative_gap^2)``.

    Uses ``Var[cos^2] / E[cos^2]^2 < 2``, true for Gaussian and Rademacher coordinates
    (module docstring); the returned check states the standard error it actually got.

    Raises:
        ValueError: ``relative_gap`` or ``separation`` not positive and finite.

    Example: ``num_pairs_to_resolve(0.05)`` is 80 000 (a 5 % error at 10 standard errors).
    """
    for name, value in (("relative_gap", relative_gap), ("separation", separation)):
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return math.ceil(2.0 * separation**2 / relative_gap**2)


def check_v1_discriminating(
    d: int,
    num_pairs: int | None = None,
    *,
    resolution: float = 0.05,
    separation: float = 10.0,
    distribution: str = "gaussian",
    k: float = 4.0,
    generator: torch.Generator | None = None,
) -> Check:
    """V1 at small ``d``: does the measured ``Var[cos]`` support the exact ``1/d`` or the
    paper's ``d/(d-2)^2``?  One discriminating row (:func:`variance.estimate.check` with an
    alternative): ``predicted`` is ``1/d``, ``alternative`` the paper's value, no bias bound;
    it passes iff ``1/d`` lies within ``k`` standard errors and the paper's value does not.

    Args:
        d: dimension, >= 3.
        num_pairs: pairs to draw; ``None``: :func:`num_pairs_to_resolve` of the smaller of the
            paper's relative gap ``4(d-1)/(d-2)^2`` and ``resolution``, at ``separation``
            standard errors (module docstring).
        resolution: the relative error of the prediction the row must also resolve.
        separation: standard errors between the prediction and a departure to resolve.
        distribution, k, generator: as :func:`estimate_cosine_variance` and ``check``.

    Raises:
        ValueError: ``d < 3``, bad ``resolution``/``separation``, or as
            :func:`estimate_cosine_variance`.

    Example: at ``d = 32`` the row supports ``"exact 1/d"``, and
    ``row.with_prediction(1.05 / 32).passed`` is False.
    """
    paper = predicted_cosine_variance(d)
    exact = exact_isotropic_cosine_variance(d)
    if num_pairs is None:
        num_pairs = num_pairs_to_resolve(min((paper - exact) / exact, resolution), separation)
    est = estimate_cosine_variance(d, num_pairs, distribution=distribution, generator=generator)
    setting = (f"Var[cos], d={d}, {distribution}, {num_pairs} pairs: exact 1/d={exact:.4g} "
               f"vs paper d/(d-2)^2={paper:.4g}")
    return check("V1", setting, exact, est, k=k, alternative=paper, labels=("exact 1/d", "paper d/(d-2)^2"))
