"""V1: the variance of normalize+scale logits (variance/normalize_scale.py).

Monte Carlo values are checked with a fixed budget against ``k`` standard errors of the
returned estimate (plus a stated bias bound), never a hand-tuned tolerance.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.synthetic import make_synthetic
from tests.conftest import TINY_SPEC
from analysis.estimate import Estimate
from variance.estimate import check
from variance.normalize_scale import (
    COSINE_DISTRIBUTIONS,
    check_v1,
    estimate_cosine_variance,
    estimate_cosine_variance_of,
    estimate_cosine_variance_slope,
    estimate_logit_variance,
    exact_isotropic_cosine_variance,
    predicted_cosine_variance,
    predicted_logit_variance,
    unit_variance_gamma,
)

K = 4.5  # standard errors allowed: a false alarm about once in 150 000 checks
NUM_PAIRS = 20_000  # relative standard error of Var[cos] about sqrt(2/n) = 1%

seeds = st.integers(min_value=0, max_value=2**63 - 1)
distributions = st.sampled_from(COSINE_DISTRIBUTIONS)
# d log-uniform in [8, 4096]: every scale is covered, and the cost (linear in d) stays low
dims = st.floats(min_value=math.log(8), max_value=math.log(4096)).map(lambda x: min(4096, max(8, round(math.exp(x)))))
gammas = st.floats(min_value=1.0, max_value=10.0)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- predictions


def test_unit_variance_gamma_hand_values():
    # ((2046^2)/2048)^(1/4) = 2044.002^(1/4) = 6.7239; 2048^(1/4) = 6.7272
    assert unit_variance_gamma(2048) == pytest.approx(6.72, abs=0.01)
    assert unit_variance_gamma(2048, exact=True) == pytest.approx(6.73, abs=0.01)
    assert abs(predicted_logit_variance(2048, unit_variance_gamma(2048)) - 1.0) <= 1e-12
    assert abs(predicted_logit_variance(2048, unit_variance_gamma(2048, exact=True), exact=True) - 1.0) <= 1e-12
    assert predicted_cosine_variance(np.int64(2048)) == predicted_cosine_variance(2048)  # any integer type


@given(d=st.integers(min_value=3, max_value=10**6), gamma=gammas)
def test_paper_minus_exact_is_the_stated_gap(d, gamma):
    gap = predicted_cosine_variance(d) - exact_isotropic_cosine_variance(d)
    assert gap == pytest.approx(4 * (d - 1) / (d * (d - 2) ** 2), rel=1e-9)
    assert gap > 0
    assert predicted_logit_variance(d, gamma) == pytest.approx(gamma**4 * d / (d - 2) ** 2, rel=1e-12)
    assert predicted_logit_variance(d, gamma, exact=True) == pytest.approx(gamma**4 / d, rel=1e-12)


# --------------------------------------------------------------------------- Monte Carlo


@settings(max_examples=12, deadline=None)
@given(seed=seeds, d=dims, gamma=gammas, distribution=distributions)
def test_v1_checks_pass_and_a_wrong_prediction_fails(seed, d, gamma, distribution):
    exact_row, paper_row = check_v1(d, gamma, NUM_PAIRS, distribution=distribution, k=K,
                                    generator=_generator(seed))
    assert exact_row.passed, exact_row
    assert exact_row.bias_bound == 0.0
    assert paper_row.passed, paper_row
    assert paper_row.bias_bound == pytest.approx(gamma**4 * abs(d / (d - 2) ** 2 - 1 / d))
    # the same measurement rejects a wrong claim, Var[cos] = 2/d, through the same check
    estimate = Estimate(exact_row.measured, exact_row.stderr, NUM_PAIRS)
    assert not check("V1", "wrong 2/d", 2 / d * gamma**4, estimate, k=K).passed


@settings(max_examples=6, deadline=None)
@given(seed=seeds, d=st.integers(min_value=8, max_value=32), gamma=gammas, distribution=distributions)
def test_paper_approximation_passes_only_with_its_bias_bound(seed, d, gamma, distribution):
    # at d <= 32 the paper's value is >= 13.8% above the exact 1/d, over 10 standard errors
    est = estimate_logit_variance(d, gamma, NUM_PAIRS, distribution=distribution, generator=_generator(seed))
    paper, exact = predicted_logit_variance(d, gamma), predicted_logit_variance(d, gamma, exact=True)
    assert not check("V1", "paper, no bias bound", paper, est, k=K).passed
    assert check("V1", "paper", paper, est, k=K, bias_bound=abs(paper - exact)).passed


@settings(max_examples=3, deadline=None)
@given(seed=seeds, distribution=distributions)
def test_cosine_variance_scales_as_one_over_d(seed, distribution):
    slope = estimate_cosine_variance_slope([16, 64, 256, 1024, 4096], 10_000, distribution=distribution,
                                           generator=_generator(seed))
    assert check("V1", "slope of log Var[cos] vs log d", -1.0, slope, k=K).passed, slope
    # the fit has the power to see the paper's curvature: least-squares slope of
    # log(d/(d-2)^2) over the same d is -1.0427
    d = np.array([16, 64, 256, 1024, 4096], dtype=float)
    paper_slope = np.polyfit(np.log(d), np.log(d / (d - 2) ** 2), 1)[0]
    assert abs(slope.value - paper_slope) > K * slope.stderr


@given(seed=seeds)
@settings(max_examples=5, deadline=None)
def test_estimates_follow_the_generator_and_leave_the_global_rng_alone(seed):
    state = torch.get_rng_state()
    a = estimate_cosine_variance(16, 100, generator=_generator(seed))
    b = estimate_cosine_variance(16, 100, generator=_generator(seed))
    estimate_cosine_variance(16, 100)  # generator=None: a fresh private generator
    estimate_cosine_variance_of(torch.ones(3, 4).cumsum(0), num_pairs=10)
    assert a == b
    assert torch.equal(torch.get_rng_state(), state)


def test_chunked_draws_count_every_pair_and_estimate_the_exact_variance():
    """d = 4096 holds 1024 pairs per chunk: 2500 pairs are 3 chunks, the last one partial.
    Every pair is counted once, and the estimate is Var[cos] = 1/d (exact for Rademacher
    coordinates) within 4 standard errors: a dropped, repeated or zero-padded chunk moves it."""
    d = 4096
    est = estimate_cosine_variance(d, 2_500, distribution="rademacher", generator=_generator(0))
    assert est.samples == 2_500
    assert abs(est.value - 1 / d) <= 4 * est.stderr


# --------------------------------------------------------------------------- real-like vectors


@settings(max_examples=5, deadline=None)
@given(seed=seeds)
def test_non_negative_features_depart_from_isotropy_and_centering_restores_it(seed):
    """Coordinates i.i.d. uniform on [0, 2]: non-negative, mean 1.

    Uncentered, the cosine concentrates near E[x]^2 / E[x^2] = 3/4 and its variance is far
    below 1/d (about 0.1/d by the delta method).  Centered by the known mean 1, the
    coordinates are uniform on [-1, 1], i.i.d. and symmetric, so Var[cos] = 1/d and
    E[cos] = 0 exactly (module docstring).  Given rows, the estimand is the average over
    pairs of rows, a degenerate U-statistic (E[cos^2 | z] = 1/d exactly), whose spread,
    about sqrt(2/(N(N-1)))/d, is 7% of the pair-sampling standard error here.
    """
    gen = _generator(seed)
    d, n = 256, 2000
    x = 2 * torch.rand(n, d, generator=gen, dtype=torch.float64)
    raw = estimate_cosine_variance_of(x, num_pairs=NUM_PAIRS, generator=gen)
    assert abs(raw.mean.value) > K * raw.mean.stderr
    assert raw.mean.value == pytest.approx(0.75, abs=0.01)  # 3/4 + O(1/d)
    ratio = raw.ratio_to_isotropic()
    assert abs(ratio.value - 1) > K * ratio.stderr
    centered = estimate_cosine_variance_of(x - 1.0, num_pairs=NUM_PAIRS, generator=gen)
    assert abs(centered.mean.value) <= K * centered.mean.stderr
    assert check("V1", "Var[cos], centered uniform", 1.0, centered.ratio_to_isotropic(), k=K).passed


def test_synthetic_features_depart_from_isotropy():
    data = make_synthetic(replace(TINY_SPEC, feature_dim=256), seed=0)
    assert bool((data.features >= 0).all())
    stats = estimate_cosine_variance_of(data.features, num_pairs=NUM_PAIRS, generator=_generator(0))
    assert stats.dim == 256
    assert stats.mean.value > K * stats.mean.stderr
    ratio = stats.ratio_to_isotropic()
    assert abs(ratio.value - 1) > K * ratio.stderr


@settings(max_examples=3, deadline=None)
@given(seed=seeds)
def test_independent_feature_and_prototype_rows_match_one_over_d(seed):
    gen = _generator(seed)
    z = torch.randn(2000, 64, generator=gen)
    p = torch.randn(1000, 64, generator=gen)
    stats = estimate_cosine_variance_of(z, p, NUM_PAIRS, generator=gen)
    assert abs(stats.mean.value) <= K * stats.mean.stderr
    assert check("V1", "Var[cos], given rows", 1.0, stats.ratio_to_isotropic(), k=K).passed


# --------------------------------------------------------------------------- errors


def test_paper_formula_refuses_d_below_3():
    for fn in (predicted_cosine_variance, unit_variance_gamma):
        with pytest.raises(ValueError, match=r"d >= 3, got d=2"):
            fn(2)
    with pytest.raises(ValueError, match=r"d >= 3, got d=2"):
        check_v1(2, generator=_generator(0))
    assert unit_variance_gamma(2, exact=True) == pytest.approx(2**0.25)


def test_exact_formula_refuses_d_below_1_and_non_integers():
    with pytest.raises(ValueError, match=r"the cosine of two vectors needs d >= 1, got d=0"):
        exact_isotropic_cosine_variance(0)
    with pytest.raises(TypeError, match=r"d must be an int, got float"):
        exact_isotropic_cosine_variance(2048.0)


def test_bad_gamma():
    with pytest.raises(ValueError, match=r"gamma must be a positive finite number, got 0"):
        predicted_logit_variance(64, 0)
    with pytest.raises(ValueError, match=r"gamma must be a positive finite number, got nan"):
        estimate_logit_variance(64, float("nan"), 10, generator=_generator(0))


def test_bad_estimator_arguments():
    gen = _generator(0)
    with pytest.raises(ValueError, match=r"num_pairs must be an int >= 2.*got 1"):
        estimate_cosine_variance(16, 1, generator=gen)
    with pytest.raises(ValueError, match=r"unknown distribution 'cauchy'"):
        estimate_cosine_variance(16, 10, distribution="cauchy", generator=gen)
    with pytest.raises(ValueError, match=r"at least 2 distinct dimensions, got \[16, 16\]"):
        estimate_cosine_variance_slope([16, 16], 10, generator=gen)


def test_bad_rows():
    gen = _generator(0)
    with pytest.raises(ValueError, match=r"same d, got shapes \(\(3, 4\), \(2, 5\)\)"):
        estimate_cosine_variance_of(torch.ones(3, 4), torch.ones(2, 5), generator=gen)
    with pytest.raises(ValueError, match=r"same d, got shapes \(\(4,\), None\)"):
        estimate_cosine_variance_of(torch.ones(4), generator=gen)
    with pytest.raises(ValueError, match=r"at least 2 feature rows, got 1"):
        estimate_cosine_variance_of(torch.ones(1, 4), generator=gen)
    with pytest.raises(ValueError, match=r"one feature row and one prototype row, got 3 and 0"):
        estimate_cosine_variance_of(torch.ones(3, 4), torch.ones(0, 4), generator=gen)
    with pytest.raises(ValueError, match=r"num_pairs must be an int >= 2"):
        estimate_cosine_variance_of(torch.ones(3, 4), num_pairs=0, generator=gen)


def test_cosine_variance_of_given_rows_follows_its_generator_and_default_pair_count():
    """The generator is the only source of the pairs (same seed: same estimate; another seed:
    another); 20 000 pairs by default; the ratio to isotropic keeps the sample count."""
    x = torch.rand(50, 8, generator=_generator(3))
    a = estimate_cosine_variance_of(x, generator=_generator(5))
    assert a == estimate_cosine_variance_of(x, generator=_generator(5))
    assert a.variance.value != estimate_cosine_variance_of(x, generator=_generator(6)).variance.value
    assert a.variance.samples == 20_000
    ratio = a.ratio_to_isotropic()
    assert (ratio.value, ratio.stderr, ratio.samples) == (8 * a.variance.value, 8 * a.variance.stderr, 20_000)


def test_cosine_variance_of_two_rows_and_bad_prototype_shapes():
    """Two rows are enough for pairs of distinct rows (every pair is (0, 1) or (1, 0): the
    cosine is constant and its variance 0); 3-D prototypes are refused even when their second
    axis matches the width."""
    two = estimate_cosine_variance_of(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), num_pairs=10,
                                      generator=_generator(0))
    assert two.variance.value == pytest.approx(0.0, abs=1e-30)
    with pytest.raises(ValueError, match=r"expected features \[N, d\] and prototypes \[M, d\]"):
        estimate_cosine_variance_of(torch.ones(5, 3), torch.ones(2, 3, 4), generator=_generator(0))


# --------------------------------------------------------------------------- options reach the estimate


def test_check_v1_defaults_and_options_reach_its_estimate():
    """``check_v1``'s rows measure exactly ``estimate_logit_variance(d, gamma, num_pairs,
    distribution, generator)``: defaults gamma 5, 20 000 pairs, k = 4, Gaussian; every option
    given reaches the estimate and both rows, which name claim V1."""
    exact_row, paper_row = check_v1(64, generator=_generator(0))
    est = estimate_logit_variance(64, 5.0, 20_000, distribution="gaussian", generator=_generator(0))
    for row in (exact_row, paper_row):
        assert (row.claim, row.measured, row.stderr, row.k) == ("V1", est.value, est.stderr, 4.0)
    assert exact_row.predicted == predicted_logit_variance(64, 5.0, exact=True)
    assert paper_row.predicted == predicted_logit_variance(64, 5.0)
    assert "exact 1/d" in exact_row.setting and "paper d/(d-2)^2" in paper_row.setting

    rows = check_v1(32, 2.0, 500, distribution="rademacher", k=2.5, generator=_generator(7))
    est = estimate_logit_variance(32, 2.0, 500, distribution="rademacher", generator=_generator(7))
    for row in rows:
        assert (row.claim, row.measured, row.stderr, row.k) == ("V1", est.value, est.stderr, 2.5)
        assert "d=32, gamma=2, rademacher" in row.setting


def test_slope_is_the_weighted_least_squares_fit_of_its_estimates():
    """The slope and its standard error by hand: the same generator, consumed in the same order
    by one ``estimate_cosine_variance`` per d, then ``sum w xc y / sum w xc^2`` and
    ``1/sqrt(sum w xc^2)`` with ``w = (v / stderr(v))^2`` (numpy's weighted ``polyfit`` takes the
    square root of the weights)."""
    dims, n = [8, 32, 128], 400
    gen = _generator(11)
    estimates = [estimate_cosine_variance(d, n, distribution="uniform", generator=gen) for d in dims]
    x = np.log(dims)
    y = np.log([e.value for e in estimates])
    w = np.array([(e.value / e.stderr) ** 2 for e in estimates])
    xc = x - np.average(x, weights=w)
    slope = estimate_cosine_variance_slope(dims, n, distribution="uniform", generator=_generator(11))
    assert slope.value == pytest.approx(np.polyfit(x, y, 1, w=np.sqrt(w))[0], rel=1e-10)
    assert slope.stderr == pytest.approx(1.0 / math.sqrt(np.sum(w * xc**2)), rel=1e-12)
    assert slope.samples == 3 * n
    other = estimate_cosine_variance_slope(dims, n, distribution="uniform", generator=_generator(12))
    assert other.value != slope.value


@pytest.mark.parametrize(("distribution", "var_cos_sq"), [("gaussian", 1 / 16), ("rademacher", 3 / 32)])
def test_the_named_law_is_the_one_drawn(distribution, var_cos_sq):
    """Every symmetric i.i.d. law gives ``Var[cos] = 1/d``; the laws differ in the fourth
    moment, which sets the estimate's standard error ``sqrt(Var[cos^2] / n)``.  At d = 4:
    Gaussian ``cos^2 ~ Beta(1/2, 3/2)``, ``Var = 3/24 - 1/16 = 1/16``; Rademacher
    ``<z, p> / 4`` is 0, +-1/2, +-1 with probabilities 6/16, 8/16, 2/16, so
    ``E[cos^4] = 2/16 + 8/16 / 16 = 5/32`` and ``Var = 3/32``.  With ``cos^2`` in [0, 1] the
    sample variance of ``cos^2`` over 40 000 pairs has relative standard error below 2 %, so
    10 % is 5 standard errors, and the two laws (a factor 1.5 apart) cannot be swapped."""
    n = 40_000
    est = estimate_cosine_variance(4, n, distribution=distribution, generator=_generator(3))
    assert est.stderr**2 * n == pytest.approx(var_cos_sq, rel=0.10)


def test_estimator_boundaries_are_the_documented_ones():
    """``num_pairs >= 2`` (an int), ``d >= 1`` for the cosine, one feature row and one
    prototype row for cross pairs: each accepted at its bound, refused just past it."""
    gen = _generator(0)
    assert estimate_cosine_variance(16, 2, generator=gen).samples == 2
    with pytest.raises(ValueError, match=r"num_pairs must be an int >= 2.*got 20.0"):
        estimate_cosine_variance(16, 20.0, generator=gen)
    with pytest.raises(ValueError, match=r"num_pairs must be an int >= 2.*got True"):
        estimate_cosine_variance(16, True, generator=gen)
    # d = 1: cos = sign(z p) = +-1, Var[cos] = 1 exactly in law
    one = estimate_cosine_variance(1, 1_000, generator=gen)
    assert abs(one.value - 1.0) <= 4 * one.stderr + 1e-3
    with pytest.raises(ValueError, match=r"the cosine of two vectors needs d >= 1, got d=0"):
        estimate_cosine_variance(0, 10, generator=gen)
    with pytest.raises(ValueError, match=r"the paper's approximation d/\(d-2\)\^2 .* needs d >= 3"):
        predicted_cosine_variance(2)
    single = estimate_cosine_variance_of(torch.ones(1, 4), torch.ones(1, 4), num_pairs=2, generator=gen)
    assert single.mean.value == pytest.approx(1.0) and single.variance.samples == 2


def test_distinct_row_pairs_never_pair_a_row_with_itself():
    """Pairs of distinct rows of three orthonormal vectors all have cosine 0: mean and variance
    are exactly 0 (a pair of a row with itself would add cosines of 1)."""
    stats = estimate_cosine_variance_of(torch.eye(3), num_pairs=500, generator=_generator(1))
    assert stats.mean.value == 0.0 and stats.variance.value == 0.0


def test_a_slope_from_two_dimensions_and_every_feature_row_drawn():
    """Two distinct dimensions are enough for a slope; the first feature row is drawn like the
    others, in both pair kinds: rows [e1, e1, e2] as distinct pairs have cos 1 for 2 of their 6
    ordered pairs (mean 1/3), and features [e1, e2] against the prototype e1 have mean 1/2."""
    two = estimate_cosine_variance_slope([8, 64], 200, generator=_generator(0))
    assert two.samples == 400 and math.isfinite(two.value) and two.stderr > 0
    rows = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    distinct = estimate_cosine_variance_of(rows, num_pairs=20_000, generator=_generator(1))
    assert abs(distinct.mean.value - 1 / 3) <= 4 * distinct.mean.stderr
    cross = estimate_cosine_variance_of(torch.eye(2), torch.tensor([[1.0, 0.0]]), num_pairs=20_000,
                                        generator=_generator(2))
    assert abs(cross.mean.value - 1 / 2) <= 4 * cross.mean.stderr
