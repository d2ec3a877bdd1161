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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import seaborn as sns
from matplotlib.figure import Figure

from analysis.io import atomic_write

__all__ = ["MODEL_COLORS", "MODEL_LABELS", "PNG_DPI", "add_caption", "apply_style", "color", "label",
           "new_figure", "save_figure"]

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
