"""Stochastic Lanczos quadrature (landscape/spectral_density.py): quadrature structure,
Gauss exactness for degree <= 2m - 1, moments, the broadened density and its plot."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # STYLE.md: figures use the Agg backend

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape.lanczos import lanczos_tridiagonal
from landscape.spectral_density import SpectralDensity, plot_spectral_density, spectral_density
from tests.landscape_cases import gen, known_spectrum

K = 4.0  # standard errors allowed


LAM = torch.cat([torch.linspace(-1.0, 2.0, 37, dtype=torch.float64), torch.tensor([6.0, 8.0, 9.5])])
A = known_spectrum(LAM, seed=2)
N = LAM.numel()


def rademacher(p: int, n: int, seed: int) -> torch.Tensor:
    return (2 * torch.randint(0, 2, (p, n), generator=gen(seed)) - 1).double()


@given(seed=st.integers(0, 2**32 - 1), probes=st.integers(1, 4), steps=st.integers(1, 12))
def test_quadrature_structure(seed: int, probes: int, steps: int) -> None:
    sd = spectral_density(lambda v: A @ v, N, num_probes=probes, num_steps=steps, generator=gen(seed))
    assert sd.nodes.shape == sd.weights.shape == (probes, steps)
    assert sd.num_matvecs == probes * steps
    torch.testing.assert_close(sd.weights.sum(dim=1), torch.ones(probes, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (sd.weights >= 0).all()
    slack = 1e-10 * float(LAM.abs().max())  # Ritz values interlace: inside [lambda_min, lambda_max]
    assert (sd.nodes >= LAM.min() - slack).all() and (sd.nodes <= LAM.max() + slack).all()


@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 5))
def test_gauss_quadrature_is_exact_up_to_degree_2m_minus_1(seed: int, steps: int) -> None:
    z = rademacher(3, N, seed)
    sd = spectral_density(lambda v: A @ v, N, num_steps=steps, probes=z)
    v = z / z.norm(dim=1, keepdim=True)  # [3, n]
    power = v.clone()  # rows A^k v
    for k in range(2 * steps + 1):
        exact = (v * power).sum(dim=1)  # v^T A^k v
        quad = sd.probe_moments(k)
        scale = float(LAM.abs().max()) ** k
        if k <= 2 * steps - 1:
            torch.testing.assert_close(quad, exact, rtol=0, atol=1e-10 * scale)
        else:  # degree 2m: A^m v = Q^T T^m e_1 + (beta_1 ... beta_m) q_{m+1}, so the rule
            # misses exactly ||(beta_1 ... beta_m) q_{m+1}||^2 (the bound is tight)
            for p in range(3):
                run = lanczos_tridiagonal(lambda u: A @ u, N, steps, start=z[p])
                missed = float(run.beta.pow(2).prod()) * run.residual_norm**2
                assert float(exact[p] - quad[p]) == pytest.approx(missed, rel=1e-6, abs=1e-10 * scale)
        power = power @ A  # A symmetric: (A^k v)^T A = (A^{k+1} v)^T


def test_moments_estimate_normalized_traces() -> None:
    sd = spectral_density(lambda v: A @ v, N, num_probes=40, num_steps=8, generator=gen(0))
    for k in (1, 2, 3):
        est = sd.moment(k)
        exact = float((LAM**k).mean())  # tr(A^k) / n
        assert abs(est.value - exact) <= K * est.stderr, (k, est, exact)
    assert sd.moment(0).value == pytest.approx(1.0, abs=1e-12)
    single = spectral_density(lambda v: A @ v, N, num_probes=1, num_steps=3, generator=gen(0))
    assert math.isnan(single.moment(1).stderr)


def test_breakdown_pads_with_zero_weights_and_is_exact() -> None:
    lam = torch.tensor([3.0, -1.0] + [0.0] * 18, dtype=torch.float64)  # 3 distinct eigenvalues
    a = known_spectrum(lam, seed=5)
    sd = spectral_density(lambda v: a @ v, 20, num_probes=3, num_steps=8, generator=gen(1))
    assert sd.num_matvecs == 3 * 3  # each probe breaks down after 3 steps
    assert torch.isfinite(sd.nodes).all() and torch.isfinite(sd.weights).all()
    assert (sd.weights[:, 3:] == 0).all()
    torch.testing.assert_close(sd.weights.sum(dim=1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(sd.nodes[:, :3], torch.tensor([[-1.0, 0.0, 3.0]] * 3, dtype=torch.float64),
                               rtol=0, atol=1e-10)
    # an invariant Krylov space: the quadrature is exact for every degree
    z = rademacher(3, 20, 7)
    exact_sd = spectral_density(lambda v: a @ v, 20, num_steps=8, probes=z)
    v = z / z.norm(dim=1, keepdim=True)
    for k in (5, 9, 16):
        torch.testing.assert_close(exact_sd.probe_moments(k), (v @ torch.linalg.matrix_power(a, k) * v).sum(dim=1),
                                   rtol=1e-10, atol=1e-12)


def test_density_integrates_to_one() -> None:
    sd = spectral_density(lambda v: A @ v, N, num_probes=5, num_steps=10, generator=gen(3))
    for sigma in (0.05, 0.3):
        grid = torch.linspace(float(LAM.min()) - 10 * sigma, float(LAM.max()) + 10 * sigma, 20_001, dtype=torch.float64)
        dens = sd.density(grid, sigma)
        assert dens.shape == grid.shape and (dens >= 0).all()
        # mass beyond 10 sigma ~ 1e-23; trapezoid error for h = sigma / 50 is far below 1e-8
        assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-8)


def test_float32_operator() -> None:
    a32 = A.float()
    sd = spectral_density(lambda v: a32 @ v, N, num_probes=2, num_steps=6, generator=gen(0), dtype=torch.float32)
    assert sd.nodes.dtype == torch.float64
    torch.testing.assert_close(sd.weights.sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-5)


def test_seeded_runs_are_deterministic() -> None:
    s1 = spectral_density(lambda v: A @ v, N, num_probes=2, num_steps=5, generator=gen(9))
    s2 = spectral_density(lambda v: A @ v, N, num_probes=2, num_steps=5, generator=gen(9))
    assert torch.equal(s1.nodes, s2.nodes) and torch.equal(s1.weights, s2.weights)
    default = spectral_density(lambda v: A @ v, N, num_probes=1)  # fresh OS seed, m = min(n, 30)
    assert default.nodes.shape == (1, 30)


@pytest.mark.parametrize("log", [True, False])
def test_plot_helper_labels_axes(log: bool) -> None:
    sd = spectral_density(lambda v: A @ v, N, num_probes=3, num_steps=10, generator=gen(0))
    ax = plot_spectral_density(sd, log=log, label="A")
    assert isinstance(ax, Axes)
    assert ax.get_xlabel() == "eigenvalue" and ax.get_ylabel() == "density"
    assert ax.get_yscale() == ("log" if log else "linear")
    assert ax.get_legend() is not None and len(ax.get_lines()) == 1
    ax.figure.canvas.draw()  # renders with Agg without warnings (filterwarnings = error)


def test_plot_helper_draws_on_given_axes_and_single_node() -> None:
    ax = Figure().add_subplot()
    point = SpectralDensity(torch.full((1, 2), 2.0, dtype=torch.float64),
                            torch.tensor([[1.0, 0.0]], dtype=torch.float64), 2)
    out = plot_spectral_density(point, ax, sigma=0.1)
    assert out is ax and ax.get_legend() is None
    ax.figure.canvas.draw()
    plot_spectral_density(point, ax)  # default sigma for a zero-width spectrum


SD = SpectralDensity(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[0.5, 0.5]], dtype=torch.float64), 2)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: spectral_density(lambda v: A @ v, N, num_probes=0, generator=gen(0)), ValueError,
         "num_probes must be a positive integer, got num_probes=0"),
        (lambda: spectral_density(lambda v: A @ v, N, num_steps=N + 1, generator=gen(0)), ValueError,
         f"num_steps={N + 1} exceeds n={N}"),
        (lambda: spectral_density(lambda v: A @ v, N, num_steps=0, generator=gen(0)), ValueError,
         "num_steps must be a positive integer"),
        (lambda: spectral_density(lambda v: A @ v, N, probes=torch.ones(2, 3)), ValueError,
         r"probes must be a tensor \[P, n=40\], got \(2, 3\)"),
        (lambda: spectral_density(lambda v: A @ v, N, probes=torch.zeros(2, N)), ValueError, "start vector is zero"),
        (lambda: spectral_density(lambda v: A @ v, N, generator=gen(0), dtype=torch.int32), ValueError,
         "dtype must be torch.float32 or torch.float64"),
        (lambda: SD.density(torch.zeros(3), 0.0), ValueError, "sigma must be a positive finite float, got sigma=0.0"),
        (lambda: SD.density(torch.zeros(3, 2), 1.0), ValueError, r"grid must be 1-D \[g\], got shape \(3, 2\)"),
        (lambda: SD.moment(-1), ValueError, "moment order k must be >= 0, got k=-1"),
        (lambda: SD.moment(1.5), TypeError, "k must be an int"),
        (lambda: plot_spectral_density(SD, sigma=-1.0), ValueError, "sigma must be a positive finite float"),
        (lambda: plot_spectral_density(SD, num_points=1), ValueError, "num_points must be >= 2, got num_points=1"),
    ],
)
def test_bad_input_is_refused(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
