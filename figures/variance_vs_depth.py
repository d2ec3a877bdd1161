"""Figure 1: prototype and logit variance against embedder depth, without and with CN (V2-V4).

What it shows.  For each data set, at initialization, the prototype variance
``P = E[p_ci^2]`` (over random inits, classes ``c`` and output coordinates ``i``) and the raw
logit variance ``L = E[<z_b, p_c>^2]`` of attribute embedders with ``L_h = 0`` (linear) to 5
hidden ReLU layers, without CN and with CN; and the same two quantities over the first
training steps of a no-CN and a CN model on the first data set.

The claims (docs/science.md section 4, :mod:`variance.prototype_variance`).  With attributes
normalization ``l2_sqrt`` (``||a_c||^2 = d_a``) and the last layer ``V`` drawn with Eq. (10)
(``s_V^2 = 1/(d_in d_z)``):

    V2  linear, p = V a:            P = s_V^2 d_a = 1/d_z,           L = m_z / d_z
    V3  L_h ReLU layers, no CN:     P = 6^{-L_h} / d_z               (PyTorch's hidden init:
                                    each layer keeps d_l s_l^2 / 2 = 1/6 of n_h / d_l)
    V4  CN (S before V):            P = 1/d_z at every depth,        L = m_z / d_z

with ``m_z = mean_b ||z_b||^2`` of the image features used.  The tricks (NS + AN) keep the
variance right for a linear embedder; without CN it collapses geometrically with depth;
class standardization before ``V`` with Eq. (10) restores it.  The NS head does not enter
these quantities (it rescales logits to ``gamma^2 cos``; the variance that collapses is the
one *before* it, which sets the scale of the prototypes and of their gradients).

Models.  The embedders are those of the CN preset (``analysis.model.preset_config("cn")``:
PyTorch-default hidden init, S -> ReLU -> S around the last hidden layer, Eq. (10) for
``V``) with hidden width ``width`` and ``L_h`` hidden layers; "no CN" removes the
standardization and keeps Eq. (10), so the two lines differ only in Eq. (9).  They have
no biases and no output ReLU: the setting of the derivations (a bias adds the same vector to
every prototype, the output ReLU is not part of the claims), so the two trained models are
these configurations at depth ``train_depth`` too, and the training panel starts (step 0,
before any update) near the depth panel's point of that depth.  After the first steps
neither model keeps its init value: Adam moves every weight by about its learning rate
(5e-4) per step, far more than Eq. (10)'s init scale (std ``1/sqrt(d_L d_z)``, 2.2e-5 at
width 1024), so the panel shows how far each model drifts, not a conserved quantity.

Estimators.  ``P`` and ``L`` at init are :func:`variance.prototype_variance.measure_prototype_moments`
(vectorized over ``num_inits`` inits; value and standard error per point), on the seen-class
attributes (the classes of a training step) and ``num_features`` training images.  During
training, :class:`variance.profiler.VarianceRecorder` records, every ``record_every`` steps,
the second moments of the prototypes and of the raw logits on the step's batch; the curves are
means over the first ``num_train_seeds`` seeds of ``ctx.seeds`` (standard errors when several),
trained on ``ctx.device``.

Data: every data set of ``ctx.datasets()`` (synthetic presets, or real attributes with
synthetic or real features); the caption says which.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from analysis.io import write_json
from analysis.model import AttributeEmbedderModel, EmbedderConfig, preset_config
from analysis.normalization import normalize_attributes
from analysis.training import TrainConfig, train
from figures.context import FigureContext, read_cache
from figures.style import add_caption, color, label, new_figure, save_figure
from analysis.estimate import Estimate
from variance.profiler import VarianceRecorder, profile_layers, prototypes_entry
from variance.prototype_variance import (
    final_layer_variances,
    measure_prototype_moments,
    predicted_hidden_norm_sq,
    predicted_prototype_variance,
)

__all__ = ["NAME", "PAPER", "TITLE", "Budget", "budget", "compute", "embedder_config", "plot"]

NAME = "variance_vs_depth"
TITLE = "Logit and prototype variance against embedder depth, without and with CN"
PAPER = "Figure 1"

ATTRIBUTE_NORM = "l2_sqrt"  # AN of the reference recipe: ||a_c||^2 = d_a
MODELS = ("no_cn", "cn")


@dataclass(frozen=True)
class Budget:
    """How much Monte Carlo and training the figure spends (full values; see :data:`FAST`)."""

    max_depth: int = 5  # hidden layers 0 (linear) .. max_depth
    width: int = 1024  # hidden width (the reference model's)
    num_inits: int = 32  # random initializations per point (relative s.e. of P about 1-3 %)
    num_features: int = 64  # training images for the logit variance
    train_depth: int = 2  # hidden layers of the trained models (the reference depth)
    train_epochs: int = 3  # epochs of the recipe (batch 256, Adam 5e-4): the early drift
    record_every: int = 4  # record every n-th training step
    num_train_seeds: int = 2  # seeds trained: the first ones of ctx.seeds


FAST = Budget(width=256, num_inits=8, num_features=32, train_epochs=1, record_every=4, num_train_seeds=1)


def budget(ctx: FigureContext) -> Budget:
    """The full or fast budget, with the entries of ``ctx.extra[NAME]`` replaced.

    Raises:
        ValueError: an unknown entry, or a value that is not a positive integer
            (``max_depth`` and ``train_depth`` may be 0).
    """
    out = ctx.budget(NAME, Budget(), FAST)
    for key, value in asdict(out).items():
        minimum = 0 if key in ("max_depth", "train_depth") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{NAME} budget entry {key} must be an integer >= {minimum}, got {value!r}")
    if out.num_inits < 2 or out.num_features < 1:
        raise ValueError(f"{NAME} needs num_inits >= 2 (a standard error) and num_features >= 1, "
                         f"got {out.num_inits} and {out.num_features}")
    return out


def embedder_config(attribute_dim: int, feature_dim: int, depth: int, width: int, cn: bool) -> EmbedderConfig:
    """The CN preset with ``depth`` hidden layers of ``width``, bias-free, no output ReLU;
    without CN (``cn=False``) only the class standardization is removed (Eq. 10 stays)."""
    return preset_config("cn", attribute_dim, feature_dim, hidden_dims=(width,) * depth,
                         cn_layers=(-1,) if cn and depth > 0 else (), bias=False, output_relu=False)


def _estimate(e: Estimate) -> dict[str, float]:
    return {"value": e.value, "stderr": e.stderr}


def _series(points: list[dict[str, float]]) -> dict[str, list[float]]:
    return {"value": [p["value"] for p in points], "stderr": [p["stderr"] for p in points]}


def _depth_sweep(attributes: Tensor, features: Tensor, b: Budget, generator: torch.Generator) -> dict[str, Any]:
    """P and L (measured and predicted) for depth 0 (linear) and 1..max_depth, no CN and CN."""
    d_a, d_z = attributes.shape[1], features.shape[1]
    n_a = float(attributes.double().pow(2).sum(dim=1).mean())  # = d_a after l2_sqrt
    m_z = float(features.double().pow(2).sum(dim=1).mean())
    out: dict[str, Any] = {"feature_norm_sq": m_z, "attribute_norm_sq": n_a}
    for model in ("linear", *MODELS):
        depths = [0] if model == "linear" else list(range(1, b.max_depth + 1))
        measured_p, measured_l, predicted_p = [], [], []
        for depth in depths:
            cfg = embedder_config(d_a, d_z, depth, b.width, cn=model == "cn")
            moments = measure_prototype_moments(cfg, attributes, features, num_inits=b.num_inits,
                                                chunk=16, generator=generator)
            s_v2, _ = final_layer_variances(cfg)
            # V4: after S, n_h = d_L (up to the eps gap); otherwise the exact ReLU recursion (V2, V3)
            n_h = float(cfg.hidden_dims[-1]) if model == "cn" else predicted_hidden_norm_sq(cfg, n_a)
            measured_p.append(_estimate(moments.prototype))
            measured_l.append(_estimate(moments.logit))
            predicted_p.append(predicted_prototype_variance(s_v2, n_h))
        out[model] = {
            "depths": depths,
            "prototype": _series(measured_p),
            "logit": _series(measured_l),
            "predicted_prototype": predicted_p,
            "predicted_logit": [m_z * p for p in predicted_p],  # L = m_z P (V2-V4)
        }
    return out


def _train_curves(data: Any, b: Budget, seeds: tuple[int, ...], device: str) -> dict[str, Any]:
    """Prototype and raw-logit second moments over training steps, per model, mean over seeds.

    Step 0 is the model before any update (profiled on a seeded batch of ``batch_size``
    training images); step ``s >= 1`` is after the ``s``-th optimizer step, on that step's batch.
    """
    recipe = TrainConfig(epochs=b.train_epochs, attribute_norm=ATTRIBUTE_NORM, device=device, progress=False)
    attributes = normalize_attributes(data.attributes, ATTRIBUTE_NORM)[data.seen_classes]  # [K_s, d_a]
    out: dict[str, Any] = {"dataset": data.name, "depth": b.train_depth, "epochs": b.train_epochs,
                           "record_every": b.record_every, "seeds": list(seeds)}
    for model in MODELS:
        cfg = embedder_config(data.attribute_dim, data.feature_dim, b.train_depth, b.width, cn=model == "cn")
        per_seed: dict[str, list[np.ndarray]] = {"prototype": [], "logit": []}
        steps = np.zeros(0, dtype=np.int64)
        for seed in seeds:
            net = AttributeEmbedderModel(cfg, generator=torch.Generator().manual_seed(seed))
            order = torch.randperm(data.trainval.numel(), generator=torch.Generator().manual_seed(seed))
            first = profile_layers(net, attributes, data.features[data.trainval[order[: recipe.batch_size]]])
            recorder = VarianceRecorder(b.record_every)
            train(net, data, replace(recipe, seed=seed), on_step=recorder)
            arrays = recorder.as_arrays()
            # V's output ("prototypes_pre_activation"; the same as "prototypes" here, without an
            # output ReLU); "logits_raw" is <z_b, p_c> (class-major)
            entry = prototypes_entry(first)
            per_seed["prototype"].append(np.r_[first[entry].second_moment, arrays[entry]["second_moment"]])
            per_seed["logit"].append(np.r_[first["logits_raw"].second_moment, arrays["logits_raw"]["second_moment"]])
            steps = np.r_[0, recorder.steps + 1]  # the recorder runs after each step: record s follows s + 1 updates
        out["steps"] = steps.tolist()
        for key, rows in per_seed.items():
            x = np.stack(rows)  # [seeds, records]
            stderr = x.std(axis=0, ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else np.zeros(x.shape[1])
            out.setdefault(model, {})[key] = {"value": x.mean(axis=0).tolist(), "stderr": stderr.tolist()}
    return out


def compute(ctx: FigureContext) -> Path:
    """Measure every point (module docstring) and write ``ctx.cache_path(NAME)``."""
    b = budget(ctx)
    choices = ctx.datasets()
    datasets: dict[str, Any] = {}
    first = None
    for index, choice in enumerate(choices):
        data = ctx.load(choice)
        if first is None:
            first = data
        # one stream per data set, so adding a data set does not change the others
        g = torch.Generator().manual_seed(1_000 * ctx.seeds[0] + index)
        attributes = normalize_attributes(data.attributes, ATTRIBUTE_NORM)[data.seen_classes]  # [K_s, d_a]
        rows = data.trainval[torch.randperm(data.trainval.numel(), generator=g)[: b.num_features]]
        features = data.features[rows]  # [B, d_z]
        datasets[choice.name] = {
            "source": choice.source, "num_classes": int(attributes.shape[0]),
            "attribute_dim": data.attribute_dim, "feature_dim": data.feature_dim,
            **_depth_sweep(attributes, features, b, g),
        }
        if ctx.progress:
            print(f"  [{NAME}] {choice.name}: depth sweep done")
    train_seeds = ctx.seeds[: b.num_train_seeds]
    training = _train_curves(first, b, train_seeds, ctx.device)
    training["source"] = choices[0].source
    payload = {
        "datasets": datasets,
        "training": training,
        "settings": {"attribute_norm": ATTRIBUTE_NORM, "hidden_init": "pytorch", "final_init": "eq10",
                     "bias": False, "output_relu": False, "cn_placement": "both"},
        "provenance": ctx.provenance(choices, **asdict(b), train_seeds=list(train_seeds)),
    }
    return write_json(ctx.cache_path(NAME), payload)


# --------------------------------------------------------------------------- drawing

_STYLES = {"prototype": dict(marker="o", linestyle="-"), "logit": dict(marker="s", linestyle="--", mfc="white")}
_QUANTITY = {"prototype": r"Var[$p$]", "logit": r"Var[$\langle z,p\rangle$]"}


def _errorbar(ax: Any, x: list[float], series: dict[str, list[float]], model: str, quantity: str,
              prefix: dict[str, list[float]] | None = None) -> None:
    values, stderr = list(series["value"]), list(series["stderr"])
    if prefix is not None:  # start the line at the shared linear point
        values, stderr = prefix["value"] + values, prefix["stderr"] + stderr
    v, e = np.asarray(values), 2 * np.asarray(stderr)
    lower = np.minimum(e, 0.95 * v)  # a log axis cannot show a bar below zero
    ax.errorbar(x, v, yerr=[lower, e], color=color(model), capsize=2, lw=1.4, ms=4, **_STYLES[quantity])


def _depth_panel(ax: Any, name: str, entry: dict[str, Any]) -> None:
    linear = entry["linear"]
    for model in MODELS:
        x = [0, *entry[model]["depths"]]
        for quantity in ("prototype", "logit"):
            predicted = linear[f"predicted_{quantity}"] + entry[model][f"predicted_{quantity}"]
            ax.plot(x, predicted, color="0.55", lw=0.9, linestyle=":", zorder=1)
            _errorbar(ax, x, entry[model][quantity], model, quantity, prefix=linear[quantity])
    for quantity in ("prototype", "logit"):
        ax.plot([0], linear[quantity]["value"], color=color("linear"), ms=7, zorder=5,
                **{k: v for k, v in _STYLES[quantity].items() if k != "linestyle"})
    ax.set_yscale("log")
    ax.set_xticks(range(0, len(entry["cn"]["depths"]) + 1))
    ax.set_xlabel("hidden layers (0 = linear)")
    ax.set_title(f"{name} at init (K={entry['num_classes']}, $d_a$={entry['attribute_dim']})")


def _training_panel(ax: Any, training: dict[str, Any], init_value: float) -> None:
    steps = training["steps"]
    for model in MODELS:
        for quantity in ("prototype", "logit"):
            v = np.asarray(training[model][quantity]["value"])
            e = 2 * np.asarray(training[model][quantity]["stderr"])
            style = _STYLES[quantity]
            ax.plot(steps, v, color=color(model), lw=1.4, linestyle=style["linestyle"])
            if e.any():
                ax.fill_between(steps, np.maximum(v - e, v * 0.05), v + e, color=color(model), alpha=0.2, lw=0)
    ax.axhline(init_value, color="0.55", lw=0.9, linestyle=":")  # V4's init value: where CN starts
    ax.annotate(r"$1/d_z$", (1.0, init_value), xycoords=("axes fraction", "data"), xytext=(-2, 3),
                textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.35")
    ax.set_yscale("log")
    ax.set_xlabel("Adam steps (batches of 256 images)")
    ax.set_ylabel("second moment (dimensionless)")
    ax.set_title(f"training: {training['dataset']}, {training['depth']} hidden layers")


def _legend_handles() -> tuple[list[Any], list[str]]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color(m), lw=2) for m in MODELS]
    labels = [label("no_cn"), "NS + AN + CN"]
    handles.append(Line2D([], [], color=color("linear"), marker="o", lw=0, ms=7))
    labels.append("linear embedder")
    for quantity in ("prototype", "logit"):
        handles.append(Line2D([], [], color="0.2", **_STYLES[quantity]))
        labels.append(_QUANTITY[quantity] + (" (prototype)" if quantity == "prototype" else " (raw logit)"))
    handles.append(Line2D([], [], color="0.55", lw=0.9, linestyle=":"))
    labels.append("prediction (V2-V4)")
    return handles, labels


def _caption(cache: dict[str, Any]) -> str:
    prov = cache["provenance"]
    s = prov["settings"]
    sources = "; ".join(f"{d['name']}: {d['source']}" for d in prov["datasets"])
    return (f"Data: {sources}. At init: {s['num_inits']} inits per point, width {s['width']}, "
            f"{s['num_features']} images, bias-free, Eq. 10 last layer, AN l2_sqrt; bars ±2 s.e. "
            f"Training: {s['train_epochs']} epoch(s), seeds {s['train_seeds']}, every {s['record_every']} steps."
            + (" [fast budget]" if prov["fast"] else ""))


def plot(ctx: FigureContext) -> list[Path]:
    """Draw ``NAME.png``/``NAME.pdf`` from the cache (a FileNotFoundError if it is missing)."""
    cache = read_cache(ctx, NAME)
    names = list(cache["datasets"])
    panels = len(names) + 1
    ncols = 2 if panels == 4 else min(3, panels)  # 2 x 2 rather than 2 x 3 with two empty slots
    nrows = math.ceil(panels / ncols)
    fig, axes = new_figure(nrows, ncols, panel_width=3.3, panel_height=2.7, sharey=False)
    flat = axes.ravel()
    for i, (ax, name) in enumerate(zip(flat, names)):
        _depth_panel(ax, name, cache["datasets"][name])
        if i % ncols == 0:
            ax.set_ylabel("variance (dimensionless)")
    d_z = cache["datasets"][cache["training"]["dataset"]]["feature_dim"]  # trained on the first data set
    _training_panel(flat[len(names)], cache["training"], 1.0 / d_z)
    for ax in flat[panels:]:
        ax.set_visible(False)
    handles, labels = _legend_handles()
    fig.legend(handles, labels, loc="outside upper center", ncols=3, fontsize=8.5)
    add_caption(fig, textwrap.fill(_caption(cache), width=int(fig.get_figwidth() * 15)))
    return save_figure(fig, ctx.out, NAME)
