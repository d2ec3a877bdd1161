"""Hutchinson and Hutch++ trace estimates (landscape/hutchinson.py): calibration of the
standard error over seeds, its 1/sqrt(m) decay, and the exact cases."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.estimate import Estimate
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from tests.landscape_cases import Counting, gen, known_spectrum

K = 4.0  # standard errors allowed (STYLE.md: Monte Carlo tests)


A20 = known_spectrum(torch.linspace(-2.0, 3.0, 20), seed=1)


def test_hutchinson_is_calibrated_over_seeds() -> None:
    # 200 independent estimates with m = 50 probes: z = (est - tr) / stderr is ~ t_49 ~ N(0, 1)
    seeds, m = 200, 50
    tr = float(A20.trace())
    z = torch.tensor([(e.value - tr) / e.stderr for e in
                      (hutchinson_trace(Counting(A20), 20, m, generator=gen(s)) for s in range(seeds))])
    assert (z.abs() > K).sum() == 0, z.abs().max()
    # mean of 200 unit-variance z's has sd 1/sqrt(200); the t_49 inflates the sd by sqrt(49/47)
    t_sd = math.sqrt((m - 1) / (m - 3))
    assert abs(float(z.mean())) <= K * t_sd / math.sqrt(seeds)
    # the sample sd of N normal values has sd ~ 1/sqrt(2N)
    assert abs(float(z.std()) - 1.0) <= K / math.sqrt(2 * seeds) + (t_sd - 1.0)


def test_hutchinson_stderr_decays_like_one_over_sqrt_m() -> None:
    # per-seed least-squares slope of log(stderr) against log(m); tolerance: K standard
    # errors of the mean slope plus a bias bound of 0.01 for E[log s] != log(sigma)
    # (Jensen: about -(kurtosis - 1) / (8 m), 0.03 at m = 16, i.e. a slope bias below 0.01)
    ms = torch.tensor([16.0, 64.0, 256.0, 1024.0], dtype=torch.float64)
    x = ms.log() - ms.log().mean()
    slopes = []
    for seed in range(10):
        y = torch.tensor([math.log(hutchinson_trace(Counting(A20), 20, int(m), generator=gen(seed)).stderr)
                          for m in ms], dtype=torch.float64)
        slopes.append(float((x * (y - y.mean())).sum() / (x * x).sum()))
    s = torch.tensor(slopes)
    assert abs(float(s.mean()) + 0.5) <= K * float(s.std()) / math.sqrt(len(slopes)) + 0.01, slopes


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30))
def test_hutchinson_is_exact_on_diagonal_matrices(seed: int, n: int) -> None:
    d = torch.randn(n, generator=gen(seed), dtype=torch.float64)
    est = hutchinson_trace(lambda v: d * v, n, 5, generator=gen(seed + 1))
    assert est.value == pytest.approx(float(d.sum()), rel=1e-12, abs=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)
    assert est.num_matvecs == 5


@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 6), extra=st.integers(0, 2))
def test_hutchpp_is_exact_for_rank_at_most_a_third_of_the_budget(seed: int, rank: int, extra: int) -> None:
    n = 25
    lam = torch.zeros(n, dtype=torch.float64)
    lam[:rank] = torch.randn(rank, generator=gen(seed), dtype=torch.float64) + 2.0
    a = known_spectrum(lam, seed=seed % 1000)
    budget = 3 * rank + extra  # sketch size budget // 3 = rank
    counting = Counting(a)
    est = hutchpp_trace(counting, n, max(budget, 4), generator=gen(seed + 1))
    scale = float(lam.abs().sum())
    assert est.value == pytest.approx(float(lam.sum()), abs=1e-10 * scale)
    assert est.stderr <= 1e-10 * scale
    assert est.num_matvecs == counting.calls == max(budget, 4)


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum() -> None:
    # lambda_i = i^-2: the top of the spectrum dominates the off-diagonal mass that drives
    # Hutchinson's variance; Hutch++ removes it with its sketch (Meyer et al. 2021, Thm 1.1)
    n, budget, seeds = 100, 60, 40
    lam = torch.arange(1, n + 1, dtype=torch.float64) ** -2.0
    a = known_spectrum(lam, seed=3)
    tr = float(lam.sum())
    err_h, err_pp, z_pp = [], [], []
    for s in range(seeds):
        h = hutchinson_trace(Counting(a), n, budget, generator=gen(s))
        pp = hutchpp_trace(Counting(a), n, budget, generator=gen(s))
        err_h.append((h.value - tr) ** 2)
        err_pp.append((pp.value - tr) ** 2)
        z_pp.append((pp.value - tr) / pp.stderr)
    assert sum(err_pp) < sum(err_h), (sum(err_pp), sum(err_h))
    # Hutch++'s stderr (from its 20 remainder probes) is honest too
    assert max(abs(z) for z in z_pp) <= K


def test_hutchpp_with_a_budget_above_3n_is_exact() -> None:
    est = hutchpp_trace(Counting(A20), 20, 70, generator=gen(0))  # s = min(23, 20) = 20
    assert est.value == pytest.approx(float(A20.trace()), abs=1e-10)
    assert est.num_matvecs == 70


def test_float32_and_no_generator() -> None:
    a32 = A20.float()
    est = hutchinson_trace(lambda v: a32 @ v, 20, 400, dtype=torch.float32)  # fresh OS seed
    assert abs(est.value - float(A20.trace())) <= K * est.stderr + 1e-4
    pp = hutchpp_trace(lambda v: a32 @ v, 20, 63, dtype=torch.float32, generator=gen(0))
    assert pp.value == pytest.approx(float(A20.trace()), abs=1e-4)  # s = 20 = n: exact
    assert isinstance(pp, Estimate) and "±" in str(pp)


def test_seeded_estimates_are_deterministic() -> None:
    assert hutchinson_trace(Counting(A20), 20, 7, generator=gen(5)) == hutchinson_trace(
        Counting(A20), 20, 7, generator=gen(5))
    assert hutchpp_trace(Counting(A20), 20, 9, generator=gen(5)) == hutchpp_trace(
        Counting(A20), 20, 9, generator=gen(5))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: hutchinson_trace(Counting(A20), 20, 1, generator=gen(0)), ValueError,
         r"num_probes must be >= 2 for a standard error, got num_probes=1"),
        (lambda: hutchinson_trace(Counting(A20), 20, 0, generator=gen(0)), ValueError, "num_probes=0"),
        (lambda: hutchinson_trace(Counting(A20), 20, 2.5, generator=gen(0)), TypeError, "num_probes must be an int"),
        (lambda: hutchinson_trace(Counting(A20), 0, 4, generator=gen(0)), ValueError, "n must be a positive integer"),
        (lambda: hutchinson_trace(Counting(A20), 20, 4, generator=gen(0), dtype=torch.float16), ValueError,
         "dtype must be torch.float32 or torch.float64"),
        (lambda: hutchinson_trace(Counting(A20), 20, 4, generator=1), TypeError, "generator must be a torch.Generator"),
        (lambda: hutchinson_trace(lambda v: v[:3], 20, 4, generator=gen(0)), ValueError, "matvec returned shape"),
        (lambda: hutchpp_trace(Counting(A20), 20, 3, generator=gen(0)), ValueError,
         r"num_matvecs must be >= 4 \(1 sketch column.*got num_matvecs=3"),
        (lambda: hutchpp_trace(lambda v: v * float("nan"), 20, 6, generator=gen(0)), ValueError, "non-finite"),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
