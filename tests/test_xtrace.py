"""XTrace (landscape/xtrace.py), both test-vector variants: the explicit leave-one-out oracle
(with the sphere variant's rescaling, in the closed form and the rank-revealing fallback),
exactness below rank s and on mu I, unbiasedness over seeds (degenerate Rademacher sketches
included), the standard error's calibration, the variance on a flat spectrum and on a few
large eigenvalues against Hutchinson, and generator hygiene."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from landscape import xtrace
from analysis.estimate import Estimate
from landscape.hutchinson import hutchinson_trace
from landscape.xtrace import _leave_one_out_normals, _xtrace_samples, _xtrace_samples_rank_revealing
from tests.landscape_cases import gen, known_spectrum

K = 4.0  # standard errors allowed (STYLE.md: Monte Carlo tests)
VARIANTS = ["sphere", "rademacher"]


class Recording:
    """A matvec that counts its calls and keeps its inputs (the first s are Omega's columns)."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a, self.inputs = a, []

    @property
    def calls(self) -> int:
        return len(self.inputs)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.inputs.append(v.clone())
        return self.a @ v


def naive_samples(a: torch.Tensor, omega: torch.Tensor, sphere: bool = False) -> torch.Tensor:
    """The oracle: t_i from Q_(i) = QR basis of Y without column i, built explicitly; with
    ``sphere`` the Hutchinson term w'^T A w' is rescaled by (n - s + 1) / ||w'||^2."""
    n, s = omega.shape
    y = a @ omega  # [n, s]
    samples = []
    for i in range(s):
        q_i, _ = torch.linalg.qr(torch.cat([y[:, :i], y[:, i + 1:]], dim=1))  # [n, s - 1]
        w = omega[:, i] - q_i @ (q_i.T @ omega[:, i])
        quad = w @ a @ w
        samples.append(torch.trace(q_i.T @ a @ q_i) + ((n - s + 1) * quad / (w @ w) if sphere else quad))
    return torch.stack(samples)


def naive_rank_revealing_samples(a: torch.Tensor, omega: torch.Tensor, rtol: float, sphere: bool) -> torch.Tensor:
    """The oracle of the fallback: Q_(i) = left singular vectors of Y without column i above
    rtol * ||Y||_2 (k_i of them), rescaling by (n - k_i) / ||w'||^2 for ``sphere``."""
    n, s = omega.shape
    y = a @ omega
    floor = rtol * float(torch.linalg.matrix_norm(y, ord=2))
    samples = []
    for i in range(s):
        u, sv, _ = torch.linalg.svd(torch.cat([y[:, :i], y[:, i + 1:]], dim=1), full_matrices=False)
        u = u[:, sv > floor]  # [n, k_i]
        w = omega[:, i] - u @ (u.T @ omega[:, i])
        quad = w @ a @ w
        samples.append(torch.trace(u.T @ a @ u) + ((n - u.shape[1]) * quad / (w @ w) if sphere else quad))
    return torch.stack(samples)


def sketch_pieces(a: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(omega_i^T y_i, W, R, H) as xtrace forms them, for the private-helper tests."""
    y = a @ omega
    q, r = torch.linalg.qr(y)
    h = q.T @ a @ q
    return (omega * y).sum(0), q.T @ omega, r, (h + h.T) / 2


def outside_sq(a: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """||(I - Q Q^T) omega_i||^2 [s], the sphere variant's extra input of the private helpers."""
    q, _ = torch.linalg.qr(a @ omega)
    return (omega - q @ (q.T @ omega)).square().sum(0)


def rademacher(n: int, s: int, seed: int) -> torch.Tensor:
    return (2 * torch.randint(0, 2, (n, s), generator=gen(seed)) - 1).double()


A12 = known_spectrum(torch.linspace(-2.0, 3.0, 12), seed=1)  # indefinite, full rank
SYM15 = torch.randn(15, 15, generator=gen(11), dtype=torch.float64)
SYM15 = (SYM15 + SYM15.T) / 2  # a random symmetric matrix, no structure


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_equals_the_explicit_leave_one_out_computation(test_vectors: str) -> None:
    sphere = test_vectors == "sphere"
    rec = Recording(SYM15)
    est = xtrace(rec, 15, 10, generator=gen(3), test_vectors=test_vectors)  # s = 5
    omega = torch.stack(rec.inputs[:5], dim=1)  # [15, 5]
    if sphere:  # uniform on the sphere of radius sqrt(n): not Rademacher, norm sqrt(15)
        torch.testing.assert_close(omega.norm(dim=0), torch.full((5,), 15**0.5, dtype=torch.float64))
        assert not torch.equal(omega.abs(), torch.ones_like(omega))
    else:
        assert torch.equal(omega.abs(), torch.ones_like(omega))
    t = naive_samples(SYM15, omega, sphere=sphere)
    scale = float(torch.linalg.matrix_norm(SYM15, ord="nuc"))
    assert est.value == pytest.approx(float(t.mean()), abs=1e-10 * scale)
    assert est.stderr == pytest.approx(float(t.std()) / math.sqrt(5), abs=1e-10 * scale)
    assert est.num_matvecs == rec.calls == 10
    # sample by sample: the closed form and the rank-revealing form both equal the oracle
    pieces = sketch_pieces(SYM15, omega)
    extra = {"outside_sq": outside_sq(SYM15, omega), "n": 15} if sphere else {}
    fast = _xtrace_samples(*pieces, _leave_one_out_normals(pieces[2]), **extra)
    revealing = _xtrace_samples_rank_revealing(*pieces, rtol=1e-13, **extra)
    torch.testing.assert_close(fast, t, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(revealing, t, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_the_rank_revealing_form_equals_its_oracle_on_a_degenerate_sketch(test_vectors: str) -> None:
    # A = v v^T - 2 u u^T (rank 2) with Rademacher columns, some orthogonal to v: Y without
    # column i has numerical rank k_i in {0, 1, 2} < s - 1 = 3, so the sphere variant must
    # rescale by n - k_i (not n - s + 1) and take ||w'|| from this rank-k_i projector.  The
    # helper does not care how omega was drawn; these columns have norm sqrt(n) anyway.
    sphere = test_vectors == "sphere"
    n, s = 6, 4
    v = torch.zeros(n, dtype=torch.float64)
    u = torch.zeros(n, dtype=torch.float64)
    v[:2] = u[2:4] = 2**-0.5
    a = torch.outer(v, v) - 2 * torch.outer(u, u)
    rtol = 10.0 * s * torch.finfo(torch.float64).eps  # xtrace's threshold
    ranks_seen = set()
    for seed in range(30):
        omega = rademacher(n, s, seed=seed)
        y = a @ omega
        ranks = {int(torch.linalg.matrix_rank(torch.cat([y[:, :i], y[:, i + 1:]], dim=1))) for i in range(s)}
        ranks_seen |= ranks
        pieces = sketch_pieces(a, omega)
        extra = {"outside_sq": outside_sq(a, omega), "n": n} if sphere else {}
        t = _xtrace_samples_rank_revealing(*pieces, rtol=rtol, **extra)
        torch.testing.assert_close(t, naive_rank_revealing_samples(a, omega, rtol, sphere), rtol=0, atol=1e-10)
    assert {0, 1} <= ranks_seen <= {0, 1, 2}  # every k_i < s - 1; k_i < rank(A) = 2 did occur


@pytest.mark.parametrize("test_vectors", VARIANTS)
@pytest.mark.parametrize("signs", [(1.0,), (1.0, -1.0), (1.0, -1.0, 1.0, -1.0), (1.0,) * 4 + (-1.0,) * 3],
                         ids=["rank1", "rank2-indefinite", "rank4-indefinite", "rank7-indefinite"])
def test_exact_below_rank_s(signs: tuple[float, ...], test_vectors: str) -> None:
    n, budget = 30, 16  # s = 8 > rank
    rank = len(signs)
    lam = torch.zeros(n, dtype=torch.float64)
    lam[:rank] = torch.tensor(signs, dtype=torch.float64) * torch.linspace(0.5, 3.0, rank, dtype=torch.float64)
    rec = Recording(known_spectrum(lam, seed=rank))
    est = xtrace(rec, n, budget, generator=gen(rank), test_vectors=test_vectors)
    scale = float(lam.abs().sum())
    assert est.value == pytest.approx(float(lam.sum()), abs=1e-10 * scale)
    assert est.stderr <= 1e-10 * scale
    assert est.num_matvecs == rec.calls == budget


@given(seed=st.integers(0, 2**32 - 1), rank=st.integers(1, 7), test_vectors=st.sampled_from(VARIANTS))
def test_exact_below_rank_s_for_any_seed(seed: int, rank: int, test_vectors: str) -> None:
    n = 20
    lam = torch.zeros(n, dtype=torch.float64)
    lam[:rank] = torch.randn(rank, generator=gen(seed), dtype=torch.float64) * 3  # mixed signs
    est = xtrace(Recording(known_spectrum(lam, seed=seed % 1000)), n, 16, generator=gen(seed + 1),
                 test_vectors=test_vectors)
    scale = float(lam.abs().sum())
    assert est.value == pytest.approx(float(lam.sum()), abs=1e-10 * scale)
    assert est.stderr <= 1e-10 * scale


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_the_closed_form_stays_exact_when_r_is_nearly_singular(rank: int) -> None:
    # rank(Y) = rank < s: R's trailing singular values are rounding noise (~1e-16 relative).
    # xtrace sends this case to the rank-revealing form; the closed form of the module
    # docstring is exact here too, because s_i is normalized.
    n, s = 30, 8
    lam = torch.zeros(n, dtype=torch.float64)
    lam[:rank] = torch.randn(rank, generator=gen(rank), dtype=torch.float64) * 3
    a = known_spectrum(lam, seed=rank)
    pieces = sketch_pieces(a, rademacher(n, s, seed=rank))
    sv = torch.linalg.svdvals(pieces[2])
    assert float(sv[-1] / sv[0]) < 1e-13  # R is numerically singular
    t = _xtrace_samples(*pieces, _leave_one_out_normals(pieces[2]))
    torch.testing.assert_close(t, torch.full_like(t, float(lam.sum())), rtol=0, atol=1e-10 * float(lam.abs().sum()))


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_exactly_singular_sketches_give_finite_exact_results(test_vectors: str) -> None:
    # R with exact zeros on its diagonal: torch.linalg.inv raises and solve_triangular gives nan
    zero = xtrace(lambda v: 0 * v, 10, 8, generator=gen(0), test_vectors=test_vectors)
    assert zero.value == 0.0 and zero.stderr == 0.0
    # a coordinate-aligned rank-1 A: y_j = d omega_1j e_1, rows 2..n of Y exactly zero
    for seed in range(20):
        est = xtrace(lambda v: torch.cat([2.5 * v[:1], 0 * v[1:]]), 10, 8, generator=gen(seed),
                     test_vectors=test_vectors)
        assert est.value == pytest.approx(2.5, abs=1e-12) and est.stderr <= 1e-12


@pytest.mark.parametrize("test_vectors", VARIANTS)
@pytest.mark.parametrize("budget", [8, 20], ids=["s4", "s10"])
def test_unbiased_over_seeds(test_vectors: str, budget: int) -> None:
    # s = 10 leaves a complement of dimension n - s + 1 = 3: a wrong rescaling shows most there
    seeds = 300
    tr = float(A12.trace())
    values = torch.tensor([xtrace(Recording(A12), 12, budget, generator=gen(s), test_vectors=test_vectors).value
                           for s in range(seeds)])
    assert abs(float(values.mean()) - tr) <= K * float(values.std()) / math.sqrt(seeds)


def test_the_sphere_variant_is_exact_on_multiples_of_the_identity() -> None:
    # t_i = mu (s - 1) + (n - s + 1) mu w'^T w' / ||w'||^2 = mu n.  The Rademacher variant
    # instead keeps mu (s - 1 - omega_i^T Q_(i) Q_(i)^T omega_i): not exact.
    n, mu = 50, -2.5
    est = xtrace(lambda v: mu * v, n, 20, generator=gen(0))
    assert est.value == pytest.approx(mu * n, abs=1e-12 * n) and est.stderr <= 1e-12 * n
    rad = xtrace(lambda v: mu * v, n, 20, generator=gen(0), test_vectors="rademacher")
    assert abs(rad.value - mu * n) > 1e-3 and rad.stderr > 1e-3


def test_unbiased_when_the_rademacher_sketch_is_degenerate() -> None:
    # A = v v^T - 2 u u^T with v, u = (e_1 + e_2)/sqrt(2), (e_3 + e_4)/sqrt(2): v^T omega = 0
    # with probability 1/2, so Y is rank-deficient while some y_i is still needed to span it.
    # The closed form alone is biased here (-0.066 with sd 0.21 per estimate: -10 standard
    # errors at 1000 seeds), the rank-revealing form is not.
    n, seeds = 6, 1000
    v = torch.zeros(n, dtype=torch.float64)
    u = torch.zeros(n, dtype=torch.float64)
    v[:2] = u[2:4] = 2**-0.5
    a = torch.outer(v, v) - 2 * torch.outer(u, u)
    values = torch.tensor([xtrace(Recording(a), n, 8, generator=gen(s), test_vectors="rademacher").value
                           for s in range(seeds)])
    assert abs(float(values.mean()) - float(a.trace())) <= K * float(values.std()) / math.sqrt(seeds)


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_stderr_is_calibrated_over_seeds(test_vectors: str) -> None:
    # A flat indefinite spectrum (no deflation to exploit, n = 40 > 2 s): the reported stderr
    # should match the RMS error over seeds.  Measured: mean stderr / RMS error = 0.69
    # (sphere), 0.80 (Rademacher) (the t_i share their sketch, so std(t_i)/sqrt(s) is a
    # heuristic, somewhat optimistic).  Allowed: a factor 2 either way.  Sampling error of
    # the RMS at 200 seeds is about 5%.
    seeds, n = 200, 40
    a = known_spectrum(torch.linspace(-2.0, 3.0, n), seed=1)
    tr = float(a.trace())
    ests = [xtrace(Recording(a), n, 20, generator=gen(s), test_vectors=test_vectors) for s in range(seeds)]
    rms_error = math.sqrt(sum((e.value - tr) ** 2 for e in ests) / seeds)
    mean_stderr = sum(e.stderr for e in ests) / seeds
    assert 0.5 <= mean_stderr / rms_error <= 2.0, (mean_stderr, rms_error)


def test_beats_hutchinson_on_a_few_large_eigenvalues() -> None:
    # eigenvalues 100, 60, -80 and 57 more in [-1, 1]: Hutchinson's variance is dominated by
    # the three large ones; XTrace's leave-one-out sketches (9 columns each) remove them.
    # Measured over these 40 seeds at 20 matvecs: MSE 2188 (Hutchinson) vs 2.46 (XTrace,
    # default sphere test vectors; 3.25 with Rademacher ones), a ratio of 0.0011.  Asserted:
    # below 0.05.  The MSE of 40 estimates varies by ~30%, so the margin is large.
    n, budget, seeds = 60, 20, 40
    lam = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    lam[:3] = torch.tensor([100.0, 60.0, -80.0], dtype=torch.float64)
    a = known_spectrum(lam, seed=4)
    tr = float(lam.sum())
    mse_h = sum((hutchinson_trace(Recording(a), n, budget, generator=gen(s)).value - tr) ** 2
                for s in range(seeds)) / seeds
    mse_x = sum((xtrace(Recording(a), n, budget, generator=gen(s)).value - tr) ** 2 for s in range(seeds)) / seeds
    # Hutchinson's own MSE agrees with its theory 2 sum_{i != j} A_ij^2 / m (within 50%)
    theory_h = 2 * float((a * a).sum() - (a.diagonal() ** 2).sum()) / budget
    assert 0.5 * theory_h <= mse_h <= 1.5 * theory_h, (mse_h, theory_h)
    assert mse_x < 0.05 * mse_h, (mse_x, mse_h)


def test_flat_spectrum_sphere_beats_rademacher_and_stays_near_hutchinson() -> None:
    """A flat spectrum: a random rotation of diag(1 + 0.1 g), g standard Gaussian, n = 200,
    30 matvecs (s = 15), 300 seeds.  RMS errors (trace ~ 200) measured here: sphere XTrace
    0.51, Rademacher XTrace 1.93, Hutchinson (Rademacher) 0.40.

    Why.  Write A = mu I + E (mu = 1, ||E||_F ~ 1.5).  The sphere variant is exact on mu I,
    so only E contributes.  The Rademacher variant also carries
    mu (s - 1 - mean_i omega_i^T Q_(i) Q_(i)^T omega_i), a chi^2-like fluctuation of standard
    deviation about 2 mu sqrt((s - 1) / s) for n >> s (1.8 measured for A = I), which swamps
    E's part: sqrt(1.8^2 + 0.51^2) = 1.87, close to 1.93.  Hutchinson with Rademacher probes
    is exact on diagonal matrices, so it pays only for E too, with variance
    2 sum_{i != j} A_ij^2 / m (sd 0.39).  A flat spectrum offers nothing to deflate, and XTrace
    spends half its products on A Q: its s Hutchinson terms, each a rescaled sphere probe of
    variance about 2 ||E - mean(eig E) I||_F^2, would give sd sqrt(2 ||.||_F^2 / s) = 0.56 if
    independent, i.e. sqrt(2) times Hutchinson's; exchangeability recovers a little (0.51).

    Asserted, with the sampling error of an RMS over 300 seeds (about 4%) in mind:
    Rademacher XTrace > 3 x sphere XTrace (measured 3.8), and
    Hutchinson < sphere XTrace < 1.5 x Hutchinson (measured 1.29; the argument gives <= 1.41).
    """
    n, budget, seeds = 200, 30, 300
    lam = 1.0 + 0.1 * torch.randn(n, generator=gen(7), dtype=torch.float64)
    a = known_spectrum(lam, seed=8)
    tr = float(lam.sum())

    def rms(estimate: Callable[[int], Estimate]) -> float:
        return math.sqrt(sum((estimate(s).value - tr) ** 2 for s in range(seeds)) / seeds)

    sphere = rms(lambda s: xtrace(Recording(a), n, budget, generator=gen(s)))
    rad = rms(lambda s: xtrace(Recording(a), n, budget, generator=gen(s), test_vectors="rademacher"))
    hutch = rms(lambda s: hutchinson_trace(Recording(a), n, budget, generator=gen(s)))
    assert rad > 3.0 * sphere, (sphere, rad, hutch)
    assert hutch < sphere < 1.5 * hutch, (sphere, rad, hutch)


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_the_global_rng_is_untouched(test_vectors: str) -> None:
    state = torch.get_rng_state()
    xtrace(Recording(A12), 12, 8, generator=gen(0), test_vectors=test_vectors)
    xtrace(Recording(A12), 12, 8, test_vectors=test_vectors)  # a fresh OS-seeded generator, not the global one
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("test_vectors", VARIANTS)
def test_seeded_estimates_are_deterministic(test_vectors: str) -> None:
    def run() -> Estimate:
        return xtrace(Recording(A12), 12, 9, generator=gen(5), test_vectors=test_vectors)
    assert run() == run()


@pytest.mark.parametrize("test_vectors", VARIANTS)
@pytest.mark.parametrize(("budget", "spent"), [(4, 4), (9, 8), (24, 24)])
def test_matvecs_are_counted_honestly(budget: int, spent: int, test_vectors: str) -> None:
    rec = Recording(A12)
    # an odd budget is floored; 24 = 2n is allowed (sphere: a complement of dimension 1)
    est = xtrace(rec, 12, budget, generator=gen(0), test_vectors=test_vectors)
    assert est.num_matvecs == rec.calls == spent
    assert math.isfinite(est.value) and math.isfinite(est.stderr)


def test_float32_and_no_generator() -> None:
    lam = torch.zeros(30, dtype=torch.float64)
    lam[:3] = torch.tensor([2.0, -1.0, 3.0])
    a32 = known_spectrum(lam, seed=1).float()
    est = xtrace(lambda v: a32 @ v, 30, 16, dtype=torch.float32)  # rank 3 < s = 8: exact
    assert est.value == pytest.approx(4.0, abs=1e-4)
    assert isinstance(est, Estimate) and "±" in str(est)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: xtrace(Recording(A12), 12, 3, generator=gen(0)), ValueError,
         r"num_matvecs must be >= 4 \(2 sketch columns.*got num_matvecs=3"),
        (lambda: xtrace(Recording(A12), 12, 2.5, generator=gen(0)), TypeError, "num_matvecs must be an int"),
        (lambda: xtrace(Recording(A12), 12, 26, generator=gen(0)), ValueError,
         r"num_matvecs=26 exceeds 2n=24; use num_matvecs <= 24"),
        (lambda: xtrace(Recording(A12), 0, 4, generator=gen(0)), ValueError, "n must be a positive integer, got n=0"),
        (lambda: xtrace(Recording(A12), 1, 4, generator=gen(0)), ValueError, r"xtrace needs n >= 2 .*got n=1"),
        (lambda: xtrace(Recording(A12), 12.0, 4, generator=gen(0)), TypeError, "n must be an int"),
        (lambda: xtrace(Recording(A12), 12, 4, generator=gen(0), dtype=torch.float16), ValueError,
         "dtype must be torch.float32 or torch.float64"),
        (lambda: xtrace(Recording(A12), 12, 4, generator=1), TypeError, "generator must be a torch.Generator"),
        (lambda: xtrace(Recording(A12), 12, 4, generator=gen(0), test_vectors="gaussian"), ValueError,
         r"test_vectors must be one of 'sphere', 'rademacher', got test_vectors='gaussian'"),
        (lambda: xtrace(lambda v: v[:3], 12, 4, generator=gen(0)), ValueError, "matvec returned shape"),
        (lambda: xtrace(lambda v: v.tolist(), 12, 4, generator=gen(0)), TypeError,
         "matvec must return a torch.Tensor"),
        (lambda: xtrace(lambda v: v * float("nan"), 12, 4, generator=gen(0)), ValueError, "non-finite"),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
