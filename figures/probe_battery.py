"""``cnzsl probe``: the whole battery of variance and loss-surface probes on a researcher's
own architecture, side by side with the shipped presets (the normalization zoo).

For every model (the one of ``--model``, then the presets of ``--compare``), on one data set:

1. **init** (``init_seeds`` seeds): the layer-wise variance profile of the embedder over
   the seen classes (:func:`variance.profile_at_init`, mean ± standard error per layer),
   and for the presets, whose last-layer law is known, the prototype moments beside the
   V4 predictions (``variance.prototype_variance``): with a normalization right before
   ``V`` the pre-activation prototypes have second moment ``s_V^2 d_L + s_b^2`` (= 1/d_z +
   s_b^2 with Eq. 10), whatever normalizes each class's vector to norm ``sqrt(d_L)``; their
   variance *across classes* is ``s_V^2 d_L`` only when every coordinate is standardized
   over the classes (CN, and BatchNorm at init), not for LayerNorm or RMSNorm, which
   normalize each class on its own and leave the classes' common part in the norm.
2. **training** (``seeds``): the paper's recipe for ``epochs``; ZSL-U, GZSL-U/S/H, AUSUC
   (percent), mean ± std over seeds.  A model's global-RNG draws (dropout) are seeded with
   the run's seed, so a run is reproducible.
3. **trajectory** (first seed, every ``probe_every`` steps, on the step's batch): gradient
   norm, top Hessian eigenvalue (Lanczos), effective β-smoothness (Santurkar et al. 2018).
4. **spectrum** at the trained point (first seed, the first ``probe_samples`` trainval
   samples, one batch): top-k eigenvalues with residuals, Hutchinson trace ± standard
   error, SLQ spectral density, a 2-D filter-normalized slice, and per parameter group
   the top eigenvalue and gradient norm.
5. **purity**: parameters, buffers and ``training`` flags are compared bitwise before and
   after every probe call (the trajectory probe at every step it runs).

Every probe uses ``statistics="batch"`` (the training objective: CN and BatchNorm normalize
with the statistics of the classes passed in) with dropout off (:mod:`analysis.probe_mode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from analysis.io import check_output_folder
from analysis.data import ZSLData
from analysis.datasets import canonical_dataset_name
from analysis.evaluation import evaluate
from analysis.experiment import mean_std
from analysis.model import AttributeEmbedderModel
from analysis.normalization import normalize_attributes
from analysis.training import TrainConfig, train
from analysis.user_model import ModelSpec, check_model
from landscape import (
    Batch,
    HessianOperator,
    Objective,
    TrajectoryProbe,
    filter_normalized_direction,
    gradient_norms_by_layer,
    hutchinson_trace,
    lanczos_top_eigenvalues,
    loss_slice_2d,
    parameter_names,
    spectral_density,
    zsl_batches,
)
from variance import profile_at_init, profile_layers, prototypes_entry
from variance.prototype_variance import final_layer_variances

__all__ = ["FAST_BUDGET", "FULL_BUDGET", "METRICS", "ProbeRun", "probe_model"]

T = TypeVar("T")

METRICS = ("zsl_unseen", "gzsl_unseen", "gzsl_seen", "gzsl_harmonic", "ausuc")

# Budgets of the full run and of --fast (the whole command in minutes on two CPU cores).
FULL_BUDGET: dict[str, int] = {"epochs": 50, "init_seeds": 16, "probe_every": 100, "top_k": 5,
                               "trace_probes": 30, "slq_probes": 4, "slq_steps": 40, "slice_points": 11,
                               "probe_samples": 2048, "lanczos_steps": 40, "spectrum_steps": 150}
FAST_BUDGET: dict[str, int] = {"epochs": 2, "init_seeds": 4, "probe_every": 20, "top_k": 3,
                               "trace_probes": 8, "slq_probes": 2, "slq_steps": 12, "slice_points": 5,
                               "probe_samples": 256, "lanczos_steps": 12, "spectrum_steps": 24}
_GAMMA_DEFAULT = 5.0  # NS scale for logits_ns of a model without head.gamma (the reference recipe)
_ETA_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0, 8.0)  # x the learning rate: Santurkar step sizes


@dataclass(frozen=True)
class ProbeRun:
    """Everything ``cnzsl probe`` needs; budgets default to :data:`FULL_BUDGET`."""

    out: Path
    model: str  # preset:NAME, PATH.py:NAME or package.module:NAME
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    compare: tuple[str, ...] = ("cn", "mlp")  # shipped presets probed beside it
    dataset: str = "CUB"
    data_root: Path | None = None
    synthetic_features: bool = False
    data_seed: int = 0
    seeds: tuple[int, ...] = (1,)  # training seeds; the trajectory and spectrum use the first
    epochs: int = FULL_BUDGET["epochs"]
    init_seeds: int = FULL_BUDGET["init_seeds"]  # Monte Carlo inits of the variance profile
    probe_every: int = FULL_BUDGET["probe_every"]  # training steps between trajectory probes
    top_k: int = FULL_BUDGET["top_k"]
    trace_probes: int = FULL_BUDGET["trace_probes"]  # Hutchinson probes
    slq_probes: int = FULL_BUDGET["slq_probes"]
    slq_steps: int = FULL_BUDGET["slq_steps"]
    slice_points: int = FULL_BUDGET["slice_points"]  # per axis of the 2-D slice
    probe_samples: int = FULL_BUDGET["probe_samples"]  # trainval samples of the trained-point probes
    lanczos_steps: int = FULL_BUDGET["lanczos_steps"]  # Krylov limit of the top-1 runs (trajectory, per layer)
    spectrum_steps: int = FULL_BUDGET["spectrum_steps"]  # Krylov limit of the top-k run at the trained point
    lanczos_tol: float = 1e-3  # relative residual of the top eigenvalues
    device: str = "auto"
    fast: bool = False  # recorded only: the budgets above are what ran
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", check_output_folder(self.out))
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        object.__setattr__(self, "compare", tuple(self.compare))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, at least one, got {self.seeds}")
        for name in FULL_BUDGET:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.init_seeds < 2:
            raise ValueError(f"init_seeds must be at least 2 (a standard error needs two inits), got {self.init_seeds}")
        if self.slice_points < 2:
            raise ValueError(f"slice_points must be at least 2 per axis, got {self.slice_points}")
        if not 0 < self.lanczos_tol < 1:
            raise ValueError(f"lanczos_tol must lie in (0, 1), got {self.lanczos_tol}")


class PurityLog:
    """Bitwise before/after comparison of a model around each probe call."""

    def __init__(self) -> None:
        self.results: dict[str, bool] = {}

    @staticmethod
    def _state(model: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], list[bool]]:
        return ([(k, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()],
                [m.training for m in model.modules()])

    def run(self, name: str, model: nn.Module, probe: Callable[[], T]) -> T:
        """``probe()``, recording under ``name`` whether ``model`` came back bitwise the same."""
        before = self._state(model)
        result = probe()
        after = self._state(model)
        same = before[1] == after[1] and len(before[0]) == len(after[0]) and all(
            k1 == k2 and v1.dtype == v2.dtype and torch.equal(v1, v2) for (k1, v1), (k2, v2) in zip(before[0], after[0]))
        self.results[name] = self.results.get(name, True) and same
        return result


class _PureTrajectory:
    """The trajectory probe as a training callback, checked for purity at every call."""

    def __init__(self, probe: TrajectoryProbe, log: PurityLog) -> None:
        self.probe, self.log = probe, log

    def __call__(self, info: Any) -> None:
        if info.step % self.probe.every == 0:
            self.log.run("trajectory", info.model, lambda: self.probe(info))


def _estimate(e: Any) -> list[float]:
    return [float(e.value), float(e.stderr)]


def _preset_predictions(model: nn.Module, data: ZSLData) -> dict[str, Any] | None:
    """V4 predictions for an embedder of :mod:`analysis.model` (its config gives the last
    layer's init law) whose last hidden layer is normalized right before V; None otherwise."""
    if not isinstance(model, AttributeEmbedderModel):
        return None
    config = model.config
    last = len(config.hidden_dims) - 1
    final = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    normalized = (last >= 0 and last in config.cn_layer_indices and config.cn_placement in ("both", "post"))
    s_v2, s_b2 = final_layer_variances(config)
    width = config.hidden_dims[-1] if config.hidden_dims else config.attribute_dim
    return {
        "layer": final,  # V, whose output (the "prototypes_pre_activation" entry) the V2-V4 claims are about
        "normalized_before_V": normalized,
        "second_moment": s_v2 * width + s_b2 if normalized else None,
        # across classes: s_V^2 tr(class covariance of V's input) = s_V^2 d_L when every
        # coordinate is standardized over the classes (CN; BatchNorm at init)
        "class_variance": s_v2 * width if normalized and config.normalization in ("cn", "bn") else None,
        "feature_dim": data.feature_dim,
    }


def _ns_scale(model: nn.Module) -> Any:
    """``model.head.gamma`` as a float (a learned temperature, a one-element tensor: its value at
    init, detached), :data:`_GAMMA_DEFAULT` without one; anything else is passed on for the
    profiler to refuse with its message."""
    gamma = getattr(getattr(model, "head", None), "gamma", None)
    if gamma is None:
        return _GAMMA_DEFAULT
    if isinstance(gamma, Tensor) and gamma.numel() == 1:
        return float(gamma.detach())
    return float(gamma) if isinstance(gamma, (int, float)) and not isinstance(gamma, bool) else gamma


def _init(spec: ModelSpec, data: ZSLData, run: ProbeRun, device: torch.device, log: PurityLog) -> dict[str, Any]:
    attributes = normalize_attributes(data.attributes, "l2_sqrt")[data.seen_classes].to(device)  # [K_s, d_a]
    features = data.features[data.trainval[:256]].to(device)  # [256, d_z]
    sample = spec.build(data.attribute_dim, data.feature_dim, torch.Generator().manual_seed(0)).to(device)
    gamma = _ns_scale(sample)
    profiles = {statistics: log.run(f"profile_{statistics}", sample, lambda s=statistics: profile_layers(
        sample, attributes, features, gamma=gamma, statistics=s)) for statistics in ("batch", "running")}
    module_types = {name: stats.module_type for name, stats in profiles["batch"].items()}
    profile = profile_at_init(lambda g: spec.build(data.attribute_dim, data.feature_dim, g).to(device),
                              attributes, features, seeds=range(run.init_seeds), gamma=gamma)
    layers = [{"name": name, "module_type": module_types.get(name, ""),
               **{stat: _estimate(stats[stat]) for stat in ("class_variance", "second_moment")}}
              for name, stats in profile.items()]
    predictions = _preset_predictions(sample, data)
    # the V4 comparison: V's output before any output ReLU when the model exposes it (the presets do)
    entry = prototypes_entry(profile)
    return {"gamma": float(gamma), "seeds": run.init_seeds, "layers": layers, "predictions": predictions,
            "prototypes_entry": entry,
            "prototypes": {stat: _estimate(profile[entry][stat]) for stat in ("class_variance", "second_moment")}}


def _train(spec: ModelSpec, data: ZSLData, run: ProbeRun, device: torch.device,
           log: PurityLog) -> tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]:
    lr = TrainConfig().lr
    trajectory = TrajectoryProbe(run.probe_every, tuple(lr * m for m in _ETA_MULTIPLIERS), run.lanczos_tol,
                                 run.lanczos_steps, seed=run.seeds[0] + 1)
    first, rows = None, []
    cuda = [device.index or 0] if device.type == "cuda" else []
    for i, seed in enumerate(run.seeds):
        model = spec.build(data.attribute_dim, data.feature_dim, torch.Generator().manual_seed(seed))
        config = TrainConfig(epochs=run.epochs, seed=seed, device=str(device), progress=run.progress)
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # the model's own global-RNG draws (dropout): seeded, then forgotten
            history = train(model, data, config, on_step=_PureTrajectory(trajectory, log) if i == 0 else None)
        metrics = log.run("evaluate", model, lambda m=model: evaluate(m, data).percent())
        rows.append({"seed": seed, **{k: float(metrics[k]) for k in METRICS},
                     "final_loss": history.loss[-1], "train_seconds": history.seconds})
        first = first or model
    summary = {k: list(mean_std([r[k] for r in rows])) for k in METRICS}
    return first, {"seeds": list(run.seeds), "epochs": run.epochs, "per_seed": rows, "mean_std": summary}, \
        trajectory.records


def _spectrum(model: nn.Module, data: ZSLData, run: ProbeRun, device: torch.device,
              log: PurityLog) -> tuple[dict[str, Any], dict[str, Any]]:
    whole = zsl_batches(data, batch_size=run.probe_samples, device=device)[0]
    batch = Batch(whole.features[:run.probe_samples], whole.targets[:run.probe_samples], whole.attributes)
    objective = Objective(model)
    generator = torch.Generator().manual_seed(run.seeds[0] + 3)
    kw = {"generator": generator, "dtype": objective.dtype, "device": objective.device}
    n = objective.num_parameters
    op = HessianOperator(objective, [batch])
    loss = log.run("loss", model, lambda: float(objective.loss(objective.params(), batch)))
    top = log.run("lanczos", model, lambda: lanczos_top_eigenvalues(
        op.matvec, n, k=min(run.top_k, n), tol=run.lanczos_tol, max_steps=max(run.spectrum_steps, 2 * run.top_k), **kw))
    trace = log.run("hutchinson_trace", model, lambda: hutchinson_trace(op.matvec, n, run.trace_probes, **kw))
    density = log.run("spectral_density", model, lambda: spectral_density(
        op.matvec, n, num_probes=run.slq_probes, num_steps=min(run.slq_steps, n), **kw))
    directions = torch.Generator().manual_seed(run.seeds[0] + 2)
    d1 = filter_normalized_direction(objective, generator=directions)
    d2 = filter_normalized_direction(objective, generator=directions)
    grid = torch.linspace(-1.0, 1.0, run.slice_points, dtype=torch.float64)
    surface = log.run("slice_2d", model, lambda: loss_slice_2d(objective, [batch], d1, d2, grid, grid))
    norms = log.run("gradient_norms_by_layer", model, lambda: gradient_norms_by_layer(model, [batch]))
    layers = {}
    for group, norm in norms.items():
        if group == "total":
            continue
        sub = Objective(model, parameters=parameter_names(model, group))  # a module, or a root parameter
        sub_op = HessianOperator(sub, [batch])
        eig = log.run("lanczos_per_layer", model, lambda s=sub, o=sub_op: lanczos_top_eigenvalues(
            o.matvec, s.num_parameters, k=1, tol=run.lanczos_tol, max_steps=run.lanczos_steps,
            generator=generator, dtype=s.dtype, device=s.device))
        layers[group] = {"parameters": sub.num_parameters, "gradient_norm": norm,
                         "top_eigenvalue": float(eig.eigenvalues[0]), "converged": bool(eig.converged)}
    spectrum = {
        "samples": batch.size, "loss": loss, "gradient_norm": norms["total"],
        "top_eigenvalues": top.eigenvalues.tolist(), "residuals": top.residuals.tolist(),
        "lanczos_converged": bool(top.converged), "lanczos_matvecs": int(top.num_matvecs),
        "trace": [trace.value, trace.stderr], "trace_probes": run.trace_probes,
        "density": {"nodes": density.nodes.tolist(), "weights": density.weights.tolist()},
        "slice": {"alphas": grid.tolist(), "betas": grid.tolist(), "losses": surface.losses.tolist()},
    }
    return spectrum, layers


def probe_model(spec: ModelSpec, data: ZSLData, run: ProbeRun, device: torch.device) -> dict[str, Any]:
    """The battery (module docstring) on one model: the ``models[label]`` entry of ``probe.json``."""
    log = PurityLog()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    init = _init(spec, data, run, device, log)
    seconds["init"] = time.perf_counter() - start
    start = time.perf_counter()
    model, training, trajectory = _train(spec, data, run, device, log)
    seconds["training"] = time.perf_counter() - start
    start = time.perf_counter()
    spectrum, layers = _spectrum(model, data, run, device, log)
    seconds["spectrum"] = time.perf_counter() - start
    return {
        "label": spec.label, "model": spec.text, "model_kwargs": spec.kwargs, "preset": spec.preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "init": init, "training": training, "trajectory": trajectory, "spectrum": spectrum, "layers": layers,
        "pure": {"all": all(log.results.values()), **log.results}, "seconds": seconds,
    }


def check_models(specs: list[ModelSpec], data: ZSLData, device: torch.device) -> None:
    """Build every model once and run the contract's checks, before any training.

    Raises:
        analysis.user_model.ModelContractError: the first model that breaks the contract.
    """
    attributes = normalize_attributes(data.attributes, "l2_sqrt")[data.seen_classes].to(device)
    features = data.features[data.trainval[:8]].to(device)
    for spec in specs:
        model = spec.build(data.attribute_dim, data.feature_dim, torch.Generator().manual_seed(0)).to(device)
        check_model(model, features, attributes, name=spec.text)
        if not list(model.parameters()):
            raise ValueError(f"{spec.text}: the model has no parameters; there is nothing to train or probe")
