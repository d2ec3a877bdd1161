"""Hessian spectral density of the three trained models (docs/science.md section 5.2): "ZSL models
have a more irregular loss surface than traditional classifiers, and CN partially
remedies this", seen in the eigenvalues of the Hessian at the end of training.

For each trained model (:mod:`figures.landscape_models`: classifier, ZSL MLP without
and with CN, the first seed of ``ctx.seeds``), ``H = grad^2 L(theta*)`` [n, n] with ``L``
the mean cross-entropy (nats) over a class-stratified subset of the training samples (CN
layers normalize with the statistics of the seen classes, as in training).  Its spectral
density ``phi(t) = (1/n) sum_i delta(t - lambda_i)`` is estimated by stochastic Lanczos
quadrature (:func:`landscape.spectral_density.spectral_density`; Ubaru, Chen & Saad 2017):
``P`` Rademacher probes, ``m`` Lanczos steps each, Gauss nodes ``theta_pj`` with weights
``tau_pj`` (``sum_j tau_pj = 1``), broadened by a Gaussian of width ``sigma``:

    phi_sigma(t) = (1/P) sum_p sum_j tau_pj N(t; theta_pj, sigma^2),   integral = 1

with ``sigma = sigma_fraction x (lambda_max - lambda_min)``.  The extreme eigenvalues
``lambda_max`` and ``lambda_min`` (largest and smallest *algebraic*) are computed
separately by Lanczos to tolerance (:func:`landscape.lanczos.lanczos_top_eigenvalues`);
every SLQ node is a Ritz value, so it lies in ``[lambda_min, lambda_max]``.  Probes and
Lanczos start vectors come from ``Generator().manual_seed(seed + 3)``.

Cache ``data/spectral_density.json``: per model ``nodes`` and ``weights`` [P, m],
``grid`` and ``density`` [G] (``phi_sigma`` on the grid), ``sigma``, ``lambda_max``,
``lambda_min`` (with residuals and convergence), ``n`` (parameters), ``moment1`` (SLQ
estimate of ``tr(H)/n`` with its standard error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.io import write_json
from figures import landscape_models as shared
from figures.context import FigureContext, read_cache
from figures.style import add_caption, color, label, new_figure, save_figure
from landscape.hvp import HessianOperator
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Objective
from landscape.spectral_density import spectral_density

__all__ = ["FAST", "FULL", "NAME", "PAPER", "TITLE", "DensityBudget", "compute", "plot"]

NAME = "spectral_density"
TITLE = "Hessian spectral density (stochastic Lanczos quadrature) of the three trained models"
PAPER = "§5.2 Hessian spectrum"  # docs/science.md section 5.2
PROBE_SEED_OFFSET = 3  # SLQ probes and Lanczos starts from Generator().manual_seed(seed + 3)


@dataclass(frozen=True)
class DensityBudget:
    """SLQ and extreme-eigenvalue budget."""

    probes: int = 10  # SLQ probes P
    steps: int = 40  # Lanczos steps m per probe
    samples: int = 1024  # training samples the Hessian is averaged over
    lanczos_max_steps: int = 40  # per run, for lambda_max and lambda_min
    lanczos_tol: float = 1e-3
    sigma_fraction: float = 0.01  # Gaussian width / (lambda_max - lambda_min)
    grid_points: int = 800

    def __post_init__(self) -> None:
        for name in ("probes", "steps", "samples", "lanczos_max_steps", "grid_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DensityBudget.{name} must be a positive integer, got {value!r}")
        for name in ("lanczos_tol", "sigma_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"DensityBudget.{name} must be positive, got {value!r}")


FULL = DensityBudget()
FAST = DensityBudget(probes=3, steps=15, samples=512, lanczos_max_steps=15)


def compute(ctx: FigureContext) -> Path:
    """SLQ and extreme eigenvalues of each trained model's Hessian (first seed), cached.

    Returns:
        ``ctx.cache_path("spectral_density")``.
    """
    budget = ctx.budget(NAME, FULL, FAST)
    seed = ctx.seeds[0]
    run, batches, data, training = shared.final_models(ctx, budget.samples)
    models = {}
    for name, model in run.models.items():
        objective = Objective(model)
        n = objective.num_parameters
        hessian = HessianOperator(objective, batches, objective.params())
        generator = torch.Generator().manual_seed(seed + PROBE_SEED_OFFSET)
        density = spectral_density(hessian.matvec, n, num_probes=budget.probes, num_steps=min(budget.steps, n),
                                   generator=generator, dtype=objective.dtype, device=objective.device)
        extremes = {
            which: lanczos_top_eigenvalues(hessian.matvec, n, k=1, which=which, tol=budget.lanczos_tol,
                                           max_steps=min(budget.lanczos_max_steps, n), generator=generator,
                                           dtype=objective.dtype, device=objective.device)
            for which in ("largest", "smallest")
        }
        top, bottom = (float(extremes[w].eigenvalues[0]) for w in ("largest", "smallest"))
        lo, hi = min(bottom, float(density.nodes.min())), max(top, float(density.nodes.max()))
        sigma = budget.sigma_fraction * max(hi - lo, 1e-12)
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, budget.grid_points, dtype=torch.float64)
        moment = density.moment(1)
        models[name] = {
            "label": label(name), "n": n,
            "nodes": density.nodes.tolist(), "weights": density.weights.tolist(),
            "sigma": sigma, "grid": grid.tolist(), "density": density.density(grid, sigma).tolist(),
            "lambda_max": top, "lambda_min": bottom,
            "lambda_max_residual": float(extremes["largest"].residuals[0]),
            "lambda_min_residual": float(extremes["smallest"].residuals[0]),
            "lambda_max_converged": bool(extremes["largest"].converged),
            "lambda_min_converged": bool(extremes["smallest"].converged),
            "moment1": {"value": moment.value, "stderr": moment.stderr},
            "matvecs": density.num_matvecs + sum(int(e.num_matvecs) for e in extremes.values()),
        }
    payload = {
        "figure": NAME,
        "dataset": {"name": data.choice.name, "source": data.choice.source, "describe": data.describe()},
        "seed": seed,
        "samples": sum(b.size for b in batches),
        "models": models,
        "provenance": ctx.provenance([data.choice], training=asdict(training), figure=asdict(budget), seed=seed),
    }
    return write_json(ctx.cache_path(NAME), payload)


def plot(ctx: FigureContext) -> list[Path]:
    """One panel per model: the broadened SLQ density on a log axis against the
    eigenvalue, ``lambda_max`` (Lanczos) marked by a dashed line.

    Raises:
        FileNotFoundError: the cache is missing ("compute it first").
    """
    cache = read_cache(ctx, NAME)
    fig, axes = new_figure(1, len(cache["models"]), panel_width=3.2, panel_height=2.8)
    for ax, (name, m) in zip(axes[0], cache["models"].items()):
        grid, density = np.asarray(m["grid"]), np.asarray(m["density"], dtype=float)
        shown = np.where(density > density.max() * 1e-7, density, np.nan)  # log axis: drop the far tails
        ax.plot(grid, shown, color=color(name), linewidth=1.4, label="SLQ density (Gaussian-broadened)")
        ax.set_yscale("log")
        ax.set_ylim(density.max() * 1e-7, density.max() * 5)
        ax.axvline(m["lambda_max"], color="black", linestyle="--", linewidth=0.9, label="λ_max (Lanczos)")
        ax.annotate(f"λ_max = {m['lambda_max']:.3g}", xy=(m["lambda_max"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(-4, -4), textcoords="offset points", ha="right", va="top", fontsize=9)
        ax.set_title(label(name), color=color(name) if name != "classifier" else "0.25")
        ax.set_xlabel("Hessian eigenvalue λ (nats per unit θ²)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels))
    axes[0, 0].set_ylabel("spectral density φ(λ) (per unit λ)")
    first = next(iter(cache["models"].values()))
    settings = cache["provenance"]["settings"]
    epochs = settings["training"]["epochs"]
    add_caption(fig, f"{cache['dataset']['describe']}; {epochs} epoch{'s' if epochs != 1 else ''}, "
                     f"seed {cache['seed']}; "
                     f"Hessian of the loss on {cache['samples']} training samples;\nSLQ: "
                     f"{len(first['nodes'])} probes × {len(first['nodes'][0])} Lanczos steps, Gaussian "
                     f"σ = {settings['figure']['sigma_fraction']:g} × (λ_max − λ_min)")
    return save_figure(fig, ctx.out, NAME)
