"""``cnzsl train`` as a typed function: load data, train a preset, evaluate, write results.

:func:`run_train` takes a frozen :class:`TrainRun` (the command line is a thin layer over
it) and writes into ``run.out``:

    results.json      zsl_unseen, gzsl_unseen, gzsl_seen, gzsl_harmonic, ausuc (percent),
                      seen_logit_scale, seed, train_seconds, per-epoch loss and seconds,
                      ``diverged`` (the loss rose: analysis.training.History.diverged);
                      ``units`` names the unit of each (analysis.io.write_json)
    config.json       the TrainRun, the model config and the data summary
    environment.json  versions, platform and device
    model.pt          the trained model (analysis.checkpoint), unless save_model=False
    loss.png          the training loss per epoch

With several ``seeds`` the members are trained at once as one vectorized model
(:func:`analysis.seed_ensemble.train_seeds`, equal to separate runs); ``results.json`` then
holds every metric's mean and standard deviation over the seeds (``std`` with ``ddof=1``;
``null`` for one seed: undefined, not zero) beside the per-seed rows, each model is saved
as ``model-seed<S>.pt`` and ``loss.png`` has one line per seed.

Nothing a user had is overwritten: if any of these files exists in ``out`` the run stops
before doing any work, unless ``overwrite=True``.  The folder is locked for the run and its
files appear together at the end, ``results.json`` last (:mod:`analysis.output_folder`): a
run stopped by an error, Ctrl-C or SIGTERM leaves ``out`` as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.checkpoint import save_checkpoint
from analysis.datasets import canonical_dataset_name, load_dataset
from analysis.evaluation import default_seen_logit_scale, evaluate
from analysis.io import check_output_folder, environment_info, write_json, write_png
from analysis.output_folder import OutputFolder
from analysis.model import PRESETS, preset_config
from analysis.seed_ensemble import train_seeds
from analysis.training import History, TrainConfig, resolve_device, train_model

__all__ = ["METRICS", "OUTPUT_FILES", "TrainRun", "format_mean_std", "mean_std", "run_train"]

OUTPUT_FILES = ("results.json", "config.json", "environment.json", "model.pt", "loss.png")
METRICS = ("zsl_unseen", "gzsl_unseen", "gzsl_seen", "gzsl_harmonic", "ausuc")  # percent


@dataclass(frozen=True)
class TrainRun:
    """Everything ``cnzsl train`` needs; defaults are the paper's reference run."""

    out: Path  # output folder
    dataset: str = "AWA1"  # AWA1, AWA2, CUB, SUN, APY
    data_root: Path | None = None  # GBU root; None: synthetic preset of `dataset`
    synthetic_features: bool = False  # with data_root: real attributes, synthetic features
    data_seed: int = 0  # seed of the synthetic generator
    preset: str = "cn"  # mlp, mlp+eq9, mlp+eq10, cn
    standardization_mode: str = "correct"  # or "notebook": the authors' var + eps quirk
    train: TrainConfig = field(default_factory=TrainConfig)
    seen_logit_scale: float | None = None  # None: 0.95 (1.0 on CUB), as the authors; resolved on creation
    seeds: tuple[int, ...] | None = None  # several seeds at once (train.seed is then unused)
    save_model: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", check_output_folder(self.out))
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.seen_logit_scale is not None and not (math.isfinite(self.seen_logit_scale)
                                                      and self.seen_logit_scale > 0):
            raise ValueError(f"--seen-logit-scale must be a finite positive number, got {self.seen_logit_scale}; "
                             f"use 1.0 for no calibration (authors: 0.95)")
        if self.seen_logit_scale is None:  # the default applied, so that config.json records it
            object.__setattr__(self, "seen_logit_scale", default_seen_logit_scale(self.dataset))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
        if self.seeds is not None:
            seeds = tuple(int(x) for x in self.seeds)
            if not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be distinct integers, at least one, got {list(seeds)}")
            object.__setattr__(self, "seeds", seeds)

    @property
    def output_files(self) -> tuple[str, ...]:
        if self.seeds is None:
            return OUTPUT_FILES
        models = tuple(f"model-seed{s}.pt" for s in self.seeds)
        return tuple(f for f in OUTPUT_FILES if f != "model.pt") + models


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``ddof=1``) over seeds: the summary of every
    seed-averaged table (``cnzsl train --seeds``, ``cnzsl czsl``, the ablation figure).

    Non-finite values (a metric undefined for a seed) are left out; the mean of none is
    NaN.  With fewer than two finite values the std is undefined and returned as ``None``
    (``null`` in the JSON outputs), never 0: one seed says nothing about the spread.
    """
    finite = [v for v in values if math.isfinite(v)]
    mean = statistics.fmean(finite) if finite else math.nan
    return mean, statistics.stdev(finite) if len(finite) > 1 else None


def format_mean_std(mean: float, std: float | None, digits: int = 1) -> str:
    """``"61.3 ± 0.4"``; the mean alone when the std is undefined (a single seed)."""
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _units(per_seed: bool) -> dict[str, str]:
    """The ``units`` of results.json (analysis.io.write_json)."""
    units = {**{k: "percent" for k in METRICS}, "seen_logit_scale": "dimensionless", "train_seconds": "seconds",
             "epoch_seconds": "seconds", "loss": "nats"}
    if per_seed:
        units.pop("loss")
        units.update({**{f"std.{k}": "percent" for k in METRICS}, **{f"per_seed[].{k}": "percent" for k in METRICS},
                      "per_seed[].seen_logit_scale": "dimensionless", "per_seed[].loss": "nats"})
    return units


def _loss_figure(histories: list[History], seeds: list[int], title: str):
    from matplotlib.figure import Figure  # no pyplot: the process-wide backend is left alone

    fig = Figure(figsize=(5, 3.2), layout="constrained")
    ax = fig.subplots()
    for seed, history in zip(seeds, histories):
        epochs = range(1, len(history.loss) + 1)
        ax.plot(epochs, history.loss, marker="o", markersize=3, label=f"seed {seed}")
    ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)", title=title)
    if len(seeds) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def run_train(run: TrainRun, report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train and evaluate the preset of ``run`` and write its outputs (module docstring).

    ``report(results)`` (if given) is called with the results before any file is written, so
    a failed write (a full disk) cannot lose what the run measured.

    Returns:
        The content of ``results.json`` (without the frame that :func:`analysis.io.write_json` adds).

    Raises:
        FileExistsError: outputs exist in ``run.out`` and ``overwrite`` is False.
        DataError, ValueError: bad data or options (the message names the fix).
    """
    with OutputFolder(run.out, run.output_files, marker="results.json", overwrite=run.overwrite) as folder:
        device = resolve_device(run.train.device)
        data = load_dataset(run.dataset, data_root=run.data_root,
                            synthetic_features=run.synthetic_features, seed=run.data_seed)
        if run.train.batch_size > data.trainval.numel():
            raise ValueError(f"--batch-size {run.train.batch_size} exceeds the {data.trainval.numel()} trainval samples of "
                             f"{data.name}: every epoch would be one step on all of them; use at most "
                             f"{data.trainval.numel()} (the recipe: 256)")
        config = preset_config(run.preset, data.attribute_dim, data.feature_dim,
                               standardization_mode=run.standardization_mode)
        seeds = list(run.seeds) if run.seeds is not None else [run.train.seed]
        if run.seeds is None:
            model, history = train_model(config, data, run.train)
            models, histories = [model], [history]
        else:
            models, histories = train_seeds(config, data, run.train, seeds)
        scores = [evaluate(m, data, attribute_norm=run.train.attribute_norm,
                           seen_logit_scale=run.seen_logit_scale).percent() for m in models]
        common = {
            "train_seconds": histories[0].seconds,
            "epochs": len(histories[0].loss),
            "dataset": data.name,
            "data_source": data.source,
            "preset": run.preset,
            "device": str(device),
            "fast_path": histories[0].path,
        }
        if run.seeds is None:
            results = {**scores[0], **common, "seed": run.train.seed, "loss": histories[0].loss,
                       "epoch_seconds": histories[0].epoch_seconds, "diverged": histories[0].diverged}
        else:
            summary = {k: mean_std([s[k] for s in scores]) for k in METRICS}
            results = {
                **{k: mean for k, (mean, _) in summary.items()},
                "std": {k: std for k, (_, std) in summary.items()},
                **common,
                "seeds": seeds,
                "per_seed": [{"seed": seed, **score, "loss": h.loss, "diverged": h.diverged}
                             for seed, score, h in zip(seeds, scores, histories)],
                "epoch_seconds": histories[0].epoch_seconds,
                "diverged": any(h.diverged for h in histories),  # any seed's loss rose
            }
        if report is not None:
            report(results)
        write_json(folder.stage("config.json"), {"run": run, "model": config, "data": data.summary()})
        write_json(folder.stage("environment.json"), environment_info(device))
        if run.save_model:
            for seed, model, score in zip(seeds, models, scores):
                name = "model.pt" if run.seeds is None else f"model-seed{seed}.pt"
                save_checkpoint(folder.stage(name), model,
                                {"run": run, "seed": seed, "data": data.summary(), "results": {**score, **common}})
        write_png(folder.stage("loss.png"), _loss_figure(histories, seeds,
                                                     f"{data.name} ({data.source}), preset {run.preset}"))
        # the marker: published last, when the run is complete
        write_json(folder.stage("results.json"), results, units=_units(run.seeds is not None))
    return results
