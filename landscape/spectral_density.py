"""Hessian spectral density (docs/science.md section 5.2): stochastic Lanczos quadrature (SLQ).

The spectral density of a symmetric ``A`` [n, n] with eigenpairs ``(lambda_i, u_i)`` is
``phi(t) = (1/n) sum_i delta(t - lambda_i)``.  For a unit probe ``v = z / ||z||`` (``z``
Rademacher), ``v^T f(A) v = sum_i (u_i^T v)^2 f(lambda_i)`` and ``E[(u_i^T v)^2] = 1/n``,
so the spectral measure of ``v`` is an unbiased estimate of ``phi``.  ``m`` Lanczos
steps from ``v`` give ``T = S diag(theta) S^T``; the Gauss quadrature with nodes
``theta_j`` and weights ``tau_j = S[0, j]^2`` satisfies

    sum_j tau_j theta_j^k = e_1^T T^k e_1 = v^T A^k v      exactly for k <= 2m - 1

(Golub & Meurant, *Matrices, Moments and Quadrature*, 2010), and is exact for every k
after a breakdown.  Averaging the quadratures of independent probes is SLQ (Ubaru, Chen
& Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature", SIMAX 2017);
broadening each node by a Gaussian gives the smooth density used for neural-network
Hessians (Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via
Hessian eigenvalue density", ICML 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from analysis.estimate import Estimate, mean_estimate
from analysis.rng import resolve_generator
from landscape.lanczos import lanczos_tridiagonal
from landscape.matvec import Matvec, check_dtype, check_positive_int, check_start, random_vector

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["SpectralDensity", "plot_spectral_density", "spectral_density"]


@dataclass(frozen=True, eq=False)  # eq=False: tensor fields have no boolean ==
class SpectralDensity:
    """Per-probe Gauss quadratures of the spectral measure (float64, CPU).

    A probe whose Lanczos run broke down after ``m' < m`` steps has its last ``m - m'``
    columns padded with weight 0 (at its first node, so nodes stay in the spectrum).
    """

    nodes: Tensor  # [probes, m] Ritz values theta_j
    weights: Tensor  # [probes, m] tau_j = (first component of the j-th eigenvector of T)^2
    num_matvecs: int

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        """Gaussian-broadened density on ``grid`` [g]:

            phi_sigma(t) = (1/P) sum_p sum_j tau_pj N(t; theta_pj, sigma^2)      [g]

        which integrates to 1 over the real line (each probe's weights sum to 1).

        Raises:
            ValueError: ``sigma <= 0`` or a ``grid`` that is not 1-D.
        """
        if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite float, got sigma={sigma!r}")
        grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
        if grid.dim() != 1:
            raise ValueError(f"grid must be 1-D [g], got shape {tuple(grid.shape)}")
        diff = (grid[:, None, None] - self.nodes[None]) / sigma  # [g, P, m]
        kernel = torch.exp(-0.5 * diff**2) / (sigma * math.sqrt(2 * math.pi))
        return (kernel * self.weights[None]).sum(dim=2).mean(dim=1)  # [g]

    def probe_moments(self, k: int) -> Tensor:
        """``sum_j tau_pj theta_pj^k`` per probe [P] = ``v_p^T A^k v_p`` (exact for k <= 2m - 1).

        Raises:
            ValueError: ``k < 0``.
        """
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 0:
            raise ValueError(f"moment order k must be >= 0, got k={k}")
        return (self.weights * self.nodes**k).sum(dim=1)

    def moment(self, k: int) -> Estimate:
        """SLQ estimate of the normalized moment ``tr(A^k) / n`` with its standard error.

        The mean over probes of :meth:`probe_moments` (a Hutchinson estimate of
        ``tr(A^k)/n`` when ``k <= 2m - 1``, since ``v = z/sqrt(n)``); the stderr is
        ``std / sqrt(P)`` over probes (nan with a single probe).

        Raises:
            ValueError: ``k < 0``.
        """
        samples = self.probe_moments(k)
        if samples.numel() >= 2:
            return mean_estimate(samples, num_matvecs=self.num_matvecs)
        return Estimate(float(samples.mean()), math.nan, 1, self.num_matvecs)


def spectral_density(
    matvec: Matvec,
    n: int,
    *,
    num_probes: int = 10,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    probes: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    reorthogonalize: bool = True,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature of the spectral density of a symmetric ``A`` [n, n].

    For each probe ``p``: a Rademacher ``z_p`` [n], ``m`` Lanczos steps
    (:func:`~landscape.lanczos.lanczos_tridiagonal`, full reorthogonalization) from
    ``v_p = z_p / sqrt(n)``, and the eigendecomposition ``T_p = S diag(theta) S^T``;
    nodes ``theta`` [m], weights ``S[0, :]^2`` [m] (module docstring; Ubaru, Chen & Saad
    2017; Ghorbani, Krishnan & Xiao 2019).  Costs ``P m`` matvecs.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        num_probes: number ``P`` of probes (ignored when ``probes`` is given).
        num_steps: Lanczos steps ``m`` per probe, ``1 <= m <= n`` (default ``min(n, 30)``).
        generator: source of the probes (None: a fresh OS-seeded generator).
        probes: explicit start vectors [P, n] instead of random ones (normalized here).
        dtype, device: working precision (float32/float64) and device (default CPU).
        reorthogonalize: full reorthogonalization in each Lanczos run (without it,
            ghost copies of converged Ritz values distort the weights).

    Returns:
        :class:`SpectralDensity` with nodes and weights [P, m] (float64, CPU).

    Raises:
        ValueError: ``num_probes < 1``, ``num_steps`` outside ``[1, n]``, ``probes`` not
            [P, n] or with a zero row, or a misshapen/non-finite matvec output.
        TypeError: non-integer sizes; a non-generator ``generator``.

    Example::

        sd = spectral_density(lambda v: A @ v, n, num_probes=20, num_steps=10, generator=g)
        # sd.moment(1).value is within a few sd.moment(1).stderr of A.trace() / n
    """
    n = check_positive_int("n", n)
    check_dtype(dtype)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    num_steps = min(n, 30) if num_steps is None else check_positive_int("num_steps", num_steps, n)
    if probes is None:
        num_probes = check_positive_int("num_probes", num_probes)
        gen = resolve_generator(generator)
        starts = [random_vector(n, gen, dtype, dev) for _ in range(num_probes)]
    else:
        if not isinstance(probes, Tensor) or probes.dim() != 2 or probes.shape[1] != n:
            shape = tuple(probes.shape) if isinstance(probes, Tensor) else type(probes).__name__
            raise ValueError(f"probes must be a tensor [P, n={n}], got {shape}")
        starts = [check_start(row, n, dtype, dev) for row in probes]
    nodes = torch.zeros(len(starts), num_steps, dtype=torch.float64)
    weights = torch.zeros(len(starts), num_steps, dtype=torch.float64)
    total = 0
    for p, start in enumerate(starts):
        run = lanczos_tridiagonal(matvec, n, num_steps, start=start, reorthogonalize=reorthogonalize,
                                  keep_basis=False)
        total += run.num_matvecs
        tri = torch.diag(run.alpha) + torch.diag(run.beta, 1) + torch.diag(run.beta, -1)
        theta, vecs = torch.linalg.eigh(tri)  # [m'], [m', m']
        m = theta.numel()
        nodes[p, :m], nodes[p, m:] = theta, theta[0]  # padding: weight 0, node inside the spectrum
        weights[p, :m] = vecs[0] ** 2
    return SpectralDensity(nodes, weights, total)


def plot_spectral_density(
    density: SpectralDensity,
    ax: Axes | None = None,
    *,
    sigma: float | None = None,
    log: bool = True,
    label: str | None = None,
    num_points: int = 1000,
) -> Axes:
    """Draw ``density.density(grid, sigma)`` on ``ax`` (a new Agg-safe figure when None).

    The grid spans the nodes widened by ``5 sigma``; ``sigma`` defaults to 1% of the
    node range (``1e-3`` of ``max(1, |theta|)`` for a single point).  With ``log=True``
    the y-axis is logarithmic and points whose density underflows to 0 are left out
    (log scale cannot show them).  Never calls ``pyplot.show``.

    Args:
        density: the SLQ result.
        ax: axes to draw on; None creates a ``matplotlib.figure.Figure`` (no pyplot state).
        sigma: Gaussian broadening (> 0).
        log: logarithmic density axis (Ghorbani et al. 2019 plot on a log scale).
        label: legend label of the curve.
        num_points: grid size (>= 2).

    Returns:
        The axes, with x label "eigenvalue" and y label "density".

    Raises:
        ValueError: ``sigma <= 0`` or ``num_points < 2``.
    """
    num_points = check_positive_int("num_points", num_points, minimum=2)
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(1.0, abs(hi))
    if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite float, got sigma={sigma!r}")
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

        ax = Figure().add_subplot()
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, num_points, dtype=torch.float64)
    values = density.density(grid, sigma).numpy()
    if log:
        values = np.where(values > 0, values, np.nan)  # masked: log(0) is undefined
        ax.set_yscale("log")
    ax.plot(grid.numpy(), values, label=label)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if label is not None:
        ax.legend()
    return ax
