"""Loss-surface smoothness along training (docs/science.md section 5): "ZSL models have a more
irregular loss surface than traditional classifiers, and CN partially remedies this".

Three models trained with the paper's recipe on the same data (the traditional
classifier, the ZSL MLP without CN and with CN; :mod:`figures.landscape_models`), probed
every ``probe_every`` steps on that step's mini-batch ``b`` at the parameters
``theta_t`` after the step, with ``L`` the batch's mean cross-entropy (nats; CN layers
normalize with the statistics of the seen classes, no weight-decay term):

    gradient norm     ||g_t||,  g_t = grad L(theta_t)
    top eigenvalue    lambda_max(grad^2 L(theta_t)), the largest algebraic eigenvalue
                      (Lanczos on exact Hessian-vector products, relative residual <= tol,
                      tol = 1e-2 in both budgets)
    effective beta    max_eta ||g_t - grad L(theta_t - eta g_t)|| / ||eta g_t||
                      (Santurkar et al. 2018), eta = lr x {0.5, 1, 2, 4, 8}

(:class:`landscape.comparison.TrajectoryProbe`).  Their units are nats per unit of
``theta`` (per unit squared for the eigenvalue and beta); parameters are dimensionless.  A smoother surface has a smaller gradient norm, top eigenvalue and
effective beta.  The full budget averages over ``ctx.seeds`` (mean line, min-max band);
``--fast`` uses the first seed, one epoch on a 4096-sample training subset.

Cache ``data/loss_surface.json``: ``steps`` [T], ``seeds`` [S], per model the series
``[S, T]`` of each quantity, their means over seeds ``[T]`` and a summary (median
gradient norm, max top eigenvalue, median effective beta over all probes and seeds).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from analysis.io import write_json
from figures import landscape_models as shared
from figures.context import FigureContext, read_cache
from figures.style import (add_caption, color, label, legend_outside, log_axis, new_figure, provenance_caption,
                           save_figure)
from landscape.comparison import TRAJECTORY_QUANTITIES

__all__ = ["FAST", "FULL", "NAME", "PAPER", "QUANTITIES", "TITLE", "SurfaceBudget", "compute", "plot"]

NAME = "loss_surface"
TITLE = "Gradient norm, top Hessian eigenvalue and effective beta along training"
PAPER = "§5.2-5.3 smoothness"  # docs/science.md sections 5.2 and 5.3

# cache key -> (panel title, y label): the plot of `cnzsl landscape`'s, the same units
QUANTITIES = TRAJECTORY_QUANTITIES


@dataclass(frozen=True)
class SurfaceBudget:
    """Seeds averaged over (the training budget is the shared one)."""

    max_seeds: int | None = None  # first max_seeds of ctx.seeds; None: all of them

    def __post_init__(self) -> None:
        if self.max_seeds is not None and (isinstance(self.max_seeds, bool) or not isinstance(self.max_seeds, int)
                                           or self.max_seeds < 1):
            raise ValueError(f"SurfaceBudget.max_seeds must be a positive integer or None, got {self.max_seeds!r}")


FULL = SurfaceBudget()
FAST = SurfaceBudget(max_seeds=1)


def compute(ctx: FigureContext) -> Path:
    """Train (or reuse) the three models for each seed and cache their trajectories.

    Returns:
        ``ctx.cache_path("loss_surface")``.
    """
    budget = ctx.budget(NAME, FULL, FAST)
    training = shared.training_budget(ctx)
    data = shared.landscape_data(ctx, training)
    seeds = ctx.seeds if budget.max_seeds is None else ctx.seeds[:budget.max_seeds]
    runs = [shared.trained_models(ctx, seed, budget=training, data=data) for seed in seeds]
    steps = [r["step"] for r in runs[0].trajectories["classifier"]]
    models: dict[str, Any] = {}
    for name in shared.MODELS:
        for run in runs:  # the probe schedule depends only on the budget and data size
            if [r["step"] for r in run.trajectories[name]] != steps:
                raise RuntimeError(f"seed {run.seed}, {name}: probed steps differ from {steps}")
        series = {key: [[r[key] for r in run.trajectories[name]] for run in runs]
                  for key in (*QUANTITIES, "loss", "lanczos_converged")}
        models[name] = {
            "label": label(name),
            "landscape_kind": shared.LANDSCAPE_KIND[name],
            **series,
            "mean": {key: np.mean(np.asarray(series[key], dtype=float), axis=0).tolist() for key in QUANTITIES},
            "summary": _summary(series),
            "final_train_loss": [run.histories[name]["loss"][-1] for run in runs],
        }
    payload = {
        "figure": NAME,
        "dataset": {"name": data.choice.name, "source": data.choice.source, "describe": data.describe(),
                    "train_samples": data.train_samples, "trainval_total": data.trainval_total},
        "steps": steps,
        "seeds": list(seeds),
        "steps_per_epoch": runs[0].histories["classifier"]["steps"] // training.epochs,
        "etas": runs[0].histories["classifier"]["etas"],
        "models": models,
        "provenance": ctx.provenance([data.choice], training=asdict(training), figure=asdict(budget),
                                     seeds_used=list(seeds)),
    }
    return write_json(ctx.cache_path(NAME), payload)


def _summary(series: dict[str, list[list[float]]]) -> dict[str, float]:
    flat = {key: [x for row in series[key] for x in row] for key in QUANTITIES}
    betas = [b for b in flat["effective_beta"] if math.isfinite(b)]
    return {
        "median_gradient_norm": statistics.median(flat["gradient_norm"]),
        "max_top_eigenvalue": max(flat["top_eigenvalue"]),
        "median_effective_beta": statistics.median(betas) if betas else math.nan,
        "probes": len(flat["gradient_norm"]),
        "lanczos_converged_fraction": float(np.mean([c for row in series["lanczos_converged"] for c in row])),
    }


def plot(ctx: FigureContext) -> list[Path]:
    """Three panels (gradient norm, top eigenvalue, effective beta) against the training
    step, one line per model (mean over seeds, min-max band); a log axis where a panel's
    values span more than a decade.

    Raises:
        FileNotFoundError: the cache is missing ("compute it first").
    """
    cache = read_cache(ctx, NAME)
    steps = np.asarray(cache["steps"], dtype=float)
    fig, axes = new_figure(1, len(QUANTITIES), panel_width=3.3, panel_height=2.9)
    for ax, (key, (title, ylabel)) in zip(axes[0], QUANTITIES.items()):
        values = []
        for name, model in cache["models"].items():
            per_seed = np.asarray(model[key], dtype=float)  # [S, T]
            mean = np.asarray(model["mean"][key], dtype=float)
            ax.plot(steps, mean, marker="o", markersize=3, color=color(name), label=model["label"])
            if per_seed.shape[0] > 1:
                ax.fill_between(steps, np.nanmin(per_seed, axis=0), np.nanmax(per_seed, axis=0),
                                color=color(name), alpha=0.2, linewidth=0)
            values.append(per_seed.ravel())
        finite = np.concatenate(values)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size and finite.max() / finite.min() > 10:
            log_axis(ax, finite.min(), finite.max())
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.set(title=title, xlabel="training step (batches of 256)", ylabel=ylabel)
    legend_outside(fig, axes[0, 0])
    seeds = cache["seeds"]
    settings = cache["provenance"]["settings"]["training"]
    epochs = f"{settings['epochs']} epoch{'s' if settings['epochs'] != 1 else ''}"
    band = f"mean over seeds {', '.join(map(str, seeds))} (band: min-max)" if len(seeds) > 1 else f"seed {seeds[0]}"
    add_caption(fig, provenance_caption(
        cache["dataset"]["describe"], f"{epochs}, {band}",
        f"probes every {settings['probe_every']} steps on the step's batch: Lanczos ≤ "
        f"{settings['lanczos_max_steps']} steps (tol {settings['lanczos_tol']:g}), β over η = lr × "
        f"{{{', '.join(f'{m:g}' for m in settings['eta_multipliers'])}}}",
        commit=cache["provenance"]["environment"].get("git_commit")))
    return save_figure(fig, ctx.out, NAME)

