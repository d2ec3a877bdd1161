"""Exact oracles for the Krylov solvers, written against the mutants mutmut left alive
(bench/mutation.sh, bench/RESULTS.md): each test pins a quantity a mutant changed.

- power iteration and the plain Lanczos recurrence against hand-written float64 loops
  (same start, same stopping rule: equal counts, values to rounding);
- scale invariance of the relative stopping rule: ``c A`` takes exactly the steps ``A`` takes;
- the tridiagonal ``T = Q A Q^T`` itself, not only its eigenvalues;
- the Kato-Temple error estimate ``min(r, r^2 / delta)`` on hand-computed numbers;
- the SLQ moment's standard error from its per-probe samples;
- the documented bounds of every tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from landscape.lanczos import LanczosProcess, lanczos_tridiagonal
from landscape.power_iteration import power_iteration
from landscape.spectral_density import spectral_density
from landscape.top_eigenvalues import _error_estimates, lanczos_top_eigenvalues

N = 12


def symmetric(spectrum: list[float], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.tensor(spectrum, dtype=torch.float64)) @ q.T


A = symmetric([1000.0, 700.0, 650.0, 400.0, 300.0, 200.0, 100.0, 50.0, 20.0, -30.0, -60.0, -90.0])
START = 7.0 * torch.randn(N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def reference_power(a: torch.Tensor, v: torch.Tensor, tol: float, max_iter: int):
    v = v / v.norm()
    for it in range(1, max_iter + 1):
        w = a @ v
        lam = float(v @ w)
        if float((w - lam * v).norm()) <= tol * abs(lam):
            return lam, v, it, True
        v = w / w.norm()
    return lam, v, max_iter, False


@pytest.mark.parametrize(("tol", "max_iter"), [(1e-6, 10_000), (1e-3, 10_000), (1e-9, 5)])
def test_power_iteration_equals_the_hand_written_loop(tol: float, max_iter: int) -> None:
    lam, v, it, ok = reference_power(A, START, tol, max_iter)
    got = power_iteration(lambda x: A @ x, N, tol=tol, max_iter=max_iter, start=START)
    assert (got.num_matvecs, got.converged) == (it, ok)
    assert got.eigenvalue == pytest.approx(lam, rel=1e-12)
    torch.testing.assert_close(got.eigenvector, v, rtol=0, atol=1e-12)


def test_power_iteration_stops_at_once_on_a_scaled_eigenvector() -> None:
    evals, evecs = torch.linalg.eigh(A)
    got = power_iteration(lambda x: A @ x, N, tol=1e-10, start=7.0 * evecs[:, -1])
    assert got.num_matvecs == 1 and got.converged
    assert got.eigenvalue == pytest.approx(float(evals[-1]), rel=1e-13)


@pytest.mark.parametrize("tol", [0.0, 1.0, 1.5, -1e-3])
def test_power_iteration_tol_must_lie_in_the_open_unit_interval(tol: float) -> None:
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        power_iteration(lambda x: A @ x, N, tol=tol, start=START)


def reference_lanczos(a: torch.Tensor, v: torch.Tensor, m: int):
    q_prev, q, beta_prev = torch.zeros_like(v), v / v.norm(), 0.0
    alphas, betas, rows = [], [], []
    for _ in range(m):
        rows.append(q)
        w = a @ q
        alpha = float(q @ w)
        w = w - alpha * q - beta_prev * q_prev
        beta = float(w.norm())
        alphas.append(alpha)
        betas.append(beta)
        q_prev, q, beta_prev = q, w / beta, beta
    return (torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas[:-1], dtype=torch.float64),
            torch.stack(rows), betas[-1])


def test_plain_lanczos_recurrence_equals_the_hand_written_three_term_loop() -> None:
    alpha, beta, basis, last = reference_lanczos(A, START, 6)
    got = lanczos_tridiagonal(lambda x: A @ x, N, 6, start=START, reorthogonalize=False, keep_basis=True)
    torch.testing.assert_close(got.alpha, alpha, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got.beta, beta, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(got.basis, basis, rtol=0, atol=1e-12)
    assert got.residual_norm == pytest.approx(last, rel=1e-10)
    assert got.num_matvecs == 6 and not got.breakdown


def test_the_tridiagonal_is_q_a_qt_and_symmetric() -> None:
    run = LanczosProcess(lambda x: A @ x, START / START.norm(), 6, locked=None, reorthogonalize=True,
                         keep_basis=True, breakdown_tol=1e-12)
    while not run.exhausted:
        run.step()
    t, q = run.tridiagonal(), run.basis()
    torch.testing.assert_close(t, t.T, rtol=0, atol=0)
    torch.testing.assert_close(t, (q @ A @ q.T).to(t.dtype), rtol=0, atol=1e-10)


@pytest.mark.parametrize("breakdown_tol", [1.0, 2.0, -1e-9])
def test_breakdown_tol_bounds(breakdown_tol: float) -> None:
    with pytest.raises(ValueError, match=r"breakdown_tol must be in \[0, 1\)"):
        lanczos_tridiagonal(lambda x: A @ x, N, 4, start=START, breakdown_tol=breakdown_tol)
    assert lanczos_tridiagonal(lambda x: A @ x, N, 4, start=START, breakdown_tol=0.0).num_matvecs == 4


@pytest.mark.parametrize("k", [1, 3])
def test_the_relative_stopping_rule_is_scale_invariant(k: int) -> None:
    """The Krylov space of ``c A`` is that of ``A`` and every Ritz value scales by ``c``: a
    stopping rule relative to ``|theta|`` takes exactly the same steps for every ``c``."""
    n = 200
    big = symmetric([1000.0, 800.0, 650.0] + torch.linspace(-50.0, 400.0, n - 3).tolist(), seed=2)
    start = torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    runs = {c: lanczos_top_eigenvalues(lambda x, c=c: c * (big @ x), n, k, tol=1e-4, start=start)
            for c in (1e-3, 1.0, 1e3)}
    assert len({r.num_matvecs for r in runs.values()}) == 1, {c: r.num_matvecs for c, r in runs.items()}
    assert runs[1.0].num_matvecs < 40  # stopped by the rule, not by exhausting the space
    for c, r in runs.items():
        assert r.converged
        torch.testing.assert_close(r.eigenvalues, c * runs[1.0].eigenvalues, rtol=1e-10, atol=0)
        torch.testing.assert_close(r.error_estimates, c * runs[1.0].error_estimates, rtol=1e-6, atol=1e-300)
    exact = torch.linalg.eigvalsh(big).flip(0)[:k]
    assert ((runs[1.0].eigenvalues - exact).abs() <= 1e-4 * exact.abs()).all()


def test_error_estimates_by_hand() -> None:
    theta = torch.tensor([10.0, 7.0], dtype=torch.float64)
    residuals = torch.tensor([0.1, 0.3], dtype=torch.float64)
    got = _error_estimates(theta, residuals, torch.tensor([1.0], dtype=torch.float64))
    # gaps: 3 for both; min(0.1, 0.01 / 3), min(0.3, 0.09 / 3)
    torch.testing.assert_close(got, torch.tensor([0.01 / 3, 0.03], dtype=torch.float64), rtol=1e-15, atol=0)
    # a gap below 1 (0.5): min(0.1, 0.01 / 0.5) = 0.02
    close = _error_estimates(torch.tensor([1.0, 0.5], dtype=torch.float64),
                             torch.tensor([0.1, 0.1], dtype=torch.float64), torch.tensor([], dtype=torch.float64))
    torch.testing.assert_close(close, torch.tensor([0.02, 0.02], dtype=torch.float64), rtol=1e-15, atol=0)
    # no other Ritz value: the residual itself (Krylov-Bogoliubov)
    alone = _error_estimates(torch.tensor([4.0], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64),
                             torch.tensor([], dtype=torch.float64))
    assert alone.tolist() == [0.2]


def test_slq_moment_standard_error_from_its_samples() -> None:
    for probes in (2, 5):
        density = spectral_density(lambda x: A @ x, N, num_probes=probes, num_steps=4,
                                   generator=torch.Generator().manual_seed(3))
        samples = density.probe_moments(2)
        est = density.moment(2)
        assert est.samples == probes
        assert est.value == pytest.approx(float(samples.mean()), rel=1e-14)
        assert est.stderr == pytest.approx(float(samples.std(correction=1)) / math.sqrt(probes), rel=1e-12)
    two = spectral_density(lambda x: A @ x, N, num_probes=2, num_steps=4, generator=torch.Generator().manual_seed(3))
    x = two.probe_moments(1)
    assert two.moment(1).stderr == pytest.approx(abs(float(x[0] - x[1])) / 2, rel=1e-12)  # std/sqrt(2) of two values
    assert two.moment(1).num_matvecs == two.num_matvecs == 8
    one = spectral_density(lambda x: A @ x, N, num_probes=1, num_steps=4, generator=torch.Generator().manual_seed(3))
    single = one.moment(1)
    assert math.isnan(single.stderr)
    assert (single.value, single.samples, single.num_matvecs) == (float(one.probe_moments(1)[0]), 1, 4)


@pytest.mark.parametrize("log", [False, True])
def test_the_plotted_curve_is_the_documented_grid_and_density(log: bool) -> None:
    from landscape.spectral_density import plot_spectral_density

    density = spectral_density(lambda x: A @ x, N, num_probes=2, num_steps=N, generator=torch.Generator().manual_seed(5))
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    sigma = 0.01 * (hi - lo)  # the documented default
    ax = plot_spectral_density(density, log=log, label="A")
    (line,) = ax.lines
    x, y = line.get_xdata(), line.get_ydata()
    assert len(x) == 1000 and line.get_label() == "A"
    assert x[0] == pytest.approx(lo - 5 * sigma, rel=1e-12) and x[-1] == pytest.approx(hi + 5 * sigma, rel=1e-12)
    expected = density.density(torch.as_tensor(x), sigma).numpy()
    if log:
        assert ax.get_yscale() == "log"
        expected[expected <= 0] = float("nan")
    torch.testing.assert_close(torch.as_tensor(y), torch.as_tensor(expected), rtol=1e-12, atol=0, equal_nan=True)
    if log:  # with a narrow sigma the density underflows to 0 between nodes: those points are left out
        far = plot_spectral_density(density, sigma=1e-3, log=True, num_points=50).lines[0]
        raw = density.density(torch.as_tensor(far.get_xdata()), 1e-3)
        assert (raw == 0).any() and (raw > 0).any()
        masked = torch.where(raw > 0, raw, torch.tensor(float("nan"), dtype=raw.dtype))
        torch.testing.assert_close(torch.as_tensor(far.get_ydata()), masked, rtol=1e-12, atol=0, equal_nan=True)


def test_the_plot_sigma_of_a_single_node_and_bad_sigmas() -> None:
    from landscape.spectral_density import plot_spectral_density

    one_point = spectral_density(lambda x: 250.0 * x, N, num_probes=1, num_steps=1,
                                 generator=torch.Generator().manual_seed(0))
    x = plot_spectral_density(one_point, log=False, num_points=3).lines[0].get_xdata()
    sigma = 1e-3 * 250.0  # 1e-3 of max(1, |theta|)
    assert x.tolist() == pytest.approx([250.0 - 5 * sigma, 250.0, 250.0 + 5 * sigma], rel=1e-12)
    x = plot_spectral_density(spectral_density(lambda x: 0.5 * x, N, num_probes=1, num_steps=1,
                                               generator=torch.Generator().manual_seed(0)),
                              log=False, num_points=3).lines[0].get_xdata()
    assert x.tolist() == pytest.approx([0.5 - 5e-3, 0.5, 0.5 + 5e-3], rel=1e-12)  # max(1, 0.5) = 1
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="sigma must be a positive finite float"):
            plot_spectral_density(one_point, sigma=bad)


def test_top_eigenvalues_tol_bounds_are_the_documented_ones() -> None:
    eps = torch.finfo(torch.float64).eps
    for tol in (1.0, 2.0, 9 * eps, 0.0):
        with pytest.raises(ValueError, match=r"must lie in \[10 \* eps"):
            lanczos_top_eigenvalues(lambda x: A @ x, N, 1, tol=tol, start=START)
    assert lanczos_top_eigenvalues(lambda x: A @ x, N, 1, tol=10 * eps, start=START).converged


@pytest.mark.parametrize("k", [1, 2])
def test_the_default_step_cap_is_100_plus_20_k(k: int) -> None:
    """A top eigenvalue inside a dense uniform spectrum cannot reach 1e-14 in 100 + 20 k steps:
    the run stops at the cap and says it did not converge."""
    n = 600
    values = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    res = lanczos_top_eigenvalues(lambda x: values * x, n, k, tol=1e-14,
                                  generator=torch.Generator().manual_seed(0))
    assert not res.converged
    assert res.num_matvecs == 100 + 20 * k


def test_certified_results_carry_their_error_estimates() -> None:
    """certify=True returns through its own path: its error estimates are the Kato-Temple
    estimates of its Ritz pairs, at most the residuals, and bound the true errors here."""
    res = lanczos_top_eigenvalues(lambda x: A @ x, N, 3, tol=1e-6, start=START, certify=True)
    exact = torch.linalg.eigvalsh(A).flip(0)[:3]
    assert res.converged and res.error_estimates.shape == (3,)
    assert (res.error_estimates <= res.residuals + 1e-300).all()
    assert ((res.eigenvalues - exact).abs() <= res.residuals + 1e-9).all()
    torch.testing.assert_close(res.eigenvalues, exact, rtol=1e-6, atol=0)


def test_max_steps_may_equal_k() -> None:
    res = lanczos_top_eigenvalues(lambda x: A @ x, N, 3, max_steps=3, start=START)
    assert res.num_matvecs == 3 and res.eigenvalues.shape == (3,)
    with pytest.raises(ValueError, match="max_steps=2 is smaller than k=3; use max_steps >= k"):
        lanczos_top_eigenvalues(lambda x: A @ x, N, 3, max_steps=2, start=START)
