"""The one plot style of the toolkit: fonts, colours per model, sizes, caption, saving.

The paper figures (``figures/``, through :mod:`figures.style`, which re-exports this module)
and the plots the commands write (``cnzsl landscape``, ``cnzsl czsl``) share it, so a model
has one colour everywhere.  It lives in ``analysis/``, the shared core, because nothing
imports ``figures/``.

Figures are drawn with matplotlib's ``Agg`` backend (no display needed) and saved as PNG
(for the README, 150 dpi) and PDF (vector, for papers), each written atomically.

Colours are fixed per *model* so a reader can follow one model across figures:
:data:`MODEL_COLORS` maps the names used throughout the toolkit (``classifier``,
``zsl_mlp``, ``zsl_cn`` of ``landscape``; ``mlp``, ``mlp+eq9``, ``mlp+eq10``, ``cn`` of the
ablation; ``no_cn`` / ``cn`` of the variance figures) to a colour-blind-safe palette
(seaborn's ``colorblind``).
"""

from __future__ import annotations

import io
import logging
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from analysis.io import atomic_write

__all__ = ["MODEL_COLORS", "MODEL_LABELS", "PNG_DPI", "add_caption", "apply_style", "color", "label",
           "legend_outside", "log_axis", "new_figure", "nice_ticks", "provenance_caption", "save_figure",
           "shared_colorbar", "shared_norm", "text_color"]

PNG_DPI = 150
_PALETTE = sns.color_palette("colorblind", 10)

MODEL_COLORS: dict[str, Any] = {
    "classifier": _PALETTE[7],  # grey: the non-ZSL reference
    "zsl_mlp": _PALETTE[3],  # red: ZSL without CN
    "zsl_cn": _PALETTE[0],  # blue: ZSL with CN
    "mlp": _PALETTE[3],
    "mlp+eq9": _PALETTE[1],
    "mlp+eq10": _PALETTE[4],
    "cn": _PALETTE[0],
    "bn": _PALETTE[6],  # the normalization zoo (cnzsl probe)
    "ln": _PALETTE[2],
    "rmsnorm": _PALETTE[8],
    "no_cn": _PALETTE[3],
    "linear": _PALETTE[2],
    "predicted": "black",
}

MODEL_LABELS: dict[str, str] = {
    "classifier": "traditional classifier",
    "zsl_mlp": "ZSL MLP (no CN)",
    "zsl_cn": "ZSL MLP + CN",
    "mlp": "MLP",
    "mlp+eq9": "MLP + Eq. 9",
    "mlp+eq10": "MLP + Eq. 10",
    "cn": "MLP + CN",
    "bn": "MLP + BatchNorm",
    "ln": "MLP + LayerNorm",
    "rmsnorm": "MLP + RMSNorm",
    "no_cn": "NS + AN, no CN",
    "linear": "linear",
}


def color(name: str) -> Any:
    """The colour of model ``name`` (a KeyError lists the known names)."""
    if name not in MODEL_COLORS:
        raise KeyError(f"no colour for {name!r}; known: {', '.join(MODEL_COLORS)}")
    return MODEL_COLORS[name]


def text_color(name: str) -> Any:
    """The colour of model ``name`` for text (a panel title): its line colour, but dark grey
    for the classifier, whose light grey line colour is hard to read as text."""
    return "0.25" if name == "classifier" else color(name)


def label(name: str) -> str:
    """The legend label of model ``name`` (the name itself when it has none)."""
    return MODEL_LABELS.get(name, name)


def apply_style() -> None:
    """Set the shared rcParams (idempotent): white grid, 10 pt text, no top/right spines."""
    sns.set_theme(context="paper", style="whitegrid", palette=_PALETTE, font_scale=1.15)
    matplotlib.rcParams.update({
        "axes.spines.top": False, "axes.spines.right": False,
        "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
        "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12,
        "legend.frameon": False, "savefig.bbox": "tight", "savefig.pad_inches": 0.05,
        "pdf.fonttype": 42,  # TrueType in PDFs: editable text
    })


def new_figure(nrows: int = 1, ncols: int = 1, *, panel_width: float = 3.4, panel_height: float = 2.8,
               **kwargs: Any) -> tuple[Figure, Any]:
    """A ``matplotlib.figure.Figure`` with a grid of axes, the shared style and the
    constrained layout, sized per panel (inches), so text never overlaps between panels.
    No pyplot: the process-wide backend is never touched."""
    apply_style()
    kwargs.setdefault("squeeze", False)
    fig = Figure(figsize=(panel_width * ncols, panel_height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def add_caption(fig: Figure, text: str) -> None:
    """A small grey line under the panels saying what produced the figure (data source, budget)."""
    fig.supxlabel(text, fontsize=8, color="0.35")


def provenance_caption(data: str, *details: str, commit: str | None = None, width: int = 120) -> str:
    """The caption of a figure: ``"<data>; <detail>; ...; commit <sha, 10 digits>"``, in lines
    of at most ``width`` characters broken between parts (inside a part only when it alone is
    longer), for :func:`add_caption`.

    Args:
        data: the data set and whether it is real or synthetic, e.g. ``"AWA2 (synthetic data)"``.
        details: what produced the numbers: the command or budget, seeds, samples.
        commit: the git commit of the code that computed them
            (``analysis.io.environment_info()["git_commit"]``); ``None``: not named.

    Raises:
        ValueError: an empty ``data`` (a figure must say what it was computed on).
    """
    if not str(data).strip():
        raise ValueError(f"provenance_caption needs the data source (e.g. 'CUB (synthetic data)'), got {data!r}")
    parts = [str(data), *(str(d) for d in details if str(d))]
    if commit:
        parts.append(f"commit {commit[:10]}")
    lines = [""]
    for k, part in enumerate(parts):  # lines break between parts, so a part reads whole
        piece = part + (";" if k < len(parts) - 1 else "")
        if lines[-1] and len(lines[-1]) + 1 + len(piece) > width:
            lines.append("")
        lines[-1] = f"{lines[-1]} {piece}" if lines[-1] else piece
    return "\n".join(line for wrapped in lines for line in textwrap.wrap(wrapped, width, break_on_hyphens=False))


def legend_outside(fig: Figure, axes: Iterable[Axes] | Axes, **kwargs: Any) -> Any:
    """One legend for ``fig`` above its panels (constrained layout's ``"outside upper center"``),
    so it covers no data: the handles of every axes in ``axes``, each label once, in one row
    (``ncols``: one column per label unless given)."""
    handles: dict[str, Any] = {}
    for ax in ([axes] if isinstance(axes, Axes) else axes):
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    kwargs.setdefault("ncols", max(len(handles), 1))
    return fig.legend(list(handles.values()), list(handles), loc="outside upper center", **kwargs)


def shared_norm(panels: Iterable[Any], *, log: bool = False) -> Normalize:
    """One colour normalization for several panels, so equal colours mean equal values:

        vmin = min_p min(panels[p]),   vmax = max_p max(panels[p])   (finite values only)

    A flat set of values gets ``vmax = vmin (1 + 1e-3)`` (``vmin + 1e-3`` at 0), so it still
    has a colour scale.  Pass the returned norm to every panel's ``contourf``/``imshow``.

    Args:
        panels: array-likes of any shapes (one per panel).
        log: a :class:`~matplotlib.colors.LogNorm` (values must be positive), else linear.

    Raises:
        ValueError: no finite value at all, or ``log=True`` with a value ``<= 0``.
    """
    values = [np.asarray(v, dtype=float).ravel() for v in panels]
    finite = np.concatenate(values) if values else np.empty(0)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("shared_norm needs at least one finite value across the panels, got none")
    lo, hi = float(finite.min()), float(finite.max())
    if log and lo <= 0:
        raise ValueError(f"a logarithmic colour scale needs positive values, got a minimum of {lo}; pass log=False")
    if hi - lo <= 1e-12 * max(abs(lo), 1.0):
        hi = lo + 1e-3 * (abs(lo) if lo else 1.0)
    return LogNorm(vmin=lo, vmax=hi) if log else Normalize(vmin=lo, vmax=hi)


def nice_ticks(lo: float, hi: float, most: int = 6) -> np.ndarray:
    """Between 3 and ``most`` round values inside ``[lo, hi]`` (``0 < lo < hi``) for a
    logarithmic colour bar: the finest of the ladders m x 10^k (m in {1, 1.5, 2, 3, 4, 5, 6, 8},
    then {1, 2, 5}, {1, 3}, {1}) that gives 3 to ``most`` ticks; else every k-th value of the
    finest ladder (too many values), else round linear steps (a range too narrow for the
    ladders), else the two ends."""
    decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
    ladders = []
    for mantissas in ((1, 1.5, 2, 3, 4, 5, 6, 8), (1, 2, 5), (1, 3), (1,)):
        ticks = np.array([m * 10.0**k for k in decades for m in mantissas])
        ladders.append(ticks[(ticks >= lo) & (ticks <= hi)])
    for ticks in ladders:
        if 3 <= len(ticks) <= most:
            return ticks
    if len(ladders[0]) > most:
        return ladders[0][:: int(np.ceil(len(ladders[0]) / most))]
    linear = MaxNLocator(nbins=most - 1, steps=[1, 2, 5, 10]).tick_values(lo, hi)
    linear = linear[(linear >= lo) & (linear <= hi)]
    return linear if len(linear) >= 2 else np.array([lo, hi])


def shared_colorbar(fig: Figure, mappable: Any, axes: Sequence[Axes] | Any, label: str, *,
                    most: int = 6) -> Colorbar:
    """One colour bar for all ``axes`` (drawn with the norm of :func:`shared_norm`), labelled
    ``label`` (with its unit), with at most ``most`` ticks at round values (:func:`nice_ticks`
    on a log norm, 1-2-5 steps otherwise) written with 3 significant digits (more only where
    two ticks would read the same), and no minor ticks."""
    bar = fig.colorbar(mappable, ax=axes, shrink=0.9, pad=0.02)
    bar.set_label(label)
    norm = mappable.norm
    if isinstance(norm, LogNorm):
        ticks = nice_ticks(norm.vmin, norm.vmax, most)
    else:
        ticks = MaxNLocator(nbins=most - 1, steps=[1, 2, 5, 10]).tick_values(norm.vmin, norm.vmax)
        ticks = ticks[(ticks >= norm.vmin) & (ticks <= norm.vmax)]
    # 3 significant digits, more only where two ticks would read the same (a nearly flat scale)
    digits = next((d for d in range(3, 10) if len({f"{t:.{d}g}" for t in ticks}) == len(ticks)), 10)
    bar.locator = FixedLocator(ticks)
    bar.formatter = FuncFormatter(lambda x, _: f"{x:.{digits}g}")
    bar.update_ticks()
    bar.minorticks_off()  # a log colour bar would add unlabelled minor ticks
    return bar


def log_axis(ax: Axes, lo: float, hi: float) -> None:
    """A log y axis with plain tick labels (``20``, ``50``, ``100``): ticks at 1, 2, 5 x 10^k
    over up to three decades, at powers of ten beyond."""
    ax.set_yscale("log")
    subs = (1.0, 2.0, 5.0) if hi / lo <= 1e3 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, out: Path, name: str, formats: Iterable[str] = ("png", "pdf")) -> list[Path]:
    """Write ``out/name.png`` and ``out/name.pdf`` atomically (and close ``fig`` if pyplot made it)."""
    # fontTools (PDF font subsetting) logs harmless notes about old font timestamps
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI)
        data = buffer.getvalue()
        paths.append(atomic_write(Path(out) / f"{name}.{fmt}", lambda f, data=data: f.write(data)))
    pyplot = sys.modules.get("matplotlib.pyplot")  # a figure made with pyplot is released
    if pyplot is not None:
        pyplot.close(fig)
    return paths
