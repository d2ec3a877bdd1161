"""V3 (docs/science.md section 4.3): class attributes are neither Gaussian nor uncorrelated across classes.

What it shows.  Per data set, box plots over attributes of the D'Agostino-Pearson normality
statistic ``K^2_j`` of each attribute across the ``C`` classes, of its p-value, and, over
attribute pairs, of the absolute correlation ``|r_jk|``; and histograms of the standardized
attribute values ``z_cj`` of two data sets (SUN and AWA2 when present, otherwise the first
two) against the standard normal density.

Why it matters (claim V3).  The attribute embedder's batch axis is the set of classes, so
the forward-pass scale of a deep embedder depends on how attributes are distributed across
classes; fan-in/fan-out inits assume standardized, roughly Gaussian, uncorrelated inputs.
The statistics (:func:`variance.attribute_statistics.attribute_statistics`, float64):

    K^2_j, p_j = scipy.stats.normaltest(att[:, j])     p_j = exp(-K^2_j / 2)  (chi^2, 2 dof)
    z_cj = (a_cj - mu_j) / sigma_j                     |r_jk| = |corr(att[:, j], att[:, k])|, j < k

Normality is rejected at level ``alpha`` where ``K^2_j > -2 ln(alpha)`` (5.99 for 0.05).  As a
reference for the correlations, independent Gaussian attributes would give a median
``|r| = tanh(0.6745 / sqrt(C - 3))`` (Fisher's ``atanh r ~ N(0, 1/(C-3))``).  p-values are
stored and drawn as ``log10 p = -K^2 / (2 ln 10)``, exact for this test and free of the
underflow of ``p`` itself (real SUN attributes reach ``K^2 > 1400``, ``p < 1e-300``).

Data: the attribute matrix ``att`` [C, d_a] of every data set of ``ctx.datasets()`` (real
``att_splits.mat`` where ``data_root`` holds it, the synthetic generator's otherwise); image
features play no part.  Box plots: quartiles, whiskers at the 5th and 95th percentiles.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from analysis.io import write_json
from figures.context import DataChoice, FigureContext, read_cache
from figures.style import add_caption, color, new_figure, save_figure
from variance.attribute_statistics import AttributeStatistics, attribute_statistics

__all__ = ["NAME", "PAPER", "TITLE", "Budget", "budget", "compute", "histogram_datasets", "plot"]

NAME = "attribute_statistics"
TITLE = "Attribute statistics across classes: normality test, p-values, |correlation|, histograms"
PAPER = "§4.3 V3 (data)"  # docs/science.md section 4.3

PERCENTILES = tuple(range(101))  # stored for |r| (tens of thousands of pairs on CUB)
_FISHER_MEDIAN = 0.6744897501960817  # median of |N(0, 1)|


@dataclass(frozen=True)
class Budget:
    """Histogram and test settings (the statistics are exact: no Monte Carlo, same when fast)."""

    bins: int = 44  # histogram bins over z_range
    z_range: tuple[float, float] = (-3.0, 8.0)  # in units of sigma_j; skewed: long right tails
    alpha: float = 0.05  # test level of the rejected fraction


FAST = Budget()


def budget(ctx: FigureContext) -> Budget:
    """The budget, with the entries of ``ctx.extra[NAME]`` replaced.

    Raises:
        ValueError: an unknown entry, ``bins < 1``, a range not ``low < high``, or ``alpha``
            outside (0, 1).
    """
    out = ctx.budget(NAME, Budget(), FAST)
    out = replace(out, z_range=tuple(float(v) for v in out.z_range))
    low, high = out.z_range
    if isinstance(out.bins, bool) or not isinstance(out.bins, int) or out.bins < 1 or not low < high:
        raise ValueError(f"{NAME} needs an integer bins >= 1 and z_range (low, high) with low < high, "
                         f"got bins={out.bins!r}, z_range={out.z_range}")
    if not 0 < out.alpha < 1:
        raise ValueError(f"{NAME} alpha must lie strictly between 0 and 1, got {out.alpha!r}")
    return out


def histogram_datasets(choices: list[DataChoice]) -> list[str]:
    """SUN and AWA2 when both are present, otherwise the first two data sets (fewer if fewer)."""
    names = [c.name for c in choices]
    if "SUN" in names and "AWA2" in names:
        return ["SUN", "AWA2"]
    return names[:2]


def _entry(stats: AttributeStatistics, b: Budget, histogram: bool) -> dict[str, Any]:
    varying = ~stats.constant_mask
    chi2 = stats.normality_chi2[varying]
    out: dict[str, Any] = {
        "summary": stats.summary(b.alpha),
        "chi2": chi2.tolist(),  # [d] one per non-constant attribute
        "log10_pvalue": (-chi2 / (2 * math.log(10))).tolist(),  # exact: p = exp(-K^2/2)
        "abs_corr_percentiles": (np.percentile(stats.abs_correlations.numpy(), PERCENTILES).tolist()
                                 if stats.abs_correlations.numel() else []),
        "independent_median_abs_corr": (math.tanh(_FISHER_MEDIAN / math.sqrt(stats.num_classes - 3))
                                        if stats.num_classes > 3 else None),
    }
    if histogram:
        counts, edges = stats.histogram(b.bins, b.z_range)
        z = stats.standardized_values
        out["histogram"] = {"counts": counts.tolist(), "edges": edges.tolist(), "total": int(z.numel()),
                            "below": int((z < b.z_range[0]).sum()), "above": int((z > b.z_range[1]).sum()),
                            "max": float(z.max())}
    return out


def compute(ctx: FigureContext) -> Path:
    """The statistics of every data set's attributes; writes ``ctx.cache_path(NAME)``."""
    b = budget(ctx)
    choices = ctx.datasets()
    with_histogram = histogram_datasets(choices)
    datasets = {}
    for choice in choices:
        att = ctx.load(choice).attributes  # [C, d_a]
        datasets[choice.name] = {"source": "real attributes" if choice.real_attributes else "synthetic",
                                 **_entry(attribute_statistics(att), b, choice.name in with_histogram)}
    payload = {"datasets": datasets, "histogram_datasets": with_histogram, "percentiles": list(PERCENTILES),
               "provenance": ctx.provenance(choices, **asdict(b))}
    return write_json(ctx.cache_path(NAME), payload)


# --------------------------------------------------------------------------- drawing

def _box(percentile: Any) -> dict[str, float]:
    """``Axes.bxp`` statistics from a percentile function: quartiles, whiskers at 5 and 95 %."""
    return {"whislo": percentile(5), "q1": percentile(25), "med": percentile(50), "q3": percentile(75),
            "whishi": percentile(95), "fliers": []}


def _boxes(ax: Any, stats: list[dict[str, float]], points: list[list[float]] | None) -> None:
    c = color("classifier")
    ax.bxp(stats, positions=range(len(stats)), widths=0.55, patch_artist=True, showfliers=False,
           boxprops=dict(facecolor=c, alpha=0.45, edgecolor="0.3"), medianprops=dict(color="black", lw=1.5),
           whiskerprops=dict(color="0.3"), capprops=dict(color="0.3"), manage_ticks=False)
    if points is not None:  # every attribute, jittered (a fixed seed: the same picture every time)
        rng = np.random.default_rng(0)
        for i, values in enumerate(points):
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(values)), values, s=4, color=color("cn"), alpha=0.5,
                       lw=0, zorder=3)


def _pow10(value: float, _pos: Any = None) -> str:
    return "1" if value == 0 else f"$10^{{{value:g}}}$"


def _summary_panels(axes: Any, cache: dict[str, Any]) -> None:
    datasets = cache["datasets"]
    names = list(datasets)
    alpha = cache["provenance"]["settings"]["alpha"]
    ax_chi2, ax_p, ax_corr = axes
    chi2 = [datasets[n]["chi2"] for n in names]
    _boxes(ax_chi2, [_box(lambda q, v=v: float(np.percentile(v, q))) for v in chi2], chi2)
    ax_chi2.axhline(-2 * math.log(alpha), color="black", lw=1, linestyle="--",
                    label=f"reject normality above ({-2 * math.log(alpha):.2f})")
    ax_chi2.set_yscale("log")
    ax_chi2.set_ylabel(r"$K^2$ (dimensionless)")
    ax_chi2.set_title(r"(a) D'Agostino-Pearson $K^2$ per attribute")

    log_p = [datasets[n]["log10_pvalue"] for n in names]
    boxes = [_box(lambda q, v=v: float(np.percentile(v, q))) for v in log_p]
    # the axis stops a little below the lowest 5th percentile: a single attribute with
    # K^2 ~ 1e4 (p ~ 1e-3000) would otherwise squash every box against the top
    bottom = 1.15 * min(min(b["whislo"] for b in boxes), math.log10(alpha))
    _boxes(ax_p, boxes, [[max(x, bottom) for x in v] for v in log_p])
    for i, v in enumerate(log_p):
        below = sum(x < bottom for x in v)
        if below:
            ax_p.annotate(f"{below} lower", (i, bottom), xytext=(0, 4), textcoords="offset points",
                          ha="center", va="bottom", fontsize=7.5)
    ax_p.set_ylim(bottom, -0.04 * bottom)
    ax_p.axhline(math.log10(alpha), color="black", lw=1, linestyle="--", label=f"level {alpha:g}")
    ax_p.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], integer=True))
    ax_p.yaxis.set_major_formatter(FuncFormatter(_pow10))
    ax_p.set_ylabel("p-value (log scale)")
    ax_p.set_title("(b) its p-value per attribute")

    pct = cache["percentiles"]
    corr_boxes = [_box(lambda q, v=datasets[n]["abs_corr_percentiles"]: float(np.interp(q, pct, v))) for n in names]
    _boxes(ax_corr, corr_boxes, None)
    for i, n in enumerate(names):
        ref = datasets[n]["independent_median_abs_corr"]
        if ref is not None:
            ax_corr.hlines(ref, i - 0.38, i + 0.38, color="black", lw=2.2, linestyle=(0, (1, 1)),
                           label="median if independent Gaussian" if i == 0 else None)
    ax_corr.set_ylim(0, 1)
    ax_corr.set_ylabel(r"$|r_{jk}|$ (dimensionless)")
    ax_corr.set_title("(c) |correlation| per attribute pair")
    for ax in axes:
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.legend(loc="upper left" if ax is not ax_p else "lower left", fontsize=8)


def _histogram_panel(ax: Any, name: str, entry: dict[str, Any], panel: str) -> None:
    h = entry["histogram"]
    edges, counts = np.asarray(h["edges"]), np.asarray(h["counts"], dtype=float)
    density = counts / (h["total"] * np.diff(edges))  # integrates to the fraction inside the range
    ax.stairs(density, edges, fill=True, color=color("classifier"), alpha=0.6, label="attribute values")
    x = np.linspace(edges[0], edges[-1], 400)
    ax.plot(x, np.exp(-x**2 / 2) / math.sqrt(2 * math.pi), color="black", lw=1.2, label="standard normal")
    ax.set_yscale("log")
    ax.set_ylim(max(density[density > 0].min() / 3, 1e-5) if (density > 0).any() else 1e-5, 2)
    ax.set_xlabel(r"standardized value $z_{cj}$ (units of $\sigma_j$)")
    ax.set_ylabel("density (per unit z)")
    s = entry["summary"]
    ax.set_title(f"({panel}) {name}: standardized values of {s['num_classes']:.0f} classes × "
                 f"{s['num_attributes']:.0f} attributes", fontsize=10)
    outside = h["below"] + h["above"]
    note = f"max z = {h['max']:.1f}" + (f"\n{outside} of {h['total']} values\noutside the range" if outside else "")
    ax.text(0.97, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    ax.legend(loc="lower left", fontsize=8)


def _caption(cache: dict[str, Any]) -> str:
    prov = cache["provenance"]
    sources = "; ".join(f"{n}: {e['source']}" for n, e in cache["datasets"].items())
    rejected = ", ".join(f"{n} {100 * e['summary']['rejected_fraction']:.0f}%" for n, e in cache["datasets"].items())
    sizes = ", ".join(f"{n} {e['summary']['num_classes']:.0f}×{e['summary']['num_attributes']:.0f}"
                      for n, e in cache["datasets"].items())
    return (f"Attributes: {sources} (image features not used); classes × attributes: {sizes}. Normality rejected at level "
            f"{prov['settings']['alpha']:g} for: {rejected} of attributes. Boxes: quartiles, whiskers 5th-95th "
            f"percentile; dots: single attributes.")


def plot(ctx: FigureContext) -> list[Path]:
    """Draw ``NAME.png``/``NAME.pdf`` from the cache (a FileNotFoundError if it is missing)."""
    cache = read_cache(ctx, NAME)
    hist = cache["histogram_datasets"]
    fig, axes = new_figure(2, 3, panel_width=3.3, panel_height=2.8)
    for ax in axes.flat:  # re-cut the grid: three summary panels above, two wider histograms below
        ax.remove()
    grid = fig.add_gridspec(2, 6)
    _summary_panels([fig.add_subplot(grid[0, 2 * j:2 * j + 2]) for j in range(3)], cache)
    for j, name in enumerate(hist):
        _histogram_panel(fig.add_subplot(grid[1, 3 * j:3 * j + 3]), name, cache["datasets"][name], "de"[j])
    add_caption(fig, textwrap.fill(_caption(cache), width=int(fig.get_figwidth() * 15)))
    return save_figure(fig, ctx.out, NAME)
