"""V5: the backward pass of class standardization (variance/standardization_jacobian.py).

Every comparison is in float64 against autograd, with the round-off bound of
:func:`variance.standardization_jacobian.v5_round_off_bound`, never a hand-tuned tolerance.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.class_standardization import class_standardize
from variance.standardization_jacobian import (
    autograd_standardization_gradient,
    check_v5,
    predicted_gradient_norm_sq,
    predicted_standardization_gradient,
    standardization_bracket,
    v5_round_off_bound,
)

seeds = st.integers(min_value=0, max_value=2**63 - 1)
num_classes = st.integers(min_value=2, max_value=64)
widths = st.integers(min_value=1, max_value=8)
log_scales = st.floats(min_value=-8.0, max_value=8.0)  # h spans 16 orders of magnitude
epsilons = st.sampled_from([0.0, 1e-5])
# upstream gradients: generic, and the directions the projection removes (span{1, s})
gradient_kinds = st.sampled_from(["random", "constant", "along_s", "span_1_s", "random_plus_span"])


def _case(seed: int, k: int, d: int, log_scale: float, eps: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, g)`` in float64: h of scale 10^log_scale around an offset, g of the given kind."""
    gen = torch.Generator().manual_seed(seed)
    offset = torch.randn(d, generator=gen, dtype=torch.float64) * 3  # |mu| up to a few sigma
    h = (torch.randn(k, d, generator=gen, dtype=torch.float64) + offset) * 10.0**log_scale
    s = class_standardize(h, eps=eps)
    a, b = (torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(2))
    g_scale = 10.0 ** (6 * torch.rand((), generator=gen, dtype=torch.float64) - 3)
    random = torch.randn(k, d, generator=gen, dtype=torch.float64)
    g = {
        "random": random,
        "constant": a.expand(k, d).clone(),
        "along_s": b * s,
        "span_1_s": a + b * s,
        "random_plus_span": random + 10 * (a + b * s),
    }[kind]
    return h, g * g_scale


def _column_scale(g: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """``||g_j|| / tau_j``, the natural scale of column j of dL/dh."""
    tau = torch.sqrt(h.var(dim=0, correction=0) + eps)
    return g.norm(dim=0) / tau


@settings(max_examples=60, deadline=None)
@given(seed=seeds, k=num_classes, d=widths, log_scale=log_scales, eps=epsilons, kind=gradient_kinds)
def test_closed_form_norm_identity_and_orthogonality_match_autograd(seed, k, d, log_scale, eps, kind):
    h, g = _case(seed, k, d, log_scale, eps, kind)
    rows = check_v5(h, g, eps)
    assert len(rows) == 4
    for row in rows:
        assert row.claim == "V5" and row.stderr == 0.0
        assert row.passed, row


@settings(max_examples=40, deadline=None)
@given(seed=seeds, k=num_classes, d=widths, log_scale=log_scales,
       kind=st.sampled_from(["constant", "along_s", "span_1_s"]))
def test_projected_out_directions_give_zero_gradient_at_eps_0(seed, k, d, log_scale, kind):
    h, g = _case(seed, k, d, log_scale, 0.0, kind)
    bound = v5_round_off_bound(h) * _column_scale(g, h, 0.0)  # [d]
    for grad in (predicted_standardization_gradient(g, h, eps=0.0), autograd_standardization_gradient(g, h, eps=0.0)):
        assert bool((grad.abs().amax(dim=0) <= bound).all())


@settings(max_examples=40, deadline=None)
@given(seed=seeds, k=num_classes, d=widths, log_scale=log_scales, eps=epsilons, kind=gradient_kinds)
def test_gradient_columns_sum_to_zero_and_bracket_is_orthogonal_to_s_at_eps_0(seed, k, d, log_scale, eps, kind):
    h, g = _case(seed, k, d, log_scale, eps, kind)
    bound = v5_round_off_bound(h, eps)
    scale = _column_scale(g, h, eps)
    grad = predicted_standardization_gradient(g, h, eps=eps)
    assert bool((grad.sum(dim=0).abs() <= bound * scale * k**0.5).all())  # <1, dL/dh> = 0 always
    if eps == 0.0:
        s = class_standardize(h, eps=0.0)
        bracket = standardization_bracket(g, h, eps=0.0)
        assert bool(((s * bracket).sum(dim=0).abs() <= bound * g.norm(dim=0) * k**0.5).all())


@settings(max_examples=40, deadline=None)
@given(seed=seeds, k=num_classes, d=widths, log_scale=log_scales, eps=epsilons, kind=gradient_kinds)
def test_norm_identity_reduces_to_the_paper_form_at_eps_0(seed, k, d, log_scale, eps, kind):
    """(**) minus the paper's reduced form is ``<g,s>^2 (||s||^2/K - 1) / (K tau^2) <= 0``: zero
    at eps = 0, where ||s||^2 = K, and never positive (||s||^2 = K var/(var + eps) <= K)."""
    h, g = _case(seed, k, d, log_scale, eps, kind)
    s = class_standardize(h, eps=eps)
    tau2 = h.var(dim=0, correction=0) + eps
    paper = (g.pow(2).sum(0) - g.sum(0) ** 2 / k - (g * s).sum(0) ** 2 / k) / tau2
    full = predicted_gradient_norm_sq(g, h, eps=eps)
    tol = v5_round_off_bound(h, eps) * _column_scale(g, h, eps) ** 2
    assert bool((full <= paper + tol).all())
    if eps == 0.0:
        assert bool(((full - paper).abs() <= tol).all())


def _without_s_term(g: torch.Tensor, h: torch.Tensor, eps: float) -> torch.Tensor:
    """A deliberately wrong closed form: (g - mean(g)) / tau, the <g,s>/K s term dropped."""
    return (g - g.mean(dim=0)) / torch.sqrt(h.var(dim=0, correction=0) + eps)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, k=num_classes, d=widths, log_scale=st.floats(min_value=-1.0, max_value=8.0), eps=epsilons,
       kind=st.sampled_from(["random", "along_s", "random_plus_span"]))
def test_a_wrong_closed_form_fails_the_check(seed, k, d, log_scale, eps, kind):
    # var >= ~1e-2 >> eps, so ||s||^2 ~ K and the dropped term, |<g,s>| max|s| / K relative to
    # ||g||, is of order 1/K for generic g and all of g for g along s: far above round-off
    h, g = _case(seed, k, d, log_scale, eps, kind)
    row = check_v5(h, g, eps, gradient_fn=_without_s_term)[0]
    assert not row.passed, row
    assert check_v5(h, g, eps)[0].passed


def test_float32_inputs_keep_their_dtype_and_agree_with_float64():
    gen = torch.Generator().manual_seed(0)
    h, g = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen)
    grad32 = predicted_standardization_gradient(g, h)
    assert grad32.dtype == torch.float32
    grad64 = predicted_standardization_gradient(g.double(), h.double())
    # the same round-off bound as check_v5, with the float32 unit round-off
    bound = 64 * torch.finfo(torch.float32).eps * v5_round_off_bound(h) / (64 * torch.finfo(torch.float64).eps)
    scale = _column_scale(g.double(), h.double(), 1e-5)
    assert bool(((grad32.double() - grad64).abs() <= bound * scale).all())


def test_errors_name_the_problem():
    h = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"shape of h \[K, d\], got \(5, 2\) and \(5, 3\)"):
        predicted_standardization_gradient(h[:, :2], h)
    with pytest.raises(ValueError, match=r"\[K, d\] matrix .* got shape \(2, 5, 3\)"):
        check_v5(h.expand(2, 5, 3), h.expand(2, 5, 3))
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -1e-05"):
        predicted_gradient_norm_sq(h, h, eps=-1e-5)
    with pytest.raises(ValueError, match=r"at least 2 classes"):
        autograd_standardization_gradient(h[:1], h[:1])
    constant = h.clone()
    constant[:, 1] = 2.0
    with pytest.raises(ValueError, match=r"columns \[1\] of h are constant over the classes and eps=0"):
        check_v5(constant, h, eps=0.0)
    with pytest.raises(ValueError, match=r"columns \[1\] of h are constant"):
        v5_round_off_bound(constant, eps=0.0)
    assert all(row.passed for row in check_v5(constant, h, eps=1e-5))  # eps > 0: defined, and exact


def test_v5_rows_measure_each_column_in_its_own_scale_and_default_to_eps_0():
    """Row 1 divides column j's deviation by ||g_j|| / tau_j: a gradient formula off by
    delta ||g_j|| / tau_j in one entry of every column measures delta, whatever the
    columns' very different scales.  The default eps is 0."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(6, 3, generator=gen, dtype=torch.float64) * torch.tensor([1e-2, 1.0, 1e2], dtype=torch.float64)
    g = torch.randn(6, 3, generator=gen, dtype=torch.float64) * torch.tensor([1e3, 1.0, 1e-3], dtype=torch.float64)
    tau = h.var(dim=0, unbiased=False).sqrt()
    delta = 1e-3
    off = torch.zeros_like(g)
    off[2] = delta * g.norm(dim=0) / tau

    def shifted(g_, h_, eps):
        return predicted_standardization_gradient(g_, h_, eps) + off

    row = check_v5(h, g, gradient_fn=shifted)[0]
    assert row.measured == pytest.approx(delta, rel=1e-9)
    assert "eps=0" in row.setting and not row.passed


def test_v5_rows_are_the_documented_deviations_in_the_documented_units():
    """The four rows by hand on a non-square case (K = 5 classes, d = 3): the deviations of
    autograd from (*), (**), ``<1, dL/dh> = 0`` and ``<s, b>``, each column over its scale
    ``||g_j|| / tau_j`` (squared for the norm identity) and rows 3-4 over ``sqrt(K)``.  Their
    values are round-off, so any other normalization (K^1.5, K/2, ...) changes them by
    factors far above the 1e-9 allowed.  The bound is ``64 u K (1 + max |mu_j| / tau_j)``; a
    column with g = 0 has scale 1 (no 0/0)."""
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(5, 3, generator=gen, dtype=torch.float64) + torch.tensor([3.0, -1.0, 0.0], dtype=torch.float64)
    g = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    g[:, 1] = 0.0
    g[:, 2] *= 0.05  # 0 < ||g_j|| < 1: the scale is ||g_j|| / tau_j, not 1
    assert 0 < float(g[:, 2].norm()) < 1
    eps = 0.25
    rows = check_v5(h, g, eps)
    mean, var = h.mean(0), h.var(0, unbiased=False)
    tau = (var + eps).sqrt()
    s = class_standardize(h, eps=eps)  # (h - mean) / tau, rounded as the check rounds it
    scale = torch.where(g.norm(dim=0) > 0, g.norm(dim=0) / tau, torch.ones(3, dtype=torch.float64))
    auto = autograd_standardization_gradient(g, h, eps)
    k = 5
    gs, ss = (g * s).sum(0), (s * s).sum(0)
    expected = [
        float(((predicted_standardization_gradient(g, h, eps) - auto).abs() / scale).max()),
        float(((predicted_gradient_norm_sq(g, h, eps) - auto.pow(2).sum(0)).abs() / scale**2).max()),
        float((auto.sum(0).abs() / (scale * k**0.5)).max()),
        float(((tau * (s * auto).sum(0) - gs * (1 - ss / k)).abs() / (scale * tau * k**0.5)).max()),
    ]
    assert all(0 < e < 1e-12 for e in expected[2:])  # round-off, not zero: the units matter
    for row, value in zip(rows, expected, strict=True):
        assert row.measured == pytest.approx(value, rel=1e-9, abs=0.0), row.setting
        assert row.claim == "V5" and row.passed
    assert [r.setting.split(",")[0] for r in rows] == [
        "dL/dh closed form vs autograd", "||dL/dh||^2 identity vs autograd", "<1", "<s"]
    bound = 64 * torch.finfo(torch.float64).eps * k * (1 + float((mean.abs() / tau).max()))
    # abs=0: the bound is about 1e-13, below pytest.approx's default absolute tolerance
    assert v5_round_off_bound(h, eps) == pytest.approx(bound, rel=1e-12, abs=0.0)
    assert all(r.bias_bound == pytest.approx(bound, rel=1e-12, abs=0.0) for r in rows)
    tau0 = var.sqrt()
    assert v5_round_off_bound(h) == pytest.approx(64 * torch.finfo(torch.float64).eps * k
                                                  * (1 + float((mean.abs() / tau0).max())), rel=1e-12, abs=0.0)
