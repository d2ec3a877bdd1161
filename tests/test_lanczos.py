"""Lanczos tridiagonalization, top-k eigenpairs and the power-iteration baseline
(landscape/lanczos.py) on matrices with a known spectrum, A = Q diag(lam) Q^T."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscape.lanczos import lanczos_tridiagonal
from landscape.power_iteration import power_iteration
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from tests.landscape_cases import Counting, gen, known_spectrum

TOL = 1e-8  # a tight relative tolerance for the exact-spectrum checks (the default is 1e-3)


def matvec_of(a: torch.Tensor):
    return lambda v: a @ v


def expected(lam, k: int, which: str) -> torch.Tensor:
    return torch.tensor(sorted(lam, reverse=which == "largest")[:k], dtype=torch.float64)


def check_pairs(a: torch.Tensor, res, lam, k: int, which: str) -> None:
    assert res.converged
    scale = max(abs(x) for x in lam)
    want = expected(lam, k, which)
    torch.testing.assert_close(res.eigenvalues, want, rtol=0, atol=1e-8 * scale)
    resid = (a @ res.eigenvectors.T - res.eigenvectors.T * res.eigenvalues).norm(dim=0)
    assert (resid <= TOL * scale).all(), resid
    torch.testing.assert_close(res.residuals, resid, rtol=1e-3, atol=1e-14 * scale)
    # the eigenvectors are orthonormal, even within a repeated eigenvalue
    torch.testing.assert_close(res.eigenvectors @ res.eigenvectors.T, torch.eye(k, dtype=torch.float64),
                               rtol=0, atol=1e-10)


SPECTRA = {
    "separated": [10.0, 7.0, 4.0, 2.5, 1.0] + torch.linspace(-1.0, 0.5, 25).tolist(),
    "clustered": [5.0, 5.0, 5.0 - 1e-3, 4.999, 4.998] + torch.linspace(-3.0, 4.0, 25).tolist(),
    "negative": [-10.0, 3.0, 2.0, 1.5, 1.0] + torch.linspace(-9.0, 0.9, 25).tolist(),
    "repeated": [3.0] * 4 + [-2.0] * 4 + torch.linspace(-1.0, 2.0, 22).tolist(),
    "rank_deficient": [4.0, 2.0, 1.0, -0.5] + [0.0] * 26,
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
@pytest.mark.parametrize("which", ["largest", "smallest"])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_top_k_known_spectrum(name: str, which: str, k: int) -> None:
    lam = SPECTRA[name]
    a = known_spectrum(lam, seed=k)
    res = lanczos_top_eigenvalues(matvec_of(a), a.shape[0], k, which=which, generator=gen(100 + k), tol=TOL,
                                  certify=True)
    check_pairs(a, res, lam, k, which)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), n=st.integers(6, 20))
def test_top_k_random_spectra(seed: int, k: int, n: int) -> None:
    lam = torch.randn(n, generator=gen(seed), dtype=torch.float64).tolist()
    a = known_spectrum(lam, seed=seed)
    for which in ("largest", "smallest"):
        res = lanczos_top_eigenvalues(matvec_of(a), n, k, which=which, generator=gen(seed + 1), tol=TOL,
                                      certify=True)
        check_pairs(a, res, lam, k, which)


def test_largest_is_algebraic_not_magnitude() -> None:
    lam = [-10.0, 3.0, 1.0, 0.5, 0.0, -1.0]
    a = known_spectrum(lam)
    largest = lanczos_top_eigenvalues(matvec_of(a), 6, generator=gen(0), tol=1e-12)
    smallest = lanczos_top_eigenvalues(matvec_of(a), 6, which="smallest", generator=gen(0), tol=1e-12)
    power = power_iteration(matvec_of(a), 6, generator=gen(0))
    assert largest.eigenvalues.item() == pytest.approx(3.0, rel=1e-10)
    assert smallest.eigenvalues.item() == pytest.approx(-10.0, rel=1e-10)
    assert power.converged and power.eigenvalue == pytest.approx(-10.0, rel=1e-7)  # magnitude


def test_reorthogonalization_keeps_basis_orthonormal_after_n_steps() -> None:
    # a dominant, well-separated eigenvalue: plain Lanczos loses orthogonality as it converges
    lam = [100.0, 50.0] + torch.linspace(0.0, 1.0, 38).tolist()
    a = known_spectrum(lam)
    n = a.shape[0]
    full = lanczos_tridiagonal(matvec_of(a), n, n, generator=gen(1))
    assert full.basis is not None and full.basis.shape == (n, n)
    eye = torch.eye(n, dtype=torch.float64)
    assert (full.basis @ full.basis.T - eye).abs().max() <= 1e-10
    plain = lanczos_tridiagonal(matvec_of(a), n, n, generator=gen(1), reorthogonalize=False)
    assert plain.basis is not None
    m = plain.basis.shape[0]
    assert (plain.basis @ plain.basis.T - torch.eye(m, dtype=torch.float64)).abs().max() > 1e-3


def test_tridiagonal_has_the_full_spectrum_when_m_equals_n() -> None:
    lam = torch.linspace(-3.0, 7.0, 25, dtype=torch.float64)
    a = known_spectrum(lam)
    res = lanczos_tridiagonal(matvec_of(a), 25, 25, generator=gen(3))
    assert res.alpha.shape == (25,) and res.beta.shape == (24,) and res.num_matvecs == 25
    t = torch.diag(res.alpha) + torch.diag(res.beta, 1) + torch.diag(res.beta, -1)
    torch.testing.assert_close(torch.linalg.eigvalsh(t), lam, rtol=0, atol=1e-10 * 7.0)
    # T = Q A Q^T
    torch.testing.assert_close(res.basis @ a @ res.basis.T, t, rtol=0, atol=1e-10 * 7.0)


def test_breakdown_on_low_rank_matrix_stops_early_without_nan() -> None:
    lam = [4.0, 2.0, -1.0] + [0.0] * 27  # 4 distinct eigenvalues: the Krylov space has dimension 4
    a = known_spectrum(lam)
    res = lanczos_tridiagonal(matvec_of(a), 30, 30, generator=gen(0))
    assert res.breakdown and res.num_matvecs == 4 and res.alpha.shape == (4,)
    assert torch.isfinite(res.alpha).all() and torch.isfinite(res.beta).all()
    assert torch.isfinite(res.basis).all()
    t = torch.diag(res.alpha) + torch.diag(res.beta, 1) + torch.diag(res.beta, -1)
    torch.testing.assert_close(torch.linalg.eigvalsh(t), torch.tensor([-1.0, 0.0, 2.0, 4.0], dtype=torch.float64),
                               rtol=0, atol=1e-10)
    zero = lanczos_tridiagonal(lambda v: torch.zeros_like(v), 5, 5, generator=gen(0))
    assert zero.breakdown and zero.num_matvecs == 1 and zero.alpha.tolist() == [0.0]


def test_power_iteration_agrees_on_a_separated_spectrum() -> None:
    lam = [10.0, 5.0] + torch.linspace(-4.0, 4.0, 18).tolist()
    a = known_spectrum(lam)
    power = power_iteration(matvec_of(a), 20, tol=1e-10, generator=gen(0))
    lanczos = lanczos_top_eigenvalues(matvec_of(a), 20, generator=gen(0), tol=1e-12)
    assert power.converged
    assert power.eigenvalue == pytest.approx(lanczos.eigenvalues.item(), rel=1e-10)
    assert abs(float(power.eigenvector @ lanczos.eigenvectors[0])) == pytest.approx(1.0, abs=1e-8)


def test_power_iteration_needs_more_matvecs_on_a_clustered_spectrum() -> None:
    # |lambda_2 / lambda_1| = 0.99: power iteration needs about log(1e-8)/log(0.99) ~ 1800 steps
    lam = [1.0, 0.99] + torch.linspace(-0.5, 0.9, 58).tolist()
    a = known_spectrum(lam)
    lanczos = lanczos_top_eigenvalues(matvec_of(a), 60, generator=gen(0), tol=TOL)
    power = power_iteration(matvec_of(a), 60, tol=TOL, max_iter=20_000, generator=gen(0))
    assert lanczos.converged and power.converged
    assert power.eigenvalue == pytest.approx(1.0, rel=1e-8)
    assert 10 * lanczos.num_matvecs < power.num_matvecs


def test_power_iteration_reports_non_convergence() -> None:
    a = known_spectrum([2.0, -2.0, 1.0, 0.0])  # +-2 both dominant: no convergence
    res = power_iteration(matvec_of(a), 4, max_iter=50, generator=gen(0))
    assert not res.converged and res.num_matvecs == 50


def test_max_steps_too_small_is_reported_as_not_converged() -> None:
    a = known_spectrum([1.0, 0.999] + torch.linspace(-1.0, 0.99, 48).tolist())
    res = lanczos_top_eigenvalues(matvec_of(a), 50, max_steps=3, generator=gen(0))
    assert not res.converged and res.eigenvalues.shape == (1,)


@given(seed=st.integers(0, 2**32 - 1))
def test_seeded_runs_are_deterministic(seed: int) -> None:
    a = known_spectrum(torch.linspace(-1.0, 2.0, 12), seed=seed % 100)
    r1 = lanczos_top_eigenvalues(matvec_of(a), 12, 2, generator=gen(seed))
    r2 = lanczos_top_eigenvalues(matvec_of(a), 12, 2, generator=gen(seed))
    assert torch.equal(r1.eigenvalues, r2.eigenvalues) and torch.equal(r1.eigenvectors, r2.eigenvectors)
    assert r1.num_matvecs == r2.num_matvecs
    t1 = lanczos_tridiagonal(matvec_of(a), 12, 6, generator=gen(seed), start_distribution="gaussian")
    t2 = lanczos_tridiagonal(matvec_of(a), 12, 6, generator=gen(seed), start_distribution="gaussian")
    assert torch.equal(t1.alpha, t2.alpha) and torch.equal(t1.basis, t2.basis)
    p1 = power_iteration(matvec_of(a), 12, generator=gen(seed))
    p2 = power_iteration(matvec_of(a), 12, generator=gen(seed))
    assert p1.eigenvalue == p2.eigenvalue and p1.num_matvecs == p2.num_matvecs


def test_explicit_start_and_no_generator_and_float32() -> None:
    a = known_spectrum([3.0, 1.0, 0.5, -2.0])
    start = torch.ones(4, dtype=torch.float64)
    r1 = lanczos_tridiagonal(matvec_of(a), 4, 4, start=start)
    r2 = lanczos_tridiagonal(matvec_of(a), 4, 4, start=3 * start)
    torch.testing.assert_close(r1.alpha, r2.alpha)
    top = lanczos_top_eigenvalues(matvec_of(a), 4, start=start, certify=True)  # restarts: a fresh OS seed
    assert top.eigenvalues.item() == pytest.approx(3.0, rel=1e-10)
    a32 = a.float()
    top32 = lanczos_top_eigenvalues(matvec_of(a32), 4, 2, dtype=torch.float32, generator=gen(0))
    assert top32.converged and top32.eigenvectors.dtype == torch.float32
    torch.testing.assert_close(top32.eigenvalues, torch.tensor([3.0, 1.0], dtype=torch.float64), rtol=1e-4, atol=0)
    lean = lanczos_tridiagonal(matvec_of(a), 4, 3, generator=gen(0), reorthogonalize=False, keep_basis=False)
    assert lean.basis is None and lean.alpha.shape == (3,)


def test_max_steps_is_capped_at_n() -> None:
    a = known_spectrum([1.0, 2.0, 3.0, 4.0])
    res = lanczos_top_eigenvalues(matvec_of(a), 4, 2, max_steps=40, generator=gen(0))
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, torch.tensor([4.0, 3.0], dtype=torch.float64), rtol=1e-10, atol=0)


def test_dtype_follows_the_start_vector() -> None:
    a = known_spectrum([3.0, 1.0, 0.5]).float()
    res = lanczos_tridiagonal(matvec_of(a), 3, 2, start=torch.ones(3))
    assert res.basis.dtype == torch.float32


# ------------------------------------------------------------------------ bad input
A4 = known_spectrum([1.0, 2.0, 3.0, 4.0])


F64 = torch.float64


def tri(*args, **kwargs):
    """lanczos_tridiagonal on the 4 x 4 A4 (a seeded generator unless given)."""
    kwargs.setdefault("generator", gen(0))
    return lanczos_tridiagonal(kwargs.pop("matvec", matvec_of(A4)), *args, **kwargs)


def top(*args, **kwargs):
    kwargs.setdefault("generator", gen(0))
    return lanczos_top_eigenvalues(matvec_of(A4), *args, **kwargs)


def power(**kwargs):
    kwargs.setdefault("generator", gen(0))
    return power_iteration(matvec_of(A4), 4, **kwargs)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: tri(4, 0), ValueError, "num_steps must be a positive integer, got num_steps=0"),
        (lambda: tri(4, 5), ValueError, r"num_steps=5 exceeds n=4; use num_steps <= 4"),
        (lambda: tri(0, 1), ValueError, "n must be a positive integer, got n=0"),
        (lambda: tri(4.0, 1), TypeError, "n must be an int, got float"),
        (lambda: tri(4, 2, start=torch.zeros(4, dtype=F64)), ValueError, "start vector is zero"),
        (lambda: tri(4, 2, start=torch.full((4,), float("nan"), dtype=F64)), ValueError, "non-finite entries"),
        (lambda: tri(4, 2, start=torch.ones(3, dtype=F64)), ValueError, r"start must have shape \(4,\), got \(3,\)"),
        (lambda: tri(4, 2, start=[1.0] * 4), TypeError, "start must be a torch.Tensor or None, got list"),
        (lambda: tri(4, 2, generator=0), TypeError, "generator must be a torch.Generator or None, got int"),
        (lambda: tri(4, 2, dtype=torch.int64), ValueError, "dtype must be torch.float32 or torch.float64"),
        (lambda: tri(4, 2, start_distribution="uniform"), ValueError, "start_distribution must be 'rademacher' or"),
        (lambda: tri(4, 2, breakdown_tol=-1.0), ValueError, r"breakdown_tol must be in \[0, 1\), got -1.0"),
        (lambda: tri(4, 2, matvec=lambda v: v[:2]), ValueError, r"matvec returned shape \(2,\)"),
        (lambda: tri(4, 2, matvec=lambda v: v * float("inf")), ValueError, "matvec returned non-finite values"),
        (lambda: tri(4, 2, matvec=lambda v: v.tolist()), TypeError, "matvec must return a torch.Tensor, got list"),
        (lambda: top(4, 0), ValueError, "k must be a positive integer, got k=0"),
        (lambda: top(4, 5), ValueError, r"k=5 exceeds n=4; use k <= 4"),
        (lambda: top(4, 1, which="magnitude"), ValueError, "which must be 'largest' or 'smallest'.*got 'magnitude'"),
        (lambda: top(4, 1, tol=0.0), ValueError, r"tol=0.0 must lie in \[10 \* eps"),
        (lambda: top(4, 1, tol=1e-9, dtype=torch.float32), ValueError, "use a larger tol or float64"),
        (lambda: top(4, 3, max_steps=2), ValueError, "max_steps=2 is smaller than k=3; use max_steps >= k"),
        (lambda: top(4, 1, max_steps=0), ValueError, "max_steps must be a positive integer, got max_steps=0"),
        (lambda: top(4, 1, start_distribution="x"), ValueError, "start_distribution must be 'rademacher' or"),
        (lambda: top(4, start=torch.zeros(4, dtype=F64)), ValueError, "start vector is zero"),
        (lambda: power(tol=0.0), ValueError, r"tol must be in \(0, 1\), got tol=0.0"),
        (lambda: power(max_iter=0), ValueError, "max_iter must be a positive integer, got max_iter=0"),
        (lambda: power(start=torch.zeros(4, dtype=F64)), ValueError, "start vector is zero"),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------- the default stopping rule

DISTINCT_TOP = {  # spectra whose top-5 (and bottom-5) are distinct
    "separated": SPECTRA["separated"],
    "negative_outliers": [-50.0, -20.0, 3.0, 2.9, 2.8, 2.7, 2.6] + torch.linspace(-1.0, 1.0, 193).tolist(),
    "clustered_top": [5.0, 4.999, 4.998, 4.997, 4.996] + torch.linspace(-3.0, 4.0, 195).tolist(),
    "hessian_like": [30.0, 12.0, 11.5, 4.0, 3.0] + (torch.linspace(0, 1, 295) ** 8 * 0.5).tolist(),
}


@pytest.mark.parametrize(("name", "which"), [(name, which) for name in sorted(DISTINCT_TOP)
                                              for which in ("largest", "smallest")
                                              if (name, which) != ("hessian_like", "smallest")])  # bottom ~ 0
@pytest.mark.parametrize("k", [1, 5])
def test_default_rule_meets_its_tolerance_with_no_extra_matvecs(name: str, k: int, which: str) -> None:
    """At the defaults (tol 1e-3 on the eigenvalue): converged, every value within 1e-3 of
    the true one, the free residuals equal the explicit ones and bound the distance to the
    nearest eigenvalue, and every matvec is a Lanczos step (none spent on certification)."""
    lam = DISTINCT_TOP[name]
    a = known_spectrum(lam, seed=k)
    op = Counting(a)
    res = lanczos_top_eigenvalues(op, a.shape[0], k, which=which, generator=gen(7))
    assert res.converged and op.calls == res.num_matvecs
    want = expected(lam, k, which)
    assert ((res.eigenvalues - want).abs() <= 1e-3 * want.abs()).all(), (res.eigenvalues, want)
    explicit = (a @ res.eigenvectors.T - res.eigenvectors.T * res.eigenvalues).norm(dim=0)
    torch.testing.assert_close(res.residuals, explicit, rtol=1e-6, atol=1e-12 * max(map(abs, lam)))
    nearest = (res.eigenvalues[:, None] - torch.linalg.eigvalsh(a)[None, :]).abs().min(dim=1).values
    assert (nearest <= res.residuals * (1 + 1e-9) + 1e-13).all()
    assert (res.residuals <= 1e-3 * res.eigenvalues.abs()).all()
    # the estimate min(r, r^2 / gap) is far below the tolerance it was stopped at
    assert (res.error_estimates <= res.residuals).all()


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 4), tol=st.sampled_from([1e-2, 1e-3, 1e-6]))
def test_when_the_rule_says_converged_the_values_are_that_close(seed: int, k: int, tol: float) -> None:
    """Random spectra (ties have probability 0): the k values the rule accepts are the true
    top-k to ``tol`` relative -- the error is checked, not the rule's own claim."""
    lam = (torch.randn(60, generator=gen(seed), dtype=torch.float64) * 3).tolist()
    a = known_spectrum(lam, seed=seed % 1000)
    res = lanczos_top_eigenvalues(matvec_of(a), 60, k, tol=tol, generator=gen(seed + 1))
    if res.converged:
        nearest = (res.eigenvalues[:, None] - torch.tensor(lam, dtype=torch.float64)[None, :]).abs().min(dim=1).values
        assert (nearest <= res.residuals * (1 + 1e-9) + 1e-12).all()
        assert (res.residuals <= tol * res.eigenvalues.abs() + 1e-12).all()


def test_a_zero_gap_pair_is_found_once_by_default_and_twice_with_certify() -> None:
    """One Krylov space sees each eigenspace once: top-2 of {5, 5, 3, ...} is (5, 3) by
    default, each still within its residual of an eigenvalue; certify=True deflates and finds
    the second copy of 5 at the cost of more matvecs."""
    lam = [5.0, 5.0, 3.0] + torch.linspace(-1.0, 2.0, 57).tolist()
    a = known_spectrum(lam)
    plain = lanczos_top_eigenvalues(matvec_of(a), 60, 2, generator=gen(0))
    assert plain.converged
    torch.testing.assert_close(plain.eigenvalues, torch.tensor([5.0, 3.0], dtype=torch.float64), rtol=1e-3, atol=0)
    certified = lanczos_top_eigenvalues(matvec_of(a), 60, 2, generator=gen(0), certify=True)
    assert certified.converged and certified.num_matvecs > plain.num_matvecs
    torch.testing.assert_close(certified.eigenvalues, torch.tensor([5.0, 5.0], dtype=torch.float64), rtol=1e-3, atol=0)
    assert abs(float(certified.eigenvectors[0] @ certified.eigenvectors[1])) < 1e-6


def test_fewer_matvecs_than_the_residual_rule_of_full_accuracy() -> None:
    """The eigenvalue tolerance stops early: the default needs far fewer products than the
    same run held to 1e-10, and its value is still within 1e-3 (about r^2 / gap in fact)."""
    lam = DISTINCT_TOP["hessian_like"]
    a = known_spectrum(lam)
    default = lanczos_top_eigenvalues(matvec_of(a), 300, generator=gen(1))
    tight = lanczos_top_eigenvalues(matvec_of(a), 300, generator=gen(1), tol=1e-10)
    assert default.num_matvecs < tight.num_matvecs
    assert abs(float(default.eigenvalues[0]) - 30.0) <= float(default.error_estimates[0]) * 10 + 1e-12


def test_the_working_dtype_defaults_to_the_operators() -> None:
    """``op.matvec`` of an operator with a ``dtype`` (a HessianOperator) sets the working
    precision: a float32 model is probed in float32 without being told."""

    class Operator:
        dtype, device = torch.float32, torch.device("cpu")

        def __init__(self, a: torch.Tensor) -> None:
            self.a = a.float()

        def matvec(self, v: torch.Tensor) -> torch.Tensor:
            return self.a @ v.float()

    a = known_spectrum([3.0, 1.0, 0.5, -2.0] + [0.1] * 16)
    res = lanczos_top_eigenvalues(Operator(a).matvec, 20, generator=gen(0))
    assert res.eigenvectors.dtype == torch.float32 and res.converged
    assert res.eigenvalues.item() == pytest.approx(3.0, rel=1e-3)
    assert lanczos_top_eigenvalues(matvec_of(a), 20, generator=gen(0)).eigenvectors.dtype == torch.float64
