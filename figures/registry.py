"""The figures ``cnzsl figures`` knows, in the paper's order, and how one run draws them.

:data:`FIGURE_NAMES` lists the modules (``figures/<name>.py``, contract in
:mod:`figures.context`).  :func:`run_figures` computes each selected figure's cache and
plots it, timing both, and records in ``out/figures.json`` what ran, how long and which
files, one entry per figure, merged with what earlier runs into the same folder recorded.
The log holds ``out``, the folder's absolute path; each entry's ``files`` are names inside it
(relative to ``out``, so the log stays true when the folder is moved as a whole).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from analysis.io import refuse_to_overwrite, write_json
from analysis.output_folder import FolderLock
from figures.context import FigureContext

__all__ = ["FIGURE_NAMES", "figure_module", "run_figures", "select_figures"]

FIGURE_NAMES = (
    "variance_vs_depth",
    "normalize_scale",
    "attribute_statistics",
    "loss_surface",
    "loss_slices",
    "spectral_density",
    "ablation_table",
    "training_time",
)


def figure_module(name: str) -> ModuleType:
    """The module of figure ``name`` (a ValueError lists the known names)."""
    if name not in FIGURE_NAMES:
        raise ValueError(f"unknown figure {name!r}; choose from {', '.join(FIGURE_NAMES)}")
    return importlib.import_module(f"figures.{name}")


def select_figures(only: Sequence[str] = ()) -> tuple[str, ...]:
    """``only`` validated and in paper order; all figures when empty."""
    for name in only:
        figure_module(name)  # raises on an unknown name
    return tuple(n for n in FIGURE_NAMES if not only or n in only)


def _outputs(ctx: FigureContext, name: str, plot_only: bool) -> list[str]:
    png, pdf = ctx.figure_paths(name)
    files = [png.name, pdf.name, *getattr(figure_module(name), "EXTRA_OUTPUTS", ())]
    return files if plot_only else files + [str(ctx.cache_path(name).relative_to(ctx.out))]


def run_figures(
    ctx: FigureContext,
    names: Sequence[str] = FIGURE_NAMES,
    *,
    plot_only: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compute (unless ``plot_only``) and plot each figure of ``names``; returns this run's
    summary (``ctx.out/figures.json`` merges it with earlier runs' entries).

    Raises:
        FileExistsError: an output of a selected figure exists and ``overwrite`` is False
            (checked for every figure before any work starts).
        FileNotFoundError: ``plot_only`` and a cache is missing.
    """
    names = select_figures(names)
    with FolderLock(ctx.out):  # one run at a time in ctx.out (analysis/output_folder.py)
        for name in names:
            refuse_to_overwrite(ctx.out, _outputs(ctx, name, plot_only), overwrite)
        rows = []
        for name in names:
            module = figure_module(name)
            start = time.perf_counter()
            if not plot_only:
                log(f"[{name}] computing ...")
                module.compute(ctx)
            computed = time.perf_counter()
            paths = module.plot(ctx)
            rows.append({"name": name, "title": module.TITLE, "paper": module.PAPER, "fast": ctx.fast,
                         "compute_seconds": None if plot_only else computed - start,
                         "plot_seconds": time.perf_counter() - computed,
                         "files": [str(Path(p).relative_to(ctx.out)) for p in paths]})
            log(f"[{name}] {rows[-1]['compute_seconds'] or 0:.1f} s compute, {rows[-1]['plot_seconds']:.1f} s plot"
                f" -> {', '.join(rows[-1]['files'])}")
        summary = {"figures": rows, "fast": ctx.fast, "plot_only": plot_only,
                   "total_seconds": sum((r["compute_seconds"] or 0) + r["plot_seconds"] for r in rows)}
        _record(ctx.out / "figures.json", rows)
    return summary


def _record(path: Path, rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` into the log ``path`` (one entry per figure, the latest run of each),
    so that redrawing some figures keeps what earlier runs recorded about the others; a
    redraw keeps the compute time of the run that made its cache."""
    log = {row["name"]: row for row in (json.loads(path.read_text())["figures"] if path.is_file() else [])}
    for row in rows:
        if row["compute_seconds"] is None and row["name"] in log:
            row = {**row, "compute_seconds": log[row["name"]]["compute_seconds"]}
        log[row["name"]] = row
    ordered = [log[n] for n in FIGURE_NAMES if n in log]
    write_json(path, {"out": path.parent, "figures": ordered,
                      "total_seconds": sum((r["compute_seconds"] or 0) + r["plot_seconds"] for r in ordered)},
               units={"figures[].compute_seconds": "seconds", "figures[].plot_seconds": "seconds",
                      "total_seconds": "seconds"})
