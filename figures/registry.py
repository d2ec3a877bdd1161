"""The figures ``cnzsl figures`` knows, in the paper's order, and how one run draws them.

:data:`FIGURE_NAMES` lists the modules (``figures/<name>.py``, contract in
:mod:`figures.context`).  :func:`run_figures` computes each selected figure's cache and
plots it, timing both, and records in ``out/figures.json`` what ran, how long and which
files, one entry per figure, merged with what earlier runs into the same folder recorded.
The log holds ``out``, the folder's absolute path; each entry's ``files`` are names inside it
(relative to ``out``, so the log stays true when the folder is moved as a whole).

A run publishes figure by figure, so an interrupted run keeps the figures it finished.  A
figure's entry in ``figures.json`` is its completion marker: ``plot`` draws into a staging
folder (``out/.cnzsl-staging-*``, fed a link to the cache), the figure's old entry is
removed, its files are moved into ``out`` together (:func:`analysis.output_folder.publish_files`,
SIGINT and SIGTERM held back) and only then is its entry written.  Whatever stops a run, a
figure listed in ``figures.json`` has every file of the run that drew it; files without an
entry are from a run stopped while it published them.  A cache (``out/data/NAME.json``,
written atomically by ``compute``) whose figure files are absent is what an interrupted run
left: the next run computes it again without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from analysis.interrupts import signals_held
from analysis.io import refuse_to_overwrite, write_json
from analysis.output_folder import STAGING_PREFIX, FolderLock, publish_files
from figures.context import FigureContext, read_cache

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


def _outputs(ctx: FigureContext, name: str) -> list[str]:
    """The files a figure draws (its cache is not among them: module docstring)."""
    png, pdf = ctx.figure_paths(name)
    return [png.name, pdf.name, *getattr(figure_module(name), "EXTRA_OUTPUTS", ())]


def run_figures(
    ctx: FigureContext,
    names: Sequence[str] = FIGURE_NAMES,
    *,
    plot_only: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    published: list[str] | None = None,
) -> dict[str, Any]:
    """Compute (unless ``plot_only``) and plot each figure of ``names``, publishing each as it
    is drawn (module docstring); returns this run's summary (``ctx.out/figures.json`` merges
    it with earlier runs' entries).

    Args:
        published: a list that receives each figure's name once its files and its entry in
            ``figures.json`` are in place (what an interrupted run kept).

    Raises:
        FileExistsError: a file a selected figure draws exists and ``overwrite`` is False
            (checked for every figure before any work starts).
        FileNotFoundError: ``plot_only`` and a cache is missing.
    """
    names = select_figures(names)
    published = [] if published is None else published
    with FolderLock(ctx.out):  # one run at a time in ctx.out (analysis/output_folder.py)
        for name in names:
            refuse_to_overwrite(ctx.out, _outputs(ctx, name), overwrite)
        for stale in ctx.out.glob(f"{STAGING_PREFIX}*"):  # left by a killed run: we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        rows = []
        for name in names:
            module = figure_module(name)
            start = time.perf_counter()
            if not plot_only:
                log(f"[{name}] computing ...")
                module.compute(ctx)
            computed = time.perf_counter()

            def row(files: list[str]) -> dict[str, Any]:
                return {"name": name, "title": module.TITLE, "paper": module.PAPER, "fast": ctx.fast,
                        "compute_seconds": None if plot_only else computed - start,
                        "plot_seconds": time.perf_counter() - computed, "files": files}

            rows.append(_draw(ctx, module, overwrite, row, published))
            log(f"[{name}] {rows[-1]['compute_seconds'] or 0:.1f} s compute, {rows[-1]['plot_seconds']:.1f} s plot"
                f" -> {', '.join(rows[-1]['files'])}")
        summary = {"figures": rows, "fast": ctx.fast, "plot_only": plot_only,
                   "total_seconds": sum((r["compute_seconds"] or 0) + r["plot_seconds"] for r in rows)}
    return summary


def _draw(ctx: FigureContext, module: ModuleType, overwrite: bool,
          row: Callable[[list[str]], dict[str, Any]], published: list[str]) -> dict[str, Any]:
    """Plot ``module``'s figure into a staging folder and publish it (module docstring): its
    old entry in ``figures.json`` removed, its files moved together, its new entry
    ``row(files)`` written, SIGINT and SIGTERM held back meanwhile.  A log that cannot be
    written takes back the files that were not there before.

    Returns:
        The entry written, after its name was appended to ``published``.
    """
    read_cache(ctx, module.NAME)  # a missing or broken cache: its error names the real folder
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=ctx.out))
    try:
        cache = ctx.cache_path(module.NAME)
        (staging / "data").mkdir()
        try:  # plot() reads only its cache (figures/context.py): a link, or a copy, beside the drawing
            os.link(cache, staging / "data" / cache.name)
        except OSError:
            shutil.copyfile(cache, staging / "data" / cache.name)
        paths = [Path(p) for p in module.plot(dataclasses.replace(ctx, out=staging))]
        stray = [str(p) for p in paths if p.parent != staging]
        if stray:
            raise RuntimeError(f"{module.NAME}.plot() wrote {stray} outside its output folder; a figure writes "
                               "only NAME.* in ctx.out")
        files = [p.name for p in paths]
        entry = row(files)
        log = ctx.out / "figures.json"
        new = [name for name in files if not os.path.lexists(ctx.out / name)]
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            earlier = _forget(log, module.NAME)
            publish_files(staging, ctx.out, files, overwrite=overwrite)
            try:
                _record(log, [entry], earlier)  # the figure's completion marker
            except BaseException:
                for name in new:  # unlisted files would stand in the way of the rerun
                    try:
                        (ctx.out / name).unlink(missing_ok=True)
                    except OSError:
                        pass
                raise
            published.append(module.NAME)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a signal held back is raised here
    except BaseException as err:
        with signals_held(err):  # a second Ctrl-C cannot leave the staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
        raise
    with signals_held():  # published: a signal that arrives meanwhile is raised once the folder is gone
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _forget(path: Path, name: str) -> dict[str, Any] | None:
    """Remove figure ``name``'s entry from the log ``path`` (before its files are replaced);
    returns the entry removed."""
    if not path.is_file():
        return None
    log = json.loads(path.read_text())
    rows = [row for row in log["figures"] if row["name"] != name]
    if len(rows) == len(log["figures"]):
        return None
    _write_log(path, rows)
    return next(row for row in log["figures"] if row["name"] == name)


def _record(path: Path, rows: list[dict[str, Any]], earlier: dict[str, Any] | None = None) -> None:
    """Merge ``rows`` into the log ``path`` (one entry per figure, the latest run of each),
    so that redrawing some figures keeps what earlier runs recorded about the others; a
    redraw keeps the compute time of the run that made its cache (from the log, or from
    ``earlier``, the entry :func:`_forget` removed)."""
    log = {row["name"]: row for row in (json.loads(path.read_text())["figures"] if path.is_file() else [])}
    for row in rows:
        before = log.get(row["name"]) or (earlier if earlier and earlier["name"] == row["name"] else None)
        if row["compute_seconds"] is None and before is not None:
            row = {**row, "compute_seconds": before["compute_seconds"]}
        log[row["name"]] = row
    _write_log(path, [log[n] for n in FIGURE_NAMES if n in log])


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    write_json(path, {"out": path.parent, "figures": rows,
                      "total_seconds": sum((r["compute_seconds"] or 0) + r["plot_seconds"] for r in rows)},
               units={"figures[].compute_seconds": "seconds", "figures[].plot_seconds": "seconds",
                      "total_seconds": "seconds"})
