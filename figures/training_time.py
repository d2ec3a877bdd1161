"""Training time of the reference recipe per data set (§8.2), beside the paper's 20-30 s.

What is measured: for every data set of the run, one training run of the reference model
(preset ``cn``) with the reference recipe (batch 256; :func:`analysis.training.train`,
which captures whole epochs as CUDA graphs on a GPU and runs the plain loop on the CPU),
data already on the device, evaluation excluded, timed **epoch by epoch**
(``History.epoch_seconds``: wall time, device synchronized).  The bar is

    seconds per recipe = median(epoch_seconds) x 50,

and its whiskers the interquartile range of the epochs (numpy's linear percentiles 25
and 75) x 50.  The median, not the total of one epoch x 50, so that a warm-up epoch or a
burst of load from another process moves the bar by one epoch's share at most; the
whiskers show how much the epochs disagreed, i.e. how steady the machine was.  The full
budget times all 50 epochs of the recipe; ``--fast`` times 3 (the figure says so).

The cost of one epoch is ``ceil(n / 256)`` steps, each one pass of the batch and of all
``K_s`` seen-class attribute vectors through the model, so in expectation it grows with
the ``trainval`` images ``n`` and with ``K_s`` (both printed under each bar): AWA1
(19 832 images, 40 classes) costs less than AWA2 (23 527 images, 40 classes), SUN (645
classes) more than its image count alone says.  A wall-clock time is only meaningful with
the conditions it was taken under, so the cache records them (``conditions``: CPU count,
CPUs this process may use, torch threads, the device, the 1-minute load average at the
start and at the end, the date) and the caption prints them.  The paper's 20-30 s per
data set on one GPU (docs/science.md section 8.2) is one range for every data set, drawn
as a band across the panel; a CPU is not the paper's setting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from analysis.io import utc_timestamp, write_json
from analysis.model import preset_config
from analysis.training import TrainConfig, build_model, resolve_device, train
from figures.context import EpochsBudget, FigureContext, read_cache
from figures.style import add_caption, color, new_figure, save_figure

__all__ = ["FAST", "FULL", "NAME", "PAPER", "PUBLISHED_SECONDS", "RECIPE_EPOCHS", "TITLE", "compute",
           "draw", "load_average", "machine_conditions", "plot", "recipe_seconds"]

NAME = "training_time"
TITLE = "Seconds per training run of the reference recipe, beside the published 20-30 s"
PAPER = "§8.2 training time"  # docs/science.md section 8.2

PUBLISHED_SECONDS = (20.0, 30.0)  # docs/science.md section 8.2: per data set, one GPU
RECIPE_EPOCHS = 50
# full: every epoch of the recipe; fast: 3 epochs, so the median drops one warm-up epoch
FULL, FAST = EpochsBudget(epochs=RECIPE_EPOCHS), EpochsBudget(epochs=3)


def recipe_seconds(epoch_seconds: Sequence[float], epochs: int = RECIPE_EPOCHS) -> dict[str, float]:
    """The time of an ``epochs``-epoch run estimated from measured epochs.

    ``median = median(t) * epochs``, ``low = q25(t) * epochs``, ``high = q75(t) * epochs``
    for the per-epoch wall times ``t`` (numpy's linear percentiles).

    Args:
        epoch_seconds: the measured seconds of each epoch (at least one, finite, >= 0).
        epochs: the epochs of the run to estimate.

    Returns:
        ``{"median": ..., "low": ..., "high": ...}`` in seconds; ``low <= median <= high``.

    Raises:
        ValueError: no epoch, a negative or non-finite time, or ``epochs < 1``.

    Example: ``recipe_seconds([3.0, 1.0, 2.0], 50)`` is ``{"median": 100.0, "low": 75.0, "high": 125.0}``.
    """
    times = [float(t) for t in epoch_seconds]
    if not times:
        raise ValueError("recipe_seconds needs the seconds of at least one epoch, got none")
    bad = [t for t in times if not math.isfinite(t) or t < 0]
    if bad:
        raise ValueError(f"epoch times must be finite and >= 0 seconds, got {bad}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    low, median, high = np.percentile(np.asarray(times, dtype=np.float64), [25, 50, 75])
    return {"median": float(median) * epochs, "low": float(low) * epochs, "high": float(high) * epochs}


def load_average() -> float | None:
    """The 1-minute load average (``os.getloadavg()[0]``); None where the platform has none."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # Windows has no getloadavg; OSError: not obtainable
        return None


def machine_conditions(device: torch.device) -> dict[str, Any]:
    """What a wall-clock time depends on besides the code: CPUs, threads, device, date."""
    try:
        usable = len(os.sched_getaffinity(0))  # CPUs this process may run on (a container may limit them)
    except AttributeError:  # not on every platform
        usable = os.cpu_count()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"cpu_count": os.cpu_count(), "usable_cpus": usable, "torch_threads": torch.get_num_threads(),
            "device": str(device), "device_name": name, "started": utc_timestamp()}


def compute(ctx: FigureContext) -> Path:
    settings = asdict(ctx.budget(NAME, FULL, FAST))
    device = resolve_device(ctx.device)
    choices = ctx.datasets()
    conditions = machine_conditions(device)
    conditions["load_average_1min_start"] = load_average()
    runs = {}
    for choice in choices:
        data = ctx.load(choice)
        model = build_model(preset_config("cn", data.attribute_dim, data.feature_dim), ctx.seeds[0])
        config = TrainConfig(epochs=settings["epochs"], seed=ctx.seeds[0], device=ctx.device, progress=ctx.progress)
        history = train(model, data, config)
        estimate = recipe_seconds(history.epoch_seconds, RECIPE_EPOCHS)
        n = int(data.trainval.numel())
        runs[choice.name] = {
            "source": choice.source, "epochs": settings["epochs"], "seconds": history.seconds,
            "epoch_seconds": [float(t) for t in history.epoch_seconds],
            "seconds_per_recipe": estimate["median"],
            "seconds_per_recipe_iqr": [estimate["low"], estimate["high"]],
            "extrapolated": settings["epochs"] != RECIPE_EPOCHS, "path": history.path,
            "trainval_images": n, "seen_classes": int(data.seen_classes.numel()),
            "steps_per_epoch": -(-n // config.batch_size),
        }
    conditions["load_average_1min_end"] = load_average()
    write_json(ctx.cache_path(NAME), {"runs": runs, "recipe_epochs": RECIPE_EPOCHS, "conditions": conditions,
                                      "device": str(device), "device_name": conditions["device_name"],
                                      "published_seconds": PUBLISHED_SECONDS,
                                      "provenance": ctx.provenance(choices, **settings)},
               units={"runs.*.seconds": "seconds", "runs.*.epoch_seconds": "seconds",
                      "runs.*.seconds_per_recipe": "seconds", "runs.*.seconds_per_recipe_iqr": "seconds",
                      "published_seconds": "seconds"})
    return ctx.cache_path(NAME)


def _conditions_text(conditions: dict[str, Any]) -> str:
    """``CPU, 2 threads of 2 CPUs, load average 3.1 -> 3.4 (1 min, start -> end), 2026-11-30``."""
    def load(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    usable = conditions["usable_cpus"]
    cpus = f"{usable} usable of {conditions['cpu_count']} CPUs" if usable != conditions["cpu_count"] \
        else f"{conditions['cpu_count']} CPUs"
    return (f"{conditions['device_name']}, {conditions['torch_threads']} torch thread{'s' if conditions['torch_threads'] != 1 else ''}, {cpus}, load average "
            f"{load(conditions['load_average_1min_start'])} -> {load(conditions['load_average_1min_end'])} "
            f"(1 min, start -> end), {conditions['started'][:10]}")


def plot(ctx: FigureContext) -> list[Path]:
    """Draw the cache of :func:`compute` (:func:`draw`) to ``NAME.png`` and ``NAME.pdf``.

    Raises:
        FileNotFoundError: no cache (compute it first).
        ValueError: the cache predates the measurement conditions (recompute it).
    """
    cache = read_cache(ctx, NAME)
    if "conditions" not in cache or "recipe_epochs" not in cache:
        raise ValueError(f"{ctx.cache_path(NAME)} has no measurement conditions (written by an older version); "
                         f"recompute it with `cnzsl figures --only {NAME} --out {ctx.out} --overwrite`")
    return save_figure(draw(cache), ctx.out, NAME)


def draw(cache: dict[str, Any]) -> Figure:
    """The figure of a cache of :func:`compute`: one bar per data set (median epoch x 50, whiskers
    the interquartile range x 50), the published range as a band, the conditions in the caption.
    The legend lists exactly the bars, the whiskers and the band."""
    runs, recipe = cache["runs"], cache["recipe_epochs"]
    names = list(runs)
    fig, axes = new_figure(1, 1, panel_width=max(5.5, 1.4 * len(names)), panel_height=3.8)
    ax = axes[0, 0]
    x = np.arange(len(names))
    seconds = np.array([runs[n]["seconds_per_recipe"] for n in names])
    iqr = np.array([runs[n]["seconds_per_recipe_iqr"] for n in names]).reshape(len(names), 2)
    epochs = sorted({runs[n]["epochs"] for n in names})
    measured = "/".join(str(e) for e in epochs)
    bars = ax.bar(x, seconds, 0.6, color=color("cn"), zorder=2,
                  label=f"this toolkit, {cache['device_name']}: median epoch x {recipe} ({measured} epochs timed)")
    whiskers = ax.errorbar(x, seconds, yerr=np.abs(iqr.T - seconds), fmt="none", ecolor="black", capsize=4, lw=1,
                           zorder=3, label=f"interquartile range of the epochs x {recipe}")
    for xi, s, top in zip(x, seconds, iqr[:, 1]):
        ax.annotate(f"{s:.0f} s", (xi, max(s, top)), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    # The published 20-30 s is one range for every data set: a band across the panel, drawn
    # above the bars (hatched, outlined) so it stays visible where a bar covers it.
    low, high = cache["published_seconds"]
    band = ax.axhspan(low, high, facecolor="0.5", alpha=0.3, edgecolor="black", hatch="xx", lw=0.8, zorder=4,
                      label=f"published: {low:.0f}-{high:.0f} s per data set on one GPU (§8.2)")
    handles = [bars, whiskers, band]  # exactly what is drawn, nothing else
    ax.set_xticks(x, [f"{n}\n{runs[n]['trainval_images']} img.\n{runs[n]['seen_classes']} classes" for n in names])
    ax.set_ylabel(f"seconds per {recipe}-epoch run")
    ax.set_ylim(0, max(float(np.max(iqr)), float(np.max(seconds)), high) * 1.18)
    ax.grid(axis="x", visible=False)
    # above the panel (the caption takes the bottom margin): constrained layout makes room for it
    fig.legend(handles=handles, labels=[h.get_label() for h in handles], loc="outside upper center", fontsize=8,
               ncol=1)
    by_source: dict[str, list[str]] = {}
    for n in names:
        by_source.setdefault(runs[n]["source"], []).append(n)
    sources = "; ".join(f"{', '.join(group)}: {source}" for source, group in by_source.items())
    fast = " (--fast)" if cache["provenance"].get("fast") else ""
    timed = (f"{measured} of {recipe} epochs timed{fast}" if any(runs[n]["extrapolated"] for n in names)
             else f"all {recipe} epochs timed")
    add_caption(fig, f"reference CN model, batch 256, {cache['device']} ({runs[names[0]]['path']} loop); {timed}, "
                f"bar = median epoch x {recipe}\n" + _conditions_text(cache["conditions"]) + f"\n{sources}")
    return fig
