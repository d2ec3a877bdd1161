"""Training time of the reference recipe per data set, beside the paper's 20-30 s.

For every data set of the run, one training run of the reference model (preset ``cn``)
with the reference recipe (50 epochs, batch 256; :func:`analysis.training.train`, which
captures whole epochs as CUDA graphs on a GPU and runs the plain loop on the CPU) is
timed, data already on the device, evaluation excluded.  The paper claims 20-30 s per
data set on one GPU (docs/science.md section 8.2) against 25 min to 3 hours for competing
methods.  The bar says which device produced it; a CPU is not the paper's setting, and
the caption says so.  With a small epoch budget (``--fast``) the bar is the measured
time per epoch times 50, labelled as extrapolated.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from analysis.model import preset_config
from analysis.training import TrainConfig, build_model, resolve_device, train
from analysis.io import write_json
from figures.context import EpochsBudget, FigureContext, read_cache
from figures.style import add_caption, color, new_figure, save_figure

NAME = "training_time"
TITLE = "Seconds per training run of the reference recipe, beside the published 20-30 s"
PAPER = "§8.2 training time"  # docs/science.md section 8.2

PUBLISHED_SECONDS = (20.0, 30.0)  # docs/science.md section 8.2, one GPU
RECIPE_EPOCHS = 50
FULL, FAST = EpochsBudget(epochs=50), EpochsBudget(epochs=1)  # the recipe; a smoke run


def compute(ctx: FigureContext) -> Path:
    settings = asdict(ctx.budget(NAME, FULL, FAST))
    device = resolve_device(ctx.device)
    choices = ctx.datasets()
    runs = {}
    for choice in choices:
        data = ctx.load(choice)
        model = build_model(preset_config("cn", data.attribute_dim, data.feature_dim), ctx.seeds[0])
        history = train(model, data, TrainConfig(epochs=settings["epochs"], seed=ctx.seeds[0], device=ctx.device,
                                                 progress=ctx.progress))
        runs[choice.name] = {
            "source": choice.source, "epochs": settings["epochs"], "seconds": history.seconds,
            "seconds_per_recipe": history.seconds * RECIPE_EPOCHS / settings["epochs"],
            "extrapolated": settings["epochs"] != RECIPE_EPOCHS, "path": history.path,
            "trainval_images": int(data.trainval.numel()), "seen_classes": int(data.seen_classes.numel()),
        }
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    write_json(ctx.cache_path(NAME), {"runs": runs, "device": str(device), "device_name": name,
                                      "published_seconds": PUBLISHED_SECONDS,
                                      "provenance": ctx.provenance(choices, **settings)},
               units={"runs.*.seconds": "seconds", "runs.*.seconds_per_recipe": "seconds",
                      "published_seconds": "seconds"})
    return ctx.cache_path(NAME)


def plot(ctx: FigureContext) -> list[Path]:
    cache = read_cache(ctx, NAME)
    runs = cache["runs"]
    names = list(runs)
    fig, axes = new_figure(1, 1, panel_width=max(5.0, 1.3 * len(names)), panel_height=3.2)
    ax = axes[0, 0]
    seconds = [runs[n]["seconds_per_recipe"] for n in names]
    extrapolated = any(runs[n]["extrapolated"] for n in names)
    bars = ax.bar(np.arange(len(names)), seconds, 0.6, color=color("cn"),
                  label=f"this toolkit, {cache['device_name']}" + (" (extrapolated)" if extrapolated else ""))
    if extrapolated:
        for bar in bars:
            bar.set_hatch("//")
    for x, s in enumerate(seconds):
        ax.annotate(f"{s:.0f} s", (x, s), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    low, high = cache["published_seconds"]
    ax.axhspan(low, high, color="0.6", alpha=0.35, label=f"published: {low:.0f}-{high:.0f} s on one GPU")
    ax.set_xticks(np.arange(len(names)),
                  [f"{n}\n{runs[n]['trainval_images']} img." for n in names])
    ax.set_ylabel("seconds per 50-epoch run")
    ax.set_ylim(0, max(max(seconds), high) * 1.15)
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), fontsize=8, ncol=2)
    epochs = {runs[n]["epochs"] for n in names}
    by_source: dict[str, list[str]] = {}
    for n in names:
        by_source.setdefault(runs[n]["source"], []).append(n)
    sources = "; ".join(f"{', '.join(group)}: {source}" for source, group in by_source.items())
    add_caption(fig, f"reference CN model, batch 256, {cache['device']} ({runs[names[0]]['path']} loop); "
                + (f"measured over {min(epochs)} epoch(s), x{RECIPE_EPOCHS // min(epochs)}; " if extrapolated else "")
                + sources)
    return save_figure(fig, ctx.out, NAME)
