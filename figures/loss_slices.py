"""2-D loss slices of the three trained models (docs/science.md section 5.4): "ZSL models have a
more irregular loss surface than traditional classifiers, and CN partially remedies this",
seen through the plots of Li et al. (2018).

For each trained model (:mod:`figures.landscape_models`: classifier, ZSL MLP without
and with CN, the first seed of ``ctx.seeds``), at its final parameters ``theta*``:

    f(alpha, beta) = L(theta* + alpha d1 + beta d2)

with ``L`` the mean cross-entropy (nats) over a class-stratified subset of the training
samples (CN layers normalize with the statistics of the seen classes, as in training)
and ``d1, d2`` two Gaussian directions rescaled filter by filter (each weight row ``i``
gets ``||d_i|| = ||theta*_i||``; biases get 0), drawn from
``Generator().manual_seed(seed + 2)`` (:func:`landscape.slices.filter_normalized_direction`).
``alpha = 1`` moves every filter by its own norm, so the coordinates are dimensionless and
comparable across models.  Each point is evaluated from ``theta*``
(:func:`landscape.slices.loss_slice_2d`); the grid is symmetric with 0 on it, so
``f(0, 0) = L(theta*)`` exactly.

Cache ``data/loss_slices.json``: ``alphas`` [A], ``betas`` [B] and, per model,
``losses`` [A, B] (``losses[i][j]`` at ``(alphas[i], betas[j])``) and ``origin_loss``.
The figure draws ``f`` on one logarithmic colour scale shared by the three panels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from analysis.io import write_json
from figures import landscape_models as shared
from figures.context import FigureContext, read_cache
from figures.style import add_caption, label, new_figure, provenance_caption, save_figure, text_color
from landscape.objective import Objective
from landscape.slices import Slice2D, filter_normalized_direction, loss_slice_2d, plot_slice_panels

__all__ = ["FAST", "FULL", "NAME", "PAPER", "TITLE", "SliceBudget", "compute", "plot", "slice_grid"]

NAME = "loss_slices"
TITLE = "2-D loss slices along filter-normalized directions of the three trained models"
PAPER = "§5.4 loss slices"  # docs/science.md section 5.4
DIRECTION_SEED_OFFSET = 2  # directions from Generator().manual_seed(seed + 2)


@dataclass(frozen=True)
class SliceBudget:
    """Grid and data of the slices."""

    points: int = 21  # grid points per axis (odd: 0 is on the grid)
    range: float = 1.0  # alpha, beta in [-range, range]
    samples: int = 2048  # training samples the loss is averaged over

    def __post_init__(self) -> None:
        if isinstance(self.points, bool) or not isinstance(self.points, int) or self.points < 3 or self.points % 2 == 0:
            raise ValueError(f"SliceBudget.points must be an odd integer >= 3 (so that 0 is on the grid), "
                             f"got {self.points!r}")
        if not (isinstance(self.range, (int, float)) and self.range > 0):
            raise ValueError(f"SliceBudget.range must be positive, got {self.range!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"SliceBudget.samples must be a positive integer, got {self.samples!r}")


FULL = SliceBudget()
FAST = SliceBudget(points=11, samples=512)


def slice_grid(points: int, half_range: float) -> torch.Tensor:
    """``[points]`` float64 coordinates ``k * half_range / h``, ``k = -h..h``, ``h = (points - 1) / 2``:
    symmetric, with exactly 0 in the middle."""
    h = (points - 1) // 2
    return torch.arange(-h, h + 1, dtype=torch.float64) * (half_range / h)


def compute(ctx: FigureContext) -> Path:
    """Slice each trained model (first seed) and cache the grids.

    Returns:
        ``ctx.cache_path("loss_slices")``.
    """
    budget = ctx.budget(NAME, FULL, FAST)
    seed = ctx.seeds[0]
    run, batches, data, training = shared.final_models(ctx, budget.samples)
    grid = slice_grid(budget.points, budget.range)
    models = {}
    for name, model in run.models.items():
        objective = Objective(model)
        directions = torch.Generator().manual_seed(seed + DIRECTION_SEED_OFFSET)
        d1 = filter_normalized_direction(objective, generator=directions)
        d2 = filter_normalized_direction(objective, generator=directions)
        result = loss_slice_2d(objective, batches, d1, d2, grid, grid)
        losses = result.losses.double()
        center = budget.points // 2
        models[name] = {"label": label(name), "losses": losses.tolist(),
                        "origin_loss": float(losses[center, center]),
                        "min_loss": float(losses.min()), "max_loss": float(losses.max())}
    payload = {
        "figure": NAME,
        "dataset": {"name": data.choice.name, "source": data.choice.source, "describe": data.describe()},
        "seed": seed,
        "samples": sum(b.size for b in batches),
        "alphas": grid.tolist(), "betas": grid.tolist(),
        "models": models,
        "provenance": ctx.provenance([data.choice], training=asdict(training), figure=asdict(budget), seed=seed),
    }
    return write_json(ctx.cache_path(NAME), payload)


def plot(ctx: FigureContext) -> list[Path]:
    """One filled-contour panel of ``f(alpha, beta)`` per model on one logarithmic colour
    scale shared by the panels (:func:`landscape.slices.plot_slice_panels`), one colour bar
    labelled in nats (a few round ticks), the origin ``theta*`` starred.

    Raises:
        FileNotFoundError: the cache is missing ("compute it first").
    """
    cache = read_cache(ctx, NAME)
    alphas, betas = torch.tensor(cache["alphas"]), torch.tensor(cache["betas"])
    names = list(cache["models"])
    fig, axes = new_figure(1, len(names), panel_width=2.9, panel_height=2.9)
    plot_slice_panels(
        [Slice2D(alphas, betas, torch.tensor(cache["models"][name]["losses"], dtype=torch.float64)) for name in names],
        axes[0],
        titles=[f"{label(name)}\nL(θ*) = {cache['models'][name]['origin_loss']:.3g} nats" for name in names],
        title_colors=[text_color(name) for name in names],
    )
    settings = cache["provenance"]["settings"]
    add_caption(fig, provenance_caption(
        cache["dataset"]["describe"], f"{_epochs(settings)}, seed {cache['seed']}",
        f"loss on {cache['samples']} training samples, {len(alphas)}×{len(betas)} grid, "
        f"filter-normalized directions (Li et al. 2018); ★ = θ*",
        commit=cache["provenance"]["environment"].get("git_commit")))
    return save_figure(fig, ctx.out, NAME)


def _epochs(settings: dict) -> str:
    epochs = settings["training"]["epochs"]
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"
