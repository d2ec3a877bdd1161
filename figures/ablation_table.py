"""The paper's ablation table: 3-layer MLP, + Eq. (9), + Eq. (10), + CN (docs/science.md section 8.1).

For every data set of the run (``ctx.datasets()``), each ablation row (presets ``mlp``, ``mlp+eq9``, ``mlp+eq10``, ``cn`` of
:mod:`analysis.model`) is trained with the reference recipe for every seed of
``ctx.seeds`` (all seeds at once: :func:`analysis.seed_ensemble.train_seeds`, equal to
separate runs) and evaluated: GZSL unseen (U), seen (S) and harmonic mean (H) accuracy,
per-class means in percent, reported as mean ± standard deviation over the seeds
(``ddof=1``; ``null`` in the cache and the mean alone in the table for a single seed).  The published numbers (SUN, CUB, AWA1, AWA2) stand beside ours when the
data set is a real one, i.e. its attributes and splits come from ``att_splits.mat``
(:func:`published`); with synthetic features (no ``res101.mat``) only the *order* of the
rows is comparable, and the table says so.  The synthetic presets get no published
numbers: they share only their sizes with the real data sets.

Outputs: ``ablation_table.md`` and ``ablation_table.csv`` (the table), and
``ablation_table.png``/``.pdf`` (H per row and data set, with the published H marked).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from analysis.evaluation import evaluate
from analysis.experiment import format_mean_std, mean_std
from analysis.io import atomic_write, write_json
from analysis.model import preset_config
from analysis.seed_ensemble import train_seeds
from analysis.training import TrainConfig
from figures.context import EpochsBudget, FigureContext, read_cache
from figures.style import add_caption, color, label, new_figure, save_figure

NAME = "ablation_table"
TITLE = "Ablation: MLP, + Eq. 9, + Eq. 10, + CN; GZSL U / S / H, mean ± std over seeds"
PAPER = "§8.1 ablation table"  # docs/science.md section 8.1
EXTRA_OUTPUTS = (f"{NAME}.md", f"{NAME}.csv")  # besides NAME.png / NAME.pdf

ROWS = ("mlp", "mlp+eq9", "mlp+eq10", "cn")
# docs/science.md section 8.1: published GZSL U / S / H (percent), 3-layer MLP ablation
PUBLISHED: dict[str, dict[str, tuple[float, float, float]]] = {
    "mlp": {"SUN": (31.4, 40.4, 35.3), "CUB": (45.2, 48.4, 46.7), "AWA1": (57.0, 69.9, 62.8),
            "AWA2": (54.5, 72.2, 62.1)},
    "mlp+eq9": {"SUN": (41.5, 41.3, 41.4), "CUB": (49.4, 48.6, 49.0), "AWA1": (60.1, 73.0, 65.9),
                "AWA2": (60.3, 75.6, 67.1)},
    "mlp+eq10": {"SUN": (24.1, 37.9, 29.5), "CUB": (45.3, 44.5, 44.9), "AWA1": (58.4, 70.7, 64.0),
                 "AWA2": (52.1, 72.0, 60.5)},
    "cn": {"SUN": (44.7, 41.6, 43.1), "CUB": (49.9, 50.7, 50.3), "AWA1": (63.1, 73.4, 67.8),
           "AWA2": (60.2, 77.1, 67.6)},
}
METRICS = ("gzsl_unseen", "gzsl_seen", "gzsl_harmonic")  # U, S, H

# the recipe; a smoke run (two seeds: the fewest that give a standard deviation)
FULL, FAST = EpochsBudget(epochs=50), EpochsBudget(epochs=1, max_seeds=2)


def compute(ctx: FigureContext) -> Path:
    """Train and evaluate every (data set, row, seed); write the cache (module docstring)."""
    budget = ctx.budget(NAME, FULL, FAST)
    settings = asdict(budget)
    seeds = ctx.seeds[:budget.max_seeds]  # [:None] keeps them all
    choices = ctx.datasets()
    results: dict[str, Any] = {}
    for choice in choices:
        data = ctx.load(choice)
        recipe = TrainConfig(epochs=settings["epochs"], device=ctx.device, progress=ctx.progress)
        rows = {}
        for preset in ROWS:
            config = preset_config(preset, data.attribute_dim, data.feature_dim)
            named = replace(recipe, progress_label=f"{choice.name} · {preset} · seeds {','.join(map(str, seeds))}")
            models, histories = train_seeds(config, data, named, seeds)
            scores = [evaluate(m, data).percent() for m in models]
            summary = {k: mean_std([s[k] for s in scores]) for k in METRICS}
            rows[preset] = {
                "per_seed": [{k: s[k] for k in METRICS} for s in scores],
                "mean": {k: mean for k, (mean, _) in summary.items()},
                "std": {k: std for k, (_, std) in summary.items()},
                "train_seconds": histories[0].seconds,
            }
        results[choice.name] = {"source": choice.source, "rows": rows}
    write_json(ctx.cache_path(NAME), {"results": results, "published": PUBLISHED, "seeds": list(seeds),
                                      "provenance": ctx.provenance(choices, **settings)},
               units={**{f"results.*.rows.*.{part}.{k}": "percent" for part in ("mean", "std") for k in METRICS},
                      **{f"results.*.rows.*.per_seed[].{k}": "percent" for k in METRICS},
                      "results.*.rows.*.train_seconds": "seconds", "published.*.*": "percent"})
    return ctx.cache_path(NAME)


def _epochs(cache: dict[str, Any]) -> str:
    epochs = cache["provenance"]["settings"]["epochs"]
    return f"{epochs} epoch{'s' if epochs != 1 else ''}"


def _cell(row: dict[str, Any], key: str) -> str:
    return format_mean_std(row["mean"][key], row["std"][key])  # the mean alone for one seed (std null)


def published(cache: dict[str, Any], preset: str, name: str) -> tuple[float, float, float] | None:
    """The published U / S / H of ``preset`` on data set ``name``, if it is a real data set
    (real attributes) of the published table; None otherwise."""
    if cache["results"][name]["source"] == "synthetic":
        return None
    return cache["published"].get(preset, {}).get(name)


def table_rows(cache: dict[str, Any]) -> list[dict[str, str]]:
    """One dict per (data set, row): U, S, H as 'mean ± std', and the published U / S / H."""
    out = []
    for name, entry in cache["results"].items():
        for preset, row in entry["rows"].items():
            reference = published(cache, preset, name)
            out.append({
                "dataset": name, "data": entry["source"], "model": label(preset),
                "U": _cell(row, "gzsl_unseen"), "S": _cell(row, "gzsl_seen"), "H": _cell(row, "gzsl_harmonic"),
                "published U / S / H": " / ".join(f"{v:.1f}" for v in reference) if reference else "-",
            })
    return out


def markdown(cache: dict[str, Any]) -> str:
    rows = table_rows(cache)
    header = list(rows[0])
    seeds = cache["seeds"]
    lines = [f"GZSL accuracy (%, per-class mean), mean ± std over seeds {', '.join(map(str, seeds))}, "
             f"{_epochs(cache)}. Published numbers are for real ResNet-101 "
             "features; on synthetic features only the order of the rows is comparable.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(ctx: FigureContext) -> list[Path]:
    """H per ablation row and data set (bars: mean ± std; black ticks: published H),
    plus the Markdown and CSV tables."""
    cache = read_cache(ctx, NAME)
    results = cache["results"]
    names = list(results)
    fig, axes = new_figure(1, 1, panel_width=max(5.5, 1.9 * len(names) + 1.5), panel_height=3.2)
    ax = axes[0, 0]
    width = 0.8 / len(ROWS)
    for i, preset in enumerate(ROWS):
        x = np.arange(len(names)) + (i - (len(ROWS) - 1) / 2) * width
        means = [results[n]["rows"][preset]["mean"]["gzsl_harmonic"] for n in names]
        stds = [results[n]["rows"][preset]["std"]["gzsl_harmonic"] for n in names]
        stds = [np.nan if s is None else s for s in stds]  # one seed: no error bar
        ax.bar(x, means, width * 0.92, yerr=stds, capsize=2, color=color(preset), label=label(preset))
        reference = [(published(cache, preset, n) or (np.nan,) * 3)[2] for n in names]
        if not all(np.isnan(reference)):
            ax.scatter(x, reference, marker="_", s=120, color="black", zorder=3,
                       label="published H" if i == 0 else None)
    ax.set_xticks(np.arange(len(names)), [f"{n}\n({results[n]['source']})".replace(
        "real attributes, synthetic features", "real att., synth. feat.") for n in names])
    ax.set_ylabel("GZSL harmonic mean H (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="x", visible=False)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    seeds = cache["seeds"]
    shown = any(published(cache, preset, n) for preset in ROWS for n in names)
    add_caption(fig, f"mean ± std over seeds {','.join(map(str, seeds))}, {_epochs(cache)}"
                + ("; published H from real features" if shown else "; no published numbers for synthetic data"))
    paths = save_figure(fig, ctx.out, NAME)
    text = markdown(cache)
    paths.append(atomic_write(ctx.out / f"{NAME}.md", lambda f: f.write(text.encode())))
    buffer = io.StringIO()
    rows = table_rows(cache)
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    paths.append(atomic_write(ctx.out / f"{NAME}.csv", lambda f: f.write(buffer.getvalue().encode())))
    return paths

