"""The two views of ``probe.json``: one Markdown comparison table and one page of plots.

Both read only the payload that :func:`figures.probe.run_probe` writes, so they can be
redrawn from the JSON alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import seaborn as sns
import torch

from figures.style import MODEL_COLORS, add_caption, new_figure
from landscape.slices import Slice2D, plot_slice_2d
from landscape.spectral_density import SpectralDensity, plot_spectral_density

__all__ = ["model_colors", "probe_figure", "probe_markdown"]


def model_colors(labels: list[str]) -> dict[str, Any]:
    """One colour per model: the shared colour of a preset, fresh colour-blind ones for the rest."""
    spare = iter([sns.color_palette("colorblind", 10)[i] for i in (5, 9, 1, 4)] + sns.color_palette("dark", 10))
    return {label: MODEL_COLORS[label] if label in MODEL_COLORS else next(spare) for label in labels}


def _pm(pair: list[float] | tuple[float, float], digits: int = 3) -> str:
    value, err = pair
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g} ± {err:.1g}"


def _ratio(pair: list[float], scale: float) -> str:
    return _pm([pair[0] * scale, pair[1] * scale])


def _metric(training: dict[str, Any], key: str) -> str:
    mean, std = training["mean_std"][key]
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"  # std None (null): one seed


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


def probe_markdown(payload: dict[str, Any]) -> str:
    """``probe.md``: one row per model, the columns a paper draft needs, and what produced them."""
    data, s = payload["data"], payload["settings"]
    d_z = data["feature_dim"]
    lines = [
        f"# `cnzsl probe`: {data['name']} ({data['source']} data)",
        "",
        "| model | parameters | P·d_z at init | class var.·d_z at init | ZSL-U | GZSL-U | GZSL-S | GZSL-H | AUSUC "
        "| λ_max | tr(H) ± se | median ‖g‖ along training | median β along training | pure |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    notes = []
    for label, m in payload["models"].items():
        init, tr, sp = m["init"], m["training"], m["spectrum"]
        pred = init["predictions"]
        moment = _ratio(init["prototypes"]["second_moment"], d_z)
        spread = _ratio(init["prototypes"]["class_variance"], d_z)
        if pred is not None and pred["second_moment"] is not None:
            moment += f" (V4: {pred['second_moment'] * d_z:.3g})"
        if pred is not None and pred["class_variance"] is not None:
            spread += f" (V4: {pred['class_variance'] * d_z:.3g})"
        traj = m["trajectory"]
        lines.append(
            f"| {label} | {m['parameters']:,} | {moment} | {spread} | "
            + " | ".join(_metric(tr, k) for k in ("zsl_unseen", "gzsl_unseen", "gzsl_seen", "gzsl_harmonic", "ausuc"))
            + f" | {sp['top_eigenvalues'][0]:.3g} | {_pm(sp['trace'])} | "
            f"{_median([r['gradient_norm'] for r in traj]):.3g} | {_median([r['effective_beta'] for r in traj]):.3g} | "
            f"{'yes' if m['pure']['all'] else 'NO'} |"
        )
        if init.get("prototypes_entry") == "prototypes":
            notes.append(f"{label}: P and class var. measured on prototypes(), after any output activation (the "
                         f"model has no pre_activation_prototypes() method)")
        if pred is None:
            notes.append(f"{label}: no prediction (the V2-V4 claims need the init law of the last linear layer)")
        elif pred["second_moment"] is None:
            notes.append(f"{label}: no prediction (no normalization right before the last layer: by V3 the scale "
                         f"depends on depth, init and the attributes)")
        if not sp["lanczos_converged"]:
            notes.append(f"{label}: Lanczos stopped at its step limit before every top-{len(sp['top_eigenvalues'])} "
                         f"residual met the tolerance; λ_max residual {sp['residuals'][0]:.2g}")
    seeds = s["seeds"]
    lines += [
        "",
        f"Init: {s['init_seeds']} random inits, mean ± standard error; P is the second moment and class var. the "
        f"variance across the {data['num_seen_classes']} seen classes of the pre-activation prototypes (the profile entry "
        f"prototypes_pre_activation: V's output before the output ReLU), times d_z = {d_z} "
        f"(1 is the scale a linear classifier with the NS trick gets); V4 gives the prediction where the claim applies. "
        f"Training: the paper's recipe, {s['epochs']} epochs, "
        + (f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over seeds {', '.join(map(str, seeds))}")
        + f"; accuracies in percent. Curvature at the trained point (seed {seeds[0]}, {s['probe_samples']} trainval "
        f"samples, statistics of the classes passed in, dropout off): λ_max by Lanczos, trace by Hutchinson "
        f"({s['trace_probes']} probes). Along training every {s['probe_every']} steps on the step's batch.",
    ]
    if data["source"] != "real":
        lines += ["", f"Data: {data['source']} ({data['name']} preset): a stand-in for real ResNet features, "
                  "not comparable with published accuracies."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def probe_figure(payload: dict[str, Any]):
    """One page: variance by layer at init, the three trajectories, the spectral densities
    and the 2-D slice of every model, one colour per model."""
    models = payload["models"]
    labels = list(models)
    colors = model_colors(labels)
    ncols = max(4, len(labels) + 1)
    fig, axes = new_figure(2, ncols, panel_width=3.2, panel_height=2.8)
    for ax in axes[0, 4:]:
        ax.axis("off")
    # (a) variance by layer at init: class variance of each recorded activation, by relative depth
    ax = axes[0, 0]
    for label, m in models.items():
        layers = [layer for layer in m["init"]["layers"] if not layer["name"].startswith("logits")]
        values = np.array([layer["class_variance"] for layer in layers])
        depth = np.linspace(0, 1, len(layers))
        ax.errorbar(depth, values[:, 0], yerr=values[:, 1], color=colors[label], marker="o", markersize=3,
                    label=label, capsize=2)
    ax.axhline(1 / payload["data"]["feature_dim"], color="black", linestyle=":", linewidth=1, label="1/d_z")
    ax.set(yscale="log", xlabel="relative depth (input → prototypes)", ylabel="class variance at init",
           title="variance by layer at init")
    # (b-d) trajectories
    for ax, (key, title) in zip(axes[0, 1:4], [("gradient_norm", "gradient norm ‖g‖"),
                                               ("top_eigenvalue", "top Hessian eigenvalue"),
                                               ("effective_beta", "effective β-smoothness")]):
        for label, m in models.items():
            steps = [r["step"] for r in m["trajectory"]]
            ax.plot(steps, [r[key] for r in m["trajectory"]], color=colors[label], marker="o", markersize=2.5,
                    label=label)
        ax.set(yscale="log", xlabel="training step", title=title)
    # (e) spectral densities
    ax = axes[1, 0]
    for label, m in models.items():
        d = m["spectrum"]["density"]
        density = SpectralDensity(torch.tensor(d["nodes"], dtype=torch.float64),
                                  torch.tensor(d["weights"], dtype=torch.float64), 0)
        plot_spectral_density(density, ax, label=None)
        ax.lines[-1].set_color(colors[label])
    top = max(line.get_ydata()[np.isfinite(line.get_ydata())].max() for line in ax.lines)
    ax.set_ylim(top * 1e-6, top * 3)  # SLQ's broadened quadrature rings far below the bulk
    ax.set_title("spectral density (SLQ)")
    # (f...) slices
    for ax, (label, m) in zip(axes[1, 1:], models.items()):
        sl = m["spectrum"]["slice"]
        plot_slice_2d(Slice2D(torch.tensor(sl["alphas"]), torch.tensor(sl["betas"]), torch.tensor(sl["losses"])),
                      ax, levels=12)
        ax.set_title(f"slice: {label}", color=colors[label], fontsize=9)
    for ax in axes[1, len(labels) + 1:]:
        ax.axis("off")
    handles, names = axes[0, 1].get_legend_handles_labels()
    fig.legend(handles + axes[0, 0].get_legend_handles_labels()[0][:1], names + ["1/d_z"], loc="outside upper center",
               ncols=len(labels) + 1, frameon=False)
    data, s = payload["data"], payload["settings"]
    add_caption(fig, f"{data['name']} ({data['source']} data) · {s['epochs']} epochs · seed {s['seeds'][0]} · "
                f"{s['init_seeds']} inits · probes on {s['probe_samples']} samples, statistics of the classes passed in")
    return fig
