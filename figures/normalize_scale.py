"""V1 (docs/science.md section 4.1, the authors' appendix): the spread of normalize+scale logits.

What it shows.  (a) The standard deviation of the cosine between two independent random
vectors against their dimension ``d`` = 32..8192: the paper's prediction, the exact value and
Monte Carlo estimates with standard errors, on log-log axes, and the ratio of the estimates
to the exact value (where the paper's approximation visibly departs at small ``d``).
(b) Per data set, the standard deviation of the cosine ``cos(z_b, p_c)`` within one training
step (a batch of images ``z_b`` against the seen-class prototypes ``p_c`` of the reference
CN model at a fresh initialization), one value per batch, as box plots over batches, with
the prediction as a line; and the same for pairs of images of the batch.

The claim (:mod:`variance.normalize_scale`).  For ``z, p in R^d`` with i.i.d. zero-mean
symmetric coordinates, the NS logit ``y = gamma^2 cos(z, p)`` has

    std[cos] = sqrt(d) / (d - 2)   (paper's approximation),     std[cos] = 1 / sqrt(d)   (exact)

so ``std[y] = gamma^2 std[cos]``, about 0.55 for ``gamma = 5`` and ``d_z = 2048``.  The Monte
Carlo points are :func:`variance.normalize_scale.estimate_cosine_variance` (mean of
``cos^2`` over ``num_pairs`` pairs, with its standard error); the standard deviation and its
standard error are ``sqrt(v)`` and ``se(v) / (2 sqrt(v))`` (delta method).

Data for (b): every data set of ``ctx.datasets()``.  Image features are those
``ctx.load`` gives: synthetic for the synthetic presets and for real attributes without
``res101.mat`` (the caption and the JSON say which).  Features of pooled ResNets, real or
synthetic, are non-negative and far from isotropic, and so are the prototypes after the
model's output ReLU: their cosines have a large positive mean and a spread that departs from
the isotropic prediction; this panel measures by how much.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns
import torch
from torch import Tensor

from analysis.io import write_json
from analysis.model import preset_config
from analysis.normalization import normalize_attributes, normalize_scale_logits
from figures.context import FigureContext, read_cache
from figures.style import add_caption, color, new_figure, save_figure
from variance.batched_embedder import batched_embedder_forward, iter_draws
from analysis.estimate import Estimate, mean_estimate
from variance.normalize_scale import (
    COSINE_DISTRIBUTIONS,
    estimate_cosine_variance,
    exact_isotropic_cosine_variance,
    predicted_cosine_variance,
)

__all__ = ["NAME", "PAPER", "TITLE", "Budget", "budget", "compute", "cosine_std", "plot"]

NAME = "normalize_scale"
TITLE = "Normalize+scale: predicted and Monte Carlo std of the cosine against d, and per data set"
PAPER = "Appendix (V1, §4.1)"  # docs/science.md section 4.1

GAMMA = 5.0  # NS scale of the reference recipe: logits = 25 cos
ATTRIBUTE_NORM = "l2_sqrt"


@dataclass(frozen=True)
class Budget:
    """Monte Carlo sizes (full values; see :data:`FAST`)."""

    dims: tuple[int, ...] = tuple(2**k for k in range(5, 14))  # d = 32 .. 8192
    num_pairs: int = 20_000  # random pairs per d and law
    distributions: tuple[str, ...] = COSINE_DISTRIBUTIONS  # coordinate laws (all symmetric)
    num_batches: int = 50  # training-step situations per data set (a fresh init and batch each)
    batch_size: int = 256  # images per batch (the recipe's)
    width: int = 1024  # hidden width of the reference CN model whose prototypes are used


FAST = Budget(dims=(32, 128, 512, 2048, 8192), num_pairs=2_000, distributions=("gaussian",), num_batches=8,
              batch_size=64, width=256)


def budget(ctx: FigureContext) -> Budget:
    """The full or fast budget, with the entries of ``ctx.extra[NAME]`` replaced.

    Raises:
        ValueError: an unknown entry or law, a dimension below 3, fewer than 2 pairs,
            batches or images, or a width below 1.
    """
    out = ctx.budget(NAME, Budget(), FAST)
    out = replace(out, dims=tuple(out.dims), distributions=tuple(out.distributions))
    if not out.dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 3 for d in out.dims):
        raise ValueError(f"{NAME} dims must be integers >= 3 (the paper's d/(d-2)^2 needs d > 2), got {out.dims}")
    bad = [d for d in out.distributions if d not in COSINE_DISTRIBUTIONS]
    if bad or not out.distributions:
        raise ValueError(f"{NAME} distributions must be among {COSINE_DISTRIBUTIONS}, got {out.distributions}")
    if min(out.num_pairs, out.num_batches, out.batch_size) < 2 or out.width < 1:
        raise ValueError(f"{NAME} needs num_pairs, num_batches, batch_size >= 2 and width >= 1, got "
                         f"{out.num_pairs}, {out.num_batches}, {out.batch_size}, {out.width}")
    return out


def cosine_std(variance: Estimate) -> dict[str, float]:
    """``std = sqrt(v)`` and its delta-method standard error ``se(v) / (2 sqrt(v))``."""
    std = math.sqrt(max(variance.value, 0.0))
    return {"value": std, "stderr": variance.stderr / (2.0 * std) if std > 0 else math.inf}


def _against_dimension(b: Budget, generator: torch.Generator) -> dict[str, Any]:
    """Part (a): predicted and Monte Carlo std of cos(z, p) for each d of the budget."""
    out: dict[str, Any] = {
        "dims": list(b.dims),
        "exact_std": [math.sqrt(exact_isotropic_cosine_variance(d)) for d in b.dims],  # 1/sqrt(d)
        "paper_std": [math.sqrt(predicted_cosine_variance(d)) for d in b.dims],  # sqrt(d)/(d-2)
        "monte_carlo": {},
    }
    for law in b.distributions:
        variances = [estimate_cosine_variance(d, b.num_pairs, distribution=law, generator=generator)
                     for d in b.dims]
        out["monte_carlo"][law] = {
            "variance": {"value": [v.value for v in variances], "stderr": [v.stderr for v in variances]},
            "std": {k: [cosine_std(v)[k] for v in variances] for k in ("value", "stderr")},
        }
    return out


def _cosine_spread(stats: list[tuple[float, float]]) -> dict[str, Any]:
    """Per-batch (mean, variance) of cosines -> per-batch std and the pooled variance ± s.e."""
    mean = torch.tensor([m for m, _ in stats], dtype=torch.float64)
    var = torch.tensor([v for _, v in stats], dtype=torch.float64)
    pooled = mean_estimate(var)  # mean over batches of the within-batch variance, se over batches
    return {"std_per_batch": var.sqrt().tolist(), "mean_per_batch": mean.tolist(),
            "variance": {"value": pooled.value, "stderr": pooled.stderr}, "std": cosine_std(pooled)}


def _moments(cos: Tensor) -> tuple[float, float]:
    c = cos.double().flatten()
    return float(c.mean()), float(c.var(correction=0))


@torch.no_grad()
def _per_dataset(data: Any, b: Budget, generator: torch.Generator) -> dict[str, Any]:
    """Part (b): std of cos(z_b, p_c) and of cos(z_b, z_b') within each of ``num_batches`` steps."""
    attributes = normalize_attributes(data.attributes, ATTRIBUTE_NORM)[data.seen_classes]  # [K_s, d_a]
    config = preset_config("cn", data.attribute_dim, data.feature_dim, hidden_dims=(b.width, b.width))
    batch = min(b.batch_size, data.trainval.numel())
    off_diagonal = ~torch.eye(batch, dtype=torch.bool)
    to_prototypes, between_images = [], []
    for draw in iter_draws(config, b.num_batches, chunk=8, generator=generator):
        prototypes = batched_embedder_forward(draw, attributes).prototypes  # [S, K, d_z], before V's ReLU
        if config.output_relu:
            prototypes = prototypes.relu()  # the model's output ReLU: what the NS head sees
        for p in prototypes:
            rows = data.trainval[torch.randperm(data.trainval.numel(), generator=generator)[:batch]]
            z = data.features[rows]  # [B, d_z]
            to_prototypes.append(_moments(normalize_scale_logits(z, p, 1.0)))  # [B, K] cosines
            between_images.append(_moments(normalize_scale_logits(z, z, 1.0)[off_diagonal]))  # B(B-1)
    d = data.feature_dim
    return {
        "feature_dim": d, "num_classes": int(attributes.shape[0]), "batch_size": batch,
        "exact_std": math.sqrt(exact_isotropic_cosine_variance(d)),
        "paper_std": math.sqrt(predicted_cosine_variance(d)),
        "images_vs_prototypes": _cosine_spread(to_prototypes),
        "images_vs_images": _cosine_spread(between_images),
    }


def compute(ctx: FigureContext) -> Path:
    """Measure (a) and (b) (module docstring) and write ``ctx.cache_path(NAME)``."""
    b = budget(ctx)
    choices = ctx.datasets()
    payload: dict[str, Any] = {
        "gamma": GAMMA,
        "against_dimension": _against_dimension(b, torch.Generator().manual_seed(ctx.seeds[0])),
        "datasets": {},
    }
    for index, choice in enumerate(choices):
        data = ctx.load(choice)
        g = torch.Generator().manual_seed(1_000 * ctx.seeds[0] + index + 1)
        payload["datasets"][choice.name] = {"source": choice.source, "features": data.source,
                                            **_per_dataset(data, b, g)}
        if ctx.progress:
            print(f"  [{NAME}] {choice.name} done")
    payload["provenance"] = ctx.provenance(choices, **asdict(b), gamma=GAMMA, attribute_norm=ATTRIBUTE_NORM,
                                           prototypes="preset cn (biases, output ReLU) at init")
    return write_json(ctx.cache_path(NAME), payload)


# --------------------------------------------------------------------------- drawing

_LAW_MARKERS = {"gaussian": "o", "rademacher": "s", "uniform": "^"}
# coordinate laws are not models: colours outside the ones figures.style reserves for models
_LAW_COLORS = dict(zip(COSINE_DISTRIBUTIONS, [sns.color_palette("colorblind")[i] for i in (9, 8, 5)]))


def _dimension_panels(ax_std: Any, ax_ratio: Any, part: dict[str, Any]) -> None:
    dims = np.asarray(part["dims"], dtype=float)
    exact, paper = np.asarray(part["exact_std"]), np.asarray(part["paper_std"])
    ax_std.plot(dims, paper, color="black", lw=1.2, label=r"paper $\sqrt{d}/(d-2)$")
    ax_std.plot(dims, exact, color="0.5", lw=1.2, linestyle="--", label=r"exact $1/\sqrt{d}$")
    ax_ratio.plot(dims, paper / exact, color="black", lw=1.2, label=r"paper $d/(d-2)$")
    ax_ratio.axhline(1.0, color="0.5", lw=1.2, linestyle="--", label="exact")
    shift = {law: 1.0 + 0.04 * (i - 1) for i, law in enumerate(part["monte_carlo"])}  # no overlap of bars
    for law, mc in part["monte_carlo"].items():
        v, e = np.asarray(mc["std"]["value"]), 2 * np.asarray(mc["std"]["stderr"])
        style = dict(color=_LAW_COLORS[law], marker=_LAW_MARKERS[law], ms=4, lw=0, elinewidth=1.2, capsize=2)
        ax_std.errorbar(dims * shift[law], v, yerr=e, label=f"Monte Carlo, {law}", **style)
        ax_ratio.errorbar(dims * shift[law], v / exact, yerr=e / exact, label=f"Monte Carlo, {law}", **style)
    for ax in (ax_std, ax_ratio):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dimension $d$")
    ax_std.set_yscale("log")
    ax_std.set_ylabel(r"std of $\cos(z, p)$ (dimensionless)")
    ax_std.set_title("(a) std of the cosine against $d$")
    ax_std.legend(loc="lower left")
    ax_ratio.set_ylabel(r"std / $(1/\sqrt{d})$ (dimensionless)")
    ax_ratio.set_title("(b) ratio to the exact value (bars ±2 s.e.)")  # line styles: legend of (a)


def _short(x: float) -> str:
    """``0.36`` as ``.36`` (tick labels of five data sets must fit side by side)."""
    return f"{x:.2f}".replace("0.", ".", 1) if 0 <= x < 1 else f"{x:.2f}"


def _dataset_panel(ax: Any, datasets: dict[str, Any], gamma: float) -> None:
    names = list(datasets)
    kinds = (("images_vs_prototypes", r"$\cos(z_b, p_c)$, CN init", color("cn")),
             ("images_vs_images", r"$\cos(z_b, z_{b'})$", color("classifier")))
    width = 0.34
    for j, (key, text, c) in enumerate(kinds):
        data = [datasets[n][key]["std_per_batch"] for n in names]
        positions = np.arange(len(names)) + (j - 0.5) * width
        ax.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True, manage_ticks=False,
                   boxprops=dict(facecolor=c, alpha=0.55, edgecolor=c), medianprops=dict(color="black"),
                   whiskerprops=dict(color=c), capprops=dict(color=c), flierprops=dict(markeredgecolor=c, ms=3))
        ax.plot([], [], color=c, lw=6, alpha=0.55, label=text)
    for i, n in enumerate(names):
        ax.hlines(datasets[n]["paper_std"], i - 0.45, i + 0.45, color="black", lw=1.2,
                  label=r"predicted $\sqrt{d_z}/(d_z-2)$" if i == 0 else None)
    # non-negative vectors: the cosines' large mean is the main departure from isotropy, so print it
    means = [[float(np.mean(datasets[n][k]["mean_per_batch"])) for k, _, _ in kinds] for n in names]
    ax.set_xticks(range(len(names)), [f"{n}\n({datasets[n]['features']})\nmean {_short(a)} | {_short(b)}"
                                      for n, (a, b) in zip(names, means)], fontsize=8.5)
    ax.set_xlim(-0.6, len(names) - 0.4)
    # linear from 0: the spreads differ by tens of percent, not decades, and the legend fits below
    top = max(max(datasets[n]["paper_std"], *datasets[n][k]["std_per_batch"]) for n in names for k, _, _ in kinds)
    ax.set_ylim(0, 1.12 * top)
    ax.set_ylabel(r"std of $\cos$ per batch (dimensionless)")
    scale = gamma**2
    right = ax.secondary_yaxis("right", functions=(lambda y: y * scale, lambda y: y / scale))
    right.set_ylabel(rf"std of logit $\gamma^2\cos$, $\gamma$={gamma:g}")
    ax.set_title("(c) spread of the cosines within a training step, per data set")
    ax.legend(loc="lower center", ncols=3, fontsize=8.5)


def _caption(cache: dict[str, Any]) -> str:
    prov = cache["provenance"]
    s = prov["settings"]
    sources = "; ".join(f"{d['name']}: {d['source']}" for d in prov["datasets"])
    return (f"(a, b) {s['num_pairs']} pairs per d and law. (c) Data: {sources}. {s['num_batches']} batches of "
            f"{s['batch_size']} images per data set, each against the seen-class prototypes of a freshly "
            f"initialized reference CN model (width {s['width']}, AN l2_sqrt); boxes: quartiles, whiskers 1.5 IQR; "
            f"mean: average cosine of the two kinds of pairs."
            + (" [fast budget]" if prov["fast"] else ""))


def plot(ctx: FigureContext) -> list[Path]:
    """Draw ``NAME.png``/``NAME.pdf`` from the cache (a FileNotFoundError if it is missing)."""
    cache = read_cache(ctx, NAME)
    fig, axes = new_figure(2, 2, panel_width=4.2, panel_height=2.9)
    _dimension_panels(axes[0, 0], axes[0, 1], cache["against_dimension"])
    grid = axes[1, 0].get_gridspec()
    for ax in axes[1, :]:
        ax.remove()
    _dataset_panel(fig.add_subplot(grid[1, :]), cache["datasets"], cache["gamma"])
    add_caption(fig, textwrap.fill(_caption(cache), width=int(fig.get_figwidth() * 15)))
    return save_figure(fig, ctx.out, NAME)
