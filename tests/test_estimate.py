"""The one estimate type (analysis/estimate.py): its formulas against hand-computed cases,
and every estimator of variance/ and landscape/ returning it."""

from __future__ import annotations

import math

import pytest
import torch

import landscape
import variance
from analysis.estimate import Estimate, mean_estimate, variance_estimate
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from landscape.spectral_density import spectral_density
from landscape.xtrace import xtrace


def test_one_type_everywhere() -> None:
    assert variance.Estimate is landscape.Estimate is Estimate


def test_mean_estimate_by_hand() -> None:
    # samples 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, stderr sqrt(14/3 / 4)
    est = mean_estimate(torch.tensor([1.0, 2.0, 3.0, 6.0]), num_matvecs=9)
    assert est.value == 3.0
    assert est.stderr == pytest.approx(math.sqrt(14 / 3 / 4), rel=1e-15)
    assert (est.samples, est.num_matvecs) == (4, 9)
    assert str(est) == "3 ± 1.1 (9 matvecs)"
    assert str(mean_estimate(torch.tensor([1.0, 2.0]))) == "1.5 ± 0.5"


def test_variance_estimate_by_hand() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 6.0])
    # unknown mean: s^2 = 14/3; m4 = (16 + 1 + 0 + 81) / 4 = 24.5; stderr sqrt((24.5 - (14/3)^2) / 4)
    est = variance_estimate(x)
    assert est.value == pytest.approx(14 / 3, rel=1e-15)
    assert est.stderr == pytest.approx(math.sqrt((24.5 - (14 / 3) ** 2) / 4), rel=1e-12)
    # known mean 0: the mean of x^2 = (1 + 4 + 9 + 36) / 4
    assert variance_estimate(x, mean=0.0).value == pytest.approx(12.5, rel=1e-15)


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([1.0, float("nan")]),
                                 torch.tensor([1.0, float("inf"), 2.0])])
def test_mean_estimate_refuses_what_has_no_honest_standard_error(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="at least 2 samples|not finite"):
        mean_estimate(bad)


def test_every_trace_estimator_reports_its_samples_and_cost() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = a + a.T
    def matvec(v: torch.Tensor) -> torch.Tensor:
        return a @ v
    hutch = hutchinson_trace(matvec, 30, 12, generator=torch.Generator().manual_seed(1))
    assert (hutch.samples, hutch.num_matvecs) == (12, 12)
    pp = hutchpp_trace(matvec, 30, 12, generator=torch.Generator().manual_seed(1))
    assert (pp.samples, pp.num_matvecs) == (4, 12)  # s = 4 sketch columns, p = 12 - 8 probes
    xt = xtrace(matvec, 30, 12, generator=torch.Generator().manual_seed(1))
    assert (xt.samples, xt.num_matvecs) == (6, 12)
    density = spectral_density(matvec, 30, num_probes=3, num_steps=5, generator=torch.Generator().manual_seed(1))
    moment = density.moment(1)
    assert isinstance(moment, Estimate) and moment.samples == 3
    assert moment.value == pytest.approx(float(a.trace()) / 30, abs=6 * moment.stderr)


def test_variance_estimate_edges() -> None:
    two = variance_estimate(torch.tensor([1.0, 3.0]))  # the least sample with a variance
    assert (two.value, two.samples) == (2.0, 2)
    known = variance_estimate(torch.tensor([1.0, 3.0, 4.0]), mean=2.0)  # mean((x - 2)^2) = (1 + 1 + 4) / 3
    assert known.value == pytest.approx(2.0, rel=1e-15) and known.samples == 3
    with pytest.raises(ValueError, match="need at least 2 samples for a variance, got 1"):
        variance_estimate(torch.tensor([1.0]))


def test_check_verdicts_z_and_bounds_by_hand() -> None:
    from variance.estimate import check

    est = Estimate(10.0, 0.5, 100)
    row = check("V1", "setting", 8.0, est)  # diff 2 = 4 stderr: on the boundary, k = 4 by default
    assert (row.claim, row.setting, row.predicted, row.measured, row.stderr) == ("V1", "setting", 8.0, 10.0, 0.5)
    assert (row.z, row.k, row.bias_bound, row.verdict, row.passed) == (4.0, 4.0, 0.0, "pass", True)
    assert check("V1", "s", 7.9, est).verdict == "fail"  # 4.2 stderr
    assert check("V1", "s", 7.9, est, bias_bound=0.1).verdict == "pass"  # 4 stderr + 0.1
    assert check("V1", "s", 7.0, est, k=0.5, bias_bound=2.75).verdict == "pass"  # 0.25 + 2.75 = 3
    assert check("V1", "s", 7.0, est, k=0.5, bias_bound=2.7).verdict == "fail"
    exact = Estimate(3.0, 0.0, 1)  # a deterministic measurement: z is 0 or +-inf
    assert check("V5", "s", 3.0, exact).z == 0.0 and check("V5", "s", 3.0, exact).passed
    assert check("V5", "s", 2.0, exact).z == math.inf and not check("V5", "s", 2.0, exact).passed
    assert check("V5", "s", 4.0, exact).z == -math.inf
    assert check("V5", "s", 2.0, exact, bias_bound=1.0).passed
    for k, bias in ((0.0, 0.0), (-1.0, 0.0), (4.0, -0.1)):
        with pytest.raises(ValueError, match=f"need k > 0 and bias_bound >= 0, got k={k}, bias_bound={bias}"):
            check("V1", "s", 8.0, est, k=k, bias_bound=bias)
