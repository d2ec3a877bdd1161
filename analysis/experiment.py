"""``cnzsl train`` as a typed function: load data, train a preset, evaluate, write results.

:func:`run_train` takes a frozen :class:`TrainRun` (the command line is a thin layer over
it) and writes into ``run.out``:

    results.json      zsl_unseen, gzsl_unseen, gzsl_seen, gzsl_harmonic, ausuc (percent),
                      train_seconds, per-epoch loss and seconds
    config.json       the TrainRun, the model config and the data summary
    environment.json  versions, platform and device
    model.pt          the trained model (analysis.checkpoint), unless save_model=False
    loss.png          the training loss per epoch

Nothing a user had is overwritten: if any of these files exists in ``out`` the run stops
before doing any work, unless ``overwrite=True``.  Every file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.checkpoint import save_checkpoint
from analysis.datasets import canonical_dataset_name, load_dataset
from analysis.evaluation import evaluate
from analysis.io import environment_info, refuse_to_overwrite, write_json, write_png
from analysis.model import PRESETS, preset_config
from analysis.training import History, TrainConfig, resolve_device, train_model

__all__ = ["OUTPUT_FILES", "TrainRun", "run_train"]

OUTPUT_FILES = ("results.json", "config.json", "environment.json", "model.pt", "loss.png")


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
    seen_logit_scale: float | None = None  # None: 0.95 (1.0 on CUB), as the authors
    save_model: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.seen_logit_scale is not None and not self.seen_logit_scale > 0:
            raise ValueError(f"seen_logit_scale must be positive, got {self.seen_logit_scale}")


def _loss_figure(history: History, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), constrained_layout=True)
    epochs = range(1, len(history.loss) + 1)
    ax.plot(epochs, history.loss, marker="o", markersize=3)
    ax.set(xlabel="epoch", ylabel="training cross-entropy (nats)", title=title)
    ax.grid(alpha=0.3)
    return fig


def run_train(run: TrainRun) -> dict[str, Any]:
    """Train and evaluate the preset of ``run`` and write its outputs (module docstring).

    Returns:
        The content of ``results.json``.

    Raises:
        FileExistsError: outputs exist in ``run.out`` and ``overwrite`` is False.
        DataError, ValueError: bad data or options (the message names the fix).
    """
    refuse_to_overwrite(run.out, OUTPUT_FILES, run.overwrite)
    device = resolve_device(run.train.device)
    data = load_dataset(run.dataset, data_root=run.data_root,
                        synthetic_features=run.synthetic_features, seed=run.data_seed)
    config = preset_config(run.preset, data.attribute_dim, data.feature_dim,
                           standardization_mode=run.standardization_mode)
    model, history = train_model(config, data, run.train)
    scores = evaluate(model, data, attribute_norm=run.train.attribute_norm,
                      seen_logit_scale=run.seen_logit_scale)
    results = {
        **scores.percent(),
        "train_seconds": history.seconds,
        "epochs": len(history.loss),
        "loss": history.loss,
        "epoch_seconds": history.epoch_seconds,
        "dataset": data.name,
        "data_source": data.source,
        "preset": run.preset,
        "device": str(device),
    }
    write_json(run.out / "config.json", {"run": run, "model": config, "data": data.summary()})
    write_json(run.out / "environment.json", environment_info(device))
    if run.save_model:
        save_checkpoint(run.out / "model.pt", model,
                        {"run": run, "data": data.summary(), "results": results})
    write_png(run.out / "loss.png", _loss_figure(history, f"{data.name} ({data.source}), preset {run.preset}"))
    write_json(run.out / "results.json", results)  # last: its presence marks a finished run
    return results
