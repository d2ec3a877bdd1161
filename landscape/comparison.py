"""The paper's loss-surface comparison (docs/science.md section 5.1): a traditional classifier,
the ZSL MLP without CN and the ZSL MLP with CN, trained on the same data.

"ZSL models have a more irregular loss surface than traditional classifiers, and CN
partially remedies this."  :func:`run_landscape` trains the three models with the
paper's recipe and, every ``probe_every`` steps, on that step's batch and at the
parameters after the step, records

    gradient norm          ||grad L(theta_t)||
    top eigenvalue         largest algebraic eigenvalue of the Hessian (Lanczos on exact
                           Hessian-vector products, relative residual <= lanczos_tol)
    effective beta         max_eta ||grad L(theta) - grad L(theta - eta g)|| / ||eta g||
                           (Santurkar et al. 2018), eta in lr x {0.5, 1, 2, 4, ...}

then a final 2-D loss slice of each model along two filter-normalized random directions
(Li et al. 2018) on a fixed subset of ``trainval``.  The probes are pure and draw their
random start vectors and directions from their own generators, so the three training
trajectories are exactly those of runs without probes.  CN layers are probed in training
mode with the statistics of the classes passed in, never updating running statistics.

The cost is set by the budget entries of :class:`LandscapeRun` (:mod:`landscape.budget`:
the default and ``--fast``); before training, each model's unit costs are measured on a
copy of it and the expected time is passed to ``announce`` (``cnzsl landscape`` prints it).

Outputs in ``out``: ``landscape.json`` (config with the resolved budget, environment, the
estimate against the measured time, per model: trajectory, slice, summary; losses in
nats, times in seconds, as its ``units`` say), ``trajectories.png`` and ``slices.png``,
drawn in the style of the paper figures (:mod:`analysis.plot_style`: each model in its
figure colour, units on every axis, the legend above the panels, the slices on one colour
scale shared by the panels, a caption naming the data, the settings and the commit).
Nothing existing is overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from analysis.data import ZSLData
from analysis.datasets import canonical_dataset_name, load_dataset
from analysis.io import check_output_folder, environment_info, write_json, write_png
from analysis.output_folder import OutputFolder
from analysis.model import ClassifierConfig, preset_config
from analysis.training import StepInfo, TrainConfig, build_model, resolve_device, train
from landscape.budget import DEFAULT_BUDGET, LandscapeEstimate, expected_seconds, measure_unit_costs, work_counts
from landscape.hvp import HessianOperator
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Batch, Objective, zsl_batches
from landscape.santurkar import santurkar_measure
from landscape.slices import filter_normalized_direction, loss_slice_2d, plot_slice_panels

__all__ = ["MODEL_KINDS", "STYLE_NAMES", "TRAJECTORY_QUANTITIES", "UNITS", "LandscapeRun", "TrajectoryProbe",
           "model_config", "run_landscape"]

MODEL_KINDS = ("classifier", "mlp", "cn")
# each kind's name in analysis.plot_style (colour, label), the names of the paper figures
STYLE_NAMES = {"classifier": "classifier", "mlp": "zsl_mlp", "cn": "zsl_cn"}
OUTPUT_FILES = ("landscape.json", "trajectories.png", "slices.png")
_LABELS = {"classifier": "traditional classifier", "mlp": "ZSL MLP (no CN)", "cn": "ZSL MLP + CN"}  # = plot_style's
# probe record key -> (panel title, y label with its unit); the loss is in nats, theta dimensionless
TRAJECTORY_QUANTITIES = {
    "gradient_norm": ("gradient norm", "‖∇L‖ (nats per unit θ)"),
    "top_eigenvalue": ("top Hessian eigenvalue", "λ_max(∇²L) (nats per unit θ²)"),
    "effective_beta": ("effective β-smoothness", "β_eff (nats per unit θ²)"),
}
UNITS = {  # of landscape.json (analysis.io.write_json); curvatures are in loss units, not listed
    "models.*.summary.final_train_loss": "nats", "models.*.summary.train_seconds": "seconds",
    "models.*.trajectory[].loss": "nats", "models.*.trajectory[].loss_min": "nats",
    "models.*.trajectory[].loss_max": "nats", "models.*.trajectory[].seconds": "seconds",
    "models.*.slice.losses": "nats", "estimate.expected_seconds": "seconds", "estimate.seconds": "seconds",
    "estimate.unit_seconds.*.*": "seconds",
}


@dataclass(frozen=True)
class LandscapeRun:
    """Everything ``cnzsl landscape`` needs (module docstring)."""

    out: Path
    dataset: str = "AWA2"
    data_root: Path | None = None  # GBU root; None: synthetic preset
    synthetic_features: bool = False
    data_seed: int = 0
    epochs: int = DEFAULT_BUDGET["epochs"]
    seed: int = 1  # initial weights, shuffles; probes use seed + 1
    device: str = "auto"
    models: tuple[str, ...] = MODEL_KINDS
    probe_every: int = DEFAULT_BUDGET["probe_every"]  # steps between probes
    lanczos_tol: float = 1e-3
    lanczos_max_steps: int = DEFAULT_BUDGET["lanczos_max_steps"]  # Krylov limit of each top-eigenvalue run
    eta_multipliers: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # x the learning rate
    slice_points: int = DEFAULT_BUDGET["slice_points"]  # per axis
    slice_range: float = 1.0  # alpha, beta in [-range, range]
    slice_samples: int = DEFAULT_BUDGET["slice_samples"]  # trainval samples the slices are evaluated on
    fast: bool = False  # recorded only: the budget entries above are what ran
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", check_output_folder(self.out))
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        object.__setattr__(self, "models", tuple(self.models))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if unknown or not self.models:
            raise ValueError(f"unknown model kind(s) {unknown or self.models}; choose from {', '.join(MODEL_KINDS)}")
        for name in ("epochs", "probe_every", "slice_points", "slice_samples", "lanczos_max_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.slice_points < 2:
            raise ValueError(f"--slice-points must be at least 2 (a 2-D slice needs two points per axis), "
                             f"got {self.slice_points}")
        if not (self.slice_range > 0 and self.lanczos_tol > 0):
            raise ValueError(f"slice_range and lanczos_tol must be positive, got {self.slice_range}, {self.lanczos_tol}")


@dataclass
class TrajectoryProbe:
    """``train(on_step=probe)`` callback: gradient norm, top Hessian eigenvalue and
    effective beta every ``every`` steps, on the step's batch (module docstring)."""

    every: int
    etas: tuple[float, ...]
    lanczos_tol: float = 1e-3
    lanczos_max_steps: int = 40
    seed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(self.seed)  # Lanczos start vectors

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every:
            return
        start = time.perf_counter()
        objective = Objective(info.model)
        batch = Batch(info.features, info.targets, info.attributes)
        theta = objective.params()
        m = santurkar_measure(objective, batch, self.etas, params=theta)
        hessian = HessianOperator(objective, [batch], theta)
        top = lanczos_top_eigenvalues(hessian.matvec, objective.num_parameters, k=1, tol=self.lanczos_tol,
                                      max_steps=self.lanczos_max_steps, generator=self._generator,
                                      dtype=objective.dtype, device=objective.device)
        self.records.append({
            "step": info.step, "epoch": info.epoch, "loss": m.loss, "gradient_norm": m.gradient_norm,
            "top_eigenvalue": float(top.eigenvalues[0]), "lanczos_converged": bool(top.converged),
            "lanczos_matvecs": int(top.num_matvecs), "effective_beta": m.effective_beta,
            "loss_min": float(m.losses.min()), "loss_max": float(m.losses.max()),
            "seconds": time.perf_counter() - start,
        })

    def series(self, key: str) -> list[float]:
        return [r[key] for r in self.records]


def model_config(kind: str, data: ZSLData) -> ClassifierConfig | Any:
    """The configuration of model ``kind`` (one of :data:`MODEL_KINDS`) for ``data``: the
    traditional classifier over the seen classes, or the embedder preset of that name.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    if kind == "classifier":
        return ClassifierConfig(num_classes=int(data.seen_classes.numel()), feature_dim=data.feature_dim)
    return preset_config(kind, data.attribute_dim, data.feature_dim)


def _summary(probe: TrajectoryProbe) -> dict[str, float]:
    finite = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    betas = finite(probe.series("effective_beta"))
    return {
        "median_gradient_norm": statistics.median(probe.series("gradient_norm")),
        "max_top_eigenvalue": max(probe.series("top_eigenvalue")),
        "median_effective_beta": statistics.median(betas) if betas else math.nan,
        "probes": len(probe.records),
    }


def _trajectory_figure(results: dict[str, dict[str, Any]], caption: str, batch_size: int):
    """Gradient norm, top eigenvalue and effective beta against the step, one line per model
    in its plot_style colour; a log axis where a panel spans more than a decade; the legend
    above the panels."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from analysis.plot_style import add_caption, color, label, legend_outside, log_axis, new_figure

    fig, axes = new_figure(1, len(TRAJECTORY_QUANTITIES), panel_width=3.3, panel_height=2.9)
    for ax, (key, (title, ylabel)) in zip(axes[0], TRAJECTORY_QUANTITIES.items()):
        values = []
        for kind, result in results.items():
            steps = [r["step"] for r in result["trajectory"]]
            series = [r[key] for r in result["trajectory"]]
            ax.plot(steps, series, marker="o", markersize=3, color=color(STYLE_NAMES[kind]),
                    label=label(STYLE_NAMES[kind]))
            values.extend(series)
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        if finite.size and finite.max() / finite.min() > 10:
            log_axis(ax, finite.min(), finite.max())
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
        ax.set(title=title, xlabel=f"training step (batches of {batch_size})", ylabel=ylabel)
    legend_outside(fig, axes[0, 0])
    add_caption(fig, caption)
    return fig


def _slice_figure(slices: dict[str, Any], caption: str):
    """The final 2-D slices of the models on one shared log colour scale, one colour bar
    (:func:`landscape.slices.plot_slice_panels`), titles in the models' colours."""
    from analysis.plot_style import add_caption, label, new_figure, text_color

    fig, axes = new_figure(1, len(slices), panel_width=2.9, panel_height=2.9)
    names = [STYLE_NAMES[kind] for kind in slices]
    plot_slice_panels(list(slices.values()), axes[0], titles=[label(n) for n in names],
                      title_colors=[text_color(n) for n in names])
    add_caption(fig, caption)
    return fig


def _captions(run: LandscapeRun, data: ZSLData, samples: int, commit: str | None) -> tuple[str, str]:
    """The provenance captions of trajectories.png and slices.png: the data (real or
    synthetic), the command's settings, the commit."""
    from analysis.plot_style import provenance_caption

    source = f"{data.name} ({data.source} data), {int(data.trainval.numel())} trainval samples"
    command = f"cnzsl landscape: {run.epochs} epoch{'s' if run.epochs != 1 else ''}, seed {run.seed}"
    probes = (f"probes every {run.probe_every} step{'s' if run.probe_every != 1 else ''} on the step's batch: Lanczos ≤ {run.lanczos_max_steps} steps "
              f"(tol {run.lanczos_tol:g}), β over η = lr × {{{', '.join(f'{m:g}' for m in run.eta_multipliers)}}}")
    grid = (f"loss on the first {samples} trainval samples, {run.slice_points}×{run.slice_points} grid in "
            f"[-{run.slice_range:g}, {run.slice_range:g}]², filter-normalized directions (Li et al. 2018); ★ = θ*")
    return (provenance_caption(source, command, probes, commit=commit),
            provenance_caption(source, command, grid, commit=commit))


def _estimate(run: LandscapeRun, data: ZSLData, config: TrainConfig, models: dict[str, Any],
              slice_batches: list[Batch], etas: tuple[float, ...]) -> LandscapeEstimate:
    """The counts and measured unit costs of every model of ``run`` (:mod:`landscape.budget`)."""
    steps_per_epoch = -(-int(data.trainval.numel()) // config.batch_size)
    counts, costs = {}, {}
    for kind, model in models.items():
        costs[kind], lanczos_steps = measure_unit_costs(model, data, config, slice_batches, etas,
                                                        lanczos_max_steps=run.lanczos_max_steps,
                                                        lanczos_tol=run.lanczos_tol)
        counts[kind] = work_counts(epochs=run.epochs, steps_per_epoch=steps_per_epoch, probe_every=run.probe_every,
                                   lanczos_steps=lanczos_steps, slice_points=run.slice_points)
    return LandscapeEstimate(counts, costs, expected_seconds(counts, costs))


def run_landscape(run: LandscapeRun, data: ZSLData | None = None,
                  report: Callable[[dict[str, Any]], None] | None = None,
                  announce: Callable[[LandscapeEstimate], None] | None = None) -> dict[str, Any]:
    """Train the models of ``run``, probe them, slice them, write the outputs.

    ``data`` replaces the data set named in ``run`` (for custom data and tests).
    ``announce(estimate)`` (if given) is called once the unit costs are measured, before
    any model is trained (:mod:`landscape.budget`).
    ``report(payload)`` (if given) is called with the content of ``landscape.json`` before
    any file is written, so a failed write (a full disk) cannot lose what the run measured.

    Returns:
        The content of ``landscape.json``.

    Raises:
        FileExistsError: outputs exist in ``run.out`` and ``overwrite`` is False.
        DataError, ValueError: bad data or options.
    """
    with OutputFolder(run.out, OUTPUT_FILES, marker="landscape.json", overwrite=run.overwrite) as folder:
        device = resolve_device(run.device)
        if data is None:
            data = load_dataset(run.dataset, data_root=run.data_root, synthetic_features=run.synthetic_features,
                                seed=run.data_seed)
        config = TrainConfig(epochs=run.epochs, seed=run.seed, device=str(device), progress=run.progress)
        etas = tuple(config.lr * m for m in run.eta_multipliers)
        slice_data = zsl_batches(data, batch_size=4096, device=device)
        slice_batches, kept = [], 0
        for b in slice_data:  # the first slice_samples trainval samples
            take = min(b.size, run.slice_samples - kept)
            if take <= 0:
                break
            slice_batches.append(Batch(b.features[:take], b.targets[:take], b.attributes))
            kept += take
        grid = torch.linspace(-run.slice_range, run.slice_range, run.slice_points, dtype=torch.float64)
        models = {kind: build_model(model_config(kind, data), run.seed).to(device) for kind in run.models}
        estimate = _estimate(run, data, config, models, slice_batches, etas)
        if announce is not None:
            announce(estimate)
        start = time.perf_counter()
        results, slices = {}, {}
        for kind, model in models.items():
            probe = TrajectoryProbe(run.probe_every, etas, run.lanczos_tol, run.lanczos_max_steps, seed=run.seed + 1)
            history = train(model, data, replace(config, progress_label=f"train {_LABELS[kind]}"), on_step=probe)
            objective = Objective(model)
            directions = torch.Generator().manual_seed(run.seed + 2)
            d1 = filter_normalized_direction(objective, generator=directions)
            d2 = filter_normalized_direction(objective, generator=directions)
            with tqdm(total=grid.numel() ** 2, desc=f"slice {_LABELS[kind]}", unit="point",
                      disable=not run.progress) as bar:
                slices[kind] = loss_slice_2d(objective, slice_batches, d1, d2, grid, grid, on_point=bar.update)
            results[kind] = {
                "label": _LABELS[kind],
                "summary": {**_summary(probe), "final_train_loss": history.loss[-1],
                            "train_seconds": history.seconds},
                "trajectory": probe.records,
                "slice": {"alphas": grid.tolist(), "betas": grid.tolist(),
                          "losses": slices[kind].losses.tolist()},
            }
        measured = {"expected_seconds": estimate.seconds, "seconds": time.perf_counter() - start,
                    "counts": estimate.counts, "unit_seconds": estimate.unit_seconds}
        environment = environment_info(device)
        payload = {"config": run, "data": data.summary(), "environment": environment,
                   "etas": list(etas), "estimate": measured, "models": results}
        if report is not None:
            report(payload)
        trajectory_caption, slice_caption = _captions(run, data, kept, environment.get("git_commit"))
        write_png(folder.stage("trajectories.png"), _trajectory_figure(results, trajectory_caption, config.batch_size))
        write_png(folder.stage("slices.png"), _slice_figure(slices, slice_caption))
        write_json(folder.stage("landscape.json"), payload, units=UNITS)
    return payload
