"""``cnzsl spectrum``: the full-data Hessian spectrum of a trained model (docs/science.md section 5.2).

:func:`run_spectrum` takes a frozen :class:`SpectrumRun` (the command line is a thin layer
over it) and measures, at the checkpoint's parameters ``theta``, the Hessian of the
training objective on **every** sample of a split,

    L(theta) = (1/N) sum_{i=1..N} CE(model_theta(z_i, A_s), y_i),    H = d^2 L / d theta^2  [n, n]

(``A_s`` the normalized seen-class attributes; CN and BatchNorm normalize over those
classes, ``statistics="batch"``, and no running statistic is updated; README, "The model
contract"):

- the loss and the gradient norm ``||grad L||`` (per layer with ``per_layer``);
- the ``top_k`` largest algebraic eigenvalues with their residuals
  ``||H y - theta y||`` (Lanczos, :func:`~landscape.top_eigenvalues.lanczos_top_eigenvalues`);
- ``tr(H)`` ± standard error (Hutchinson or Hutch++, :mod:`landscape.hutchinson`);
- the SLQ spectral density (:func:`~landscape.spectral_density.spectral_density`);
- with ``per_layer``, per module owning parameters: top eigenvalues, trace and gradient
  norm of the diagonal block of ``H`` (that module's parameters alone).

Under ``torchrun`` (``WORLD_SIZE > 1``) every process loads the checkpoint and keeps only
its rank-strided shard of the split (``zsl_batches(..., shard=(rank, W))``); the objective
is a :class:`~landscape.distributed.ShardedObjective`, so every product and gradient is
all-reduced and equals the single-process one up to round-off, and the Krylov iterations
run identically on every rank from the same seeded generators.  Rank 0 alone prints and
writes ``OUT/spectrum.json`` and ``OUT/spectrum.png`` (locked, staged and published
together, never over existing results: :mod:`analysis.output_folder`).

Random draws: each probe has its own CPU generator, ``torch.Generator().manual_seed(seed +
s)`` with the stream ``s`` of :data:`STREAMS` (per layer ``l``: ``s + 3 (l + 1)``), so a
seed gives the same start vectors and probes on every rank, device and world size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from analysis.checkpoint import load_checkpoint
from analysis.data import DataError, ZSLData
from analysis.datasets import canonical_dataset_name, load_dataset
from analysis.io import check_output_folder, environment_info, refuse_to_overwrite, write_json, write_png
from analysis.model import AttributeEmbedderModel, LinearClassifier
from analysis.normalization import ATTRIBUTE_NORMS
from analysis.output_folder import OutputFolder
from analysis.probe_mode import check_statistics
from analysis.user_model import check_model
from landscape.distributed import Session, ShardedObjective, distributed_session
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from landscape.hvp import HessianOperator, gradient_norms_by_layer
from landscape.objective import SPLITS, Batch, Objective, parameter_groups, zsl_batches
from landscape.spectral_density import SpectralDensity, plot_spectral_density, spectral_density
from landscape.top_eigenvalues import lanczos_top_eigenvalues

__all__ = ["OUTPUT_FILES", "STREAMS", "TRACE_METHODS", "SpectrumRun", "run_spectrum"]

OUTPUT_FILES = ("spectrum.png", "spectrum.json")  # spectrum.json last: the completion marker
TRACE_METHODS = ("hutchinson", "hutchpp")
STREAMS = {"lanczos": 0, "trace": 1, "density": 2}  # generator seed = seed + stream
DTYPES = {"float32": torch.float32, "float64": torch.float64}
_SEED_MAX = 2**63 - 1 - 10_000  # room for the per-layer streams


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"--{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class SpectrumRun:
    """Everything ``cnzsl spectrum`` needs; the data options default to the checkpoint's own."""

    checkpoint: Path  # DIR/model.pt written by `cnzsl train` (or save_checkpoint(..., builder=spec))
    out: Path  # output folder for spectrum.json and spectrum.png
    data_root: Path | None = None  # GBU root; None: the one the checkpoint was trained on
    dataset: str | None = None  # None: the checkpoint's
    synthetic_features: bool | None = None  # None: the checkpoint's
    data_seed: int | None = None  # None: the checkpoint's
    attribute_norm: str | None = None  # None: the checkpoint's training recipe
    split: str = "trainval"  # or "test_seen"
    top_k: int = 5  # eigenvalues
    tol: float = 1e-3  # Lanczos: relative tolerance on each eigenvalue
    max_steps: int | None = None  # Lanczos Krylov dimension limit (None: 100 + 20 k)
    trace_method: str = "hutchinson"  # or "hutchpp"
    trace_matvecs: int = 50  # products spent on the trace
    density_probes: int = 5  # SLQ probes
    density_steps: int = 30  # Lanczos steps per SLQ probe
    per_layer: bool = False  # also each module's diagonal block
    batch_size: int | None = 4096  # samples per product piece on each process (memory); None: one piece
    statistics: str = "batch"  # "batch": the training objective; "running": eval-mode statistics
    dtype: str = "float32"  # working precision of the model, the data and the products
    seed: int = 0  # of every start vector and probe (STREAMS)
    device: str = "auto"  # auto, cpu, cuda (under torchrun: cuda:LOCAL_RANK)
    timeout: float = 600.0  # seconds a collective may wait for the other processes
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))
        object.__setattr__(self, "out", check_output_folder(self.out))
        if self.dataset is not None:
            object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {', '.join(SPLITS)}")
        if self.attribute_norm is not None and self.attribute_norm not in ATTRIBUTE_NORMS:
            raise ValueError(f"unknown attribute norm {self.attribute_norm!r}; choose one of {', '.join(ATTRIBUTE_NORMS)}")
        if self.trace_method not in TRACE_METHODS:
            raise ValueError(f"unknown trace method {self.trace_method!r}; choose one of {', '.join(TRACE_METHODS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        check_statistics(self.statistics)
        _positive_int("top-k", self.top_k)
        _positive_int("trace-matvecs", self.trace_matvecs, 4 if self.trace_method == "hutchpp" else 2)
        _positive_int("density-probes", self.density_probes)
        _positive_int("density-steps", self.density_steps)
        if self.max_steps is not None:
            _positive_int("max-steps", self.max_steps, self.top_k)
        if self.batch_size is not None:
            _positive_int("batch-size", self.batch_size)
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1):
            raise ValueError(f"--tol must lie in (0, 1), got {self.tol!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= _SEED_MAX:
            raise ValueError(f"--seed must be an integer in [0, {_SEED_MAX}], got {self.seed!r}")
        if not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")


# -- setup: checkpoint, data, shard ---------------------------------------------------------
@dataclass
class _Setup:
    model: nn.Module
    metadata: dict[str, Any]
    batches: list[Batch]
    data: dict[str, Any]  # summary of the data and the split


def _data_options(run: SpectrumRun, metadata: dict[str, Any]) -> dict[str, Any]:
    """The data the checkpoint was trained on, each option overridden by the run's."""
    trained = metadata.get("run") if isinstance(metadata.get("run"), dict) else {}
    recipe = trained.get("train") if isinstance(trained.get("train"), dict) else {}
    dataset = run.dataset or trained.get("dataset")
    if dataset is None:
        raise ValueError(f"{run.checkpoint} does not say which data it was trained on (no `run` in its metadata); "
                         "pass --dataset (and --data-root for real data)")
    root = run.data_root if run.data_root is not None else trained.get("data_root")
    synthetic = run.synthetic_features if run.synthetic_features is not None else bool(
        trained.get("synthetic_features", False))
    return {
        "dataset": canonical_dataset_name(str(dataset)),
        "data_root": None if root is None else Path(root),
        "synthetic_features": synthetic,
        "data_seed": run.data_seed if run.data_seed is not None else int(trained.get("data_seed", 0)),
        "attribute_norm": run.attribute_norm or recipe.get("attribute_norm", "l2_sqrt"),
    }


def _check_fits(model: nn.Module, path: Path, data: ZSLData) -> None:
    """The model takes the data's attributes and features (one line naming both otherwise)."""
    attribute_dim, feature_dim, num_seen = data.attribute_dim, data.feature_dim, int(data.seen_classes.numel())
    config = getattr(model, "config", None)
    if isinstance(model, AttributeEmbedderModel):
        expected = (config.attribute_dim, config.feature_dim)
        if expected != (attribute_dim, feature_dim):
            raise ValueError(f"{path} embeds {config.attribute_dim}-d attributes into {config.feature_dim}-d features, "
                             f"but the data has {attribute_dim}-d attributes and {feature_dim}-d features; pass the "
                             "data it was trained on (--dataset, --data-root)")
    elif isinstance(model, LinearClassifier):
        if (config.num_classes, config.feature_dim) != (num_seen, feature_dim):
            raise ValueError(f"{path} classifies {config.feature_dim}-d features into {config.num_classes} classes, "
                             f"but the data has {feature_dim}-d features and {num_seen} seen classes")
    else:  # a researcher's model, rebuilt by its builder: the contract's checks on two samples
        check_model(model, data.features[data.trainval[:2]], data.attributes[data.seen_classes], name=str(path))


def _setup(run: SpectrumRun, session: Session) -> _Setup:
    model, metadata = load_checkpoint(run.checkpoint)
    options = _data_options(run, metadata)
    data = load_dataset(options["dataset"], data_root=options["data_root"],
                        synthetic_features=options["synthetic_features"], seed=options["data_seed"])
    _check_fits(model, run.checkpoint, data)
    dtype = DTYPES[run.dtype]
    model = model.to(device=session.device, dtype=dtype)
    shard = (session.rank, session.world_size) if session.sharded else None
    # only this process's rows reach the device; the full set is dropped with `data`
    batches = [b.to(session.device, dtype) for b in zsl_batches(
        data, attribute_norm=options["attribute_norm"], batch_size=run.batch_size, split=run.split, shard=shard)]
    summary = {**data.summary(), "split": run.split, "samples": int(getattr(data, run.split).numel()),
               "attribute_norm": options["attribute_norm"]}
    return _Setup(model, metadata, batches, summary)


# -- the probes -------------------------------------------------------------------------
class _Counter:
    """``op.matvec`` counted and timed, advancing the progress bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.count, self.seconds = bar, 0, 0.0

    def wrap(self, op: HessianOperator) -> Callable[[Tensor], Tensor]:
        def matvec(v: Tensor) -> Tensor:
            start = time.perf_counter()
            out = op.matvec(v)
            if out.is_cuda:
                torch.cuda.synchronize(out.device)
            self.seconds += time.perf_counter() - start
            self.count += 1
            self.bar.update(1)
            return out

        return matvec


def _generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed + stream)


def _block_probes(run: SpectrumRun, op: HessianOperator, counter: _Counter, offset: int, bar: tqdm,
                  label: str) -> dict[str, Any]:
    """Top eigenvalues and trace of ``op``, the Hessian block of its objective's parameters."""
    objective = op.objective
    matvec, n = counter.wrap(op), objective.num_parameters
    kw = {"dtype": objective.dtype, "device": objective.device}
    bar.set_description(f"{label}: lanczos")
    top = lanczos_top_eigenvalues(matvec, n, k=min(run.top_k, n), tol=run.tol, max_steps=run.max_steps,
                                  generator=_generator(run.seed, offset + STREAMS["lanczos"]), **kw)
    bar.set_description(f"{label}: trace")
    trace_fn = hutchinson_trace if run.trace_method == "hutchinson" else hutchpp_trace
    trace = trace_fn(matvec, n, run.trace_matvecs, generator=_generator(run.seed, offset + STREAMS["trace"]), **kw)
    return {
        "parameters": n,
        "top_eigenvalues": top.eigenvalues.tolist(),
        "residuals": top.residuals.tolist(),
        "error_estimates": top.error_estimates.tolist(),
        "lanczos_converged": top.converged,
        "lanczos_matvecs": top.num_matvecs,
        "trace": {"method": run.trace_method, "value": trace.value, "stderr": trace.stderr,
                  "samples": trace.samples, "num_matvecs": trace.num_matvecs},
    }


def _planned_matvecs(run: SpectrumRun, n: int) -> int:
    k = min(run.top_k, n)
    lanczos = min(run.max_steps if run.max_steps is not None else 100 + 20 * k, n)
    return lanczos + run.trace_matvecs


def _probe(run: SpectrumRun, setup: _Setup, session: Session) -> dict[str, Any]:
    model, batches = setup.model, setup.batches
    make = ShardedObjective if session.sharded else Objective
    objective = make(model, statistics=run.statistics)
    groups = parameter_groups(model) if run.per_layer else {}
    n = objective.num_parameters
    steps = min(run.density_steps, n)
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    planned = _planned_matvecs(run, n) + run.density_probes * steps + sum(
        _planned_matvecs(run, sum(sizes[name] for name in names)) for names in groups.values())
    started = time.perf_counter()
    with tqdm(total=planned, unit="HVP", desc="spectrum", disable=not (run.progress and session.is_main),
              dynamic_ncols=True) as bar:
        counter = _Counter(bar)
        shard_sizes = objective.shard_sizes(batches) if session.sharded else [sum(b.size for b in batches)]
        loss = float(objective.mean_loss(objective.params(), batches))
        norms = gradient_norms_by_layer(model, batches, objective=objective)
        result: dict[str, Any] = {"loss": loss, "gradient_norm": norms["total"]}
        op = HessianOperator(objective, batches)  # one gradient graph for the whole model's probes
        result.update(_block_probes(run, op, counter, 0, bar, "model"))
        bar.set_description("model: density")
        density = spectral_density(counter.wrap(op), n, num_probes=run.density_probes, num_steps=steps,
                                   generator=_generator(run.seed, STREAMS["density"]),
                                   dtype=objective.dtype, device=objective.device)
        result["density"] = {"nodes": density.nodes.tolist(), "weights": density.weights.tolist(),
                             "num_matvecs": density.num_matvecs, "steps": steps,
                             "moment1": _estimate(density.moment(1)), "moment2": _estimate(density.moment(2))}
        del op  # frees its graph before the blocks build theirs
        layers = {}
        for i, (group, names) in enumerate(groups.items()):
            block = HessianOperator(make(model, parameters=names, statistics=run.statistics), batches)
            layers[group] = {**_block_probes(run, block, counter, 3 * (i + 1), bar, group),
                             "gradient_norm": norms[group]}
        if layers:
            result["layers"] = layers
        bar.total = bar.n  # Lanczos stopped when its values converged, before its budget
        bar.refresh()
    result["num_hvps"] = counter.count
    result["hvp_seconds_mean"] = counter.seconds / max(counter.count, 1)
    result["seconds"] = time.perf_counter() - started
    result["shard_sizes"] = shard_sizes
    return result


def _estimate(e: Any) -> dict[str, Any]:
    return {"value": e.value, "stderr": e.stderr, "samples": e.samples}


# -- outputs ---------------------------------------------------------------------------
def _figure(result: dict[str, Any], title: str):
    from matplotlib.figure import Figure  # no pyplot: the process-wide backend is left alone

    layers = result.get("layers", {})
    fig = Figure(figsize=(10 if layers else 6, 4), layout="constrained")
    axes = fig.subplots(1, 2 if layers else 1, squeeze=False)[0]
    density = SpectralDensity(torch.tensor(result["density"]["nodes"], dtype=torch.float64),
                              torch.tensor(result["density"]["weights"], dtype=torch.float64),
                              result["density"]["num_matvecs"])
    ax = plot_spectral_density(density, axes[0], label="SLQ density")
    for j, value in enumerate(result["top_eigenvalues"]):
        ax.axvline(value, color="C3", lw=0.8, ls="--", label="top eigenvalues (Lanczos)" if j == 0 else None)
    top = ax.get_ylim()[1]
    ax.set_ylim(bottom=top * 1e-12)  # the Gaussian tails between separated nodes fall to 1e-40: not information
    trace = result["trace"]
    ax.set_title(f"{title}\ntr(H) = {trace['value']:.4g} ± {trace['stderr']:.2g}, "
                 f"||g|| = {result['gradient_norm']:.3g}", fontsize=9)
    ax.legend(fontsize=8)
    if layers:
        names = list(layers)
        axes[1].barh(names, [layers[g]["top_eigenvalues"][0] for g in names], color="C0")
        axes[1].set(xlabel="top eigenvalue of the layer's Hessian block", title="per layer")
        axes[1].invert_yaxis()
    return fig


def run_spectrum(run: SpectrumRun, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """Measure the spectrum of ``run`` and write its outputs (module docstring).

    ``report(output)`` (if given) is called on rank 0 with the content of ``spectrum.json``
    before any file is written, so a failed write loses nothing the user needs to read.

    Every process checks its setup (checkpoint, data, shard, and on rank 0 the output
    folder) before any product, and all of them stop if one fails
    (:meth:`~landscape.distributed.Session.agree`).

    Returns:
        On rank 0 the content of ``spectrum.json``; ``None`` on the other ranks.

    Raises:
        FileNotFoundError, ValueError, DataError: a missing or foreign checkpoint, bad data or
            options, more processes than samples.
        FileExistsError: ``spectrum.json`` or ``spectrum.png`` already in ``run.out`` and
            ``overwrite`` is False.
        SetupFailed: a process failed its setup (under several processes).  ShardFailure: a collective failed (a
            process exited or did not answer within ``run.timeout``).
    """
    if not run.checkpoint.is_file():  # before any rendezvous: the one-line error, at once
        raise FileNotFoundError(f"no checkpoint at {run.checkpoint}; train one with `cnzsl train --out DIR` "
                                "(writes DIR/model.pt)")
    refuse_to_overwrite(run.out, OUTPUT_FILES, run.overwrite)  # checked again under the lock
    with distributed_session(run.device, timeout=run.timeout) as session, ExitStack() as stack:
        folder = None
        error: BaseException | None = None
        try:
            setup = _setup(run, session)
            if session.is_main:
                folder = stack.enter_context(OutputFolder(run.out, OUTPUT_FILES, overwrite=run.overwrite))
        except (DataError, ValueError, FileNotFoundError, FileExistsError, OSError) as err:
            error = err
        session.agree(error)
        result = _probe(run, setup, session)
        if not session.is_main:
            return None
        output = {
            "checkpoint": str(run.checkpoint),
            "model": {"type": type(setup.model).__name__, "config": getattr(setup.model, "config", None),
                      "trained": setup.metadata.get("results")},
            "data": setup.data,
            "objective": {"statistics": run.statistics, "loss": "cross-entropy over the seen classes, mean over "
                          "every sample of the split", "dtype": run.dtype},
            **result,
            "distributed": {"world_size": session.world_size, "backend": session.backend,
                            "shard_sizes": result.pop("shard_sizes")},
            "settings": run,
            "environment": environment_info(session.device),
        }
        trained = setup.metadata.get("run") if isinstance(setup.metadata.get("run"), dict) else {}
        label = f"preset {trained['preset']}" if trained.get("preset") else output["model"]["type"]
        title = f"{setup.data['name']} ({setup.data['source']}) {run.split}, {label}"
        if report is not None:
            report(output)
        write_png(folder.stage("spectrum.png"), _figure(output, title))
        write_json(folder.stage("spectrum.json"), output)  # the marker: published last
    return output
