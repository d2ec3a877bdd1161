"""The three models of the loss-surface figures (docs/science.md section 5.1), trained once and cached.

The loss-surface figures (:mod:`figures.loss_surface`, :mod:`figures.loss_slices`,
:mod:`figures.spectral_density`) study the same three models, trained with the paper's
recipe (:mod:`analysis.training`) on the same data:

    classifier   traditional classifier: one weight row per seen class, NS head (gamma^2 cos)
    zsl_mlp      ZSL attribute embedder, 3-layer MLP without CN  (landscape kind "mlp")
    zsl_cn       the same MLP with class normalization            (landscape kind "cn")

**Decision: the trajectory is recorded in the shared training run.**  Each model is
trained with :class:`landscape.comparison.TrajectoryProbe` as the ``on_step`` callback
(gradient norm, top Hessian eigenvalue, effective beta every ``probe_every`` steps, on the
step's batch; the probes are pure, so the run is bitwise the one without probes), and the
records are cached with the trained weights.  Whichever figure runs first trains; the
others reuse the cache, so ``--only loss_slices`` works alone and nothing is trained twice.

**Cache.**  ``ctx.out/data/landscape_models_seed{S}.pt`` (``torch.save``, written
atomically) holds, per model, the state dict (CPU), the trajectory records and the
training history, beside a *key*: this format's version, the seed, the
:class:`TrainingBudget`, the training recipe (:class:`~analysis.training.TrainConfig`
without ``progress``, device included) and the data's identity (name, source, data root,
data seed, trainval subset), and the sha256 of each model's state dict
(:func:`analysis.checkpoint.state_digest`).  The file is reused only when its key equals the
current one and every model's tensors match their sha256; otherwise (or when it cannot be
read) the models are retrained and the file replaced, so a changed byte in a weight is
never drawn as a result.

**Data.**  The first data set of ``ctx.datasets()``, AWA2 when it is there (the default of
``cnzsl landscape``).  A budget may restrict training to ``trainval_samples`` samples: a
class-stratified random subset (round robin over the seen classes, so every seen class
keeps samples and the class set of the objective is unchanged), drawn from a generator
seeded with ``ctx.data_seed + 101``.  The final-model probes (slices, spectral density)
use :func:`evaluation_batches`: a class-stratified subset of the *training* samples,
generator ``ctx.data_seed + 202``.

**Budgets.**  :data:`FULL_BUDGET` and :data:`FAST_BUDGET` (``ctx.fast``); entries of
``ctx.extra["landscape_models"]`` override them (tests train tiny runs this way).
:meth:`FigureContext.budget` does the same for each figure's own budget dataclass.

Randomness: model ``S`` is initialized and shuffled with seed ``S`` (the recipe's
generator), its Lanczos start vectors come from ``Generator().manual_seed(S + 1)``; the
figures draw slice directions from ``S + 2`` and SLQ probes from ``S + 3``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from analysis.checkpoint import state_digest
from analysis.data import ZSLData
from analysis.io import atomic_write, to_jsonable
from analysis.model import ClassifierConfig, EmbedderConfig
from analysis.training import TrainConfig, build_model, resolve_device, train
from figures.context import DataChoice, FigureContext
from landscape.comparison import STYLE_NAMES, TrajectoryProbe
from landscape.comparison import model_config as landscape_model_config  # by landscape's kind names
from landscape.objective import Batch, zsl_batches

__all__ = [
    "CACHE_FORMAT", "EXTRA_KEY", "FAST_BUDGET", "FULL_BUDGET", "LANDSCAPE_KIND", "MODELS", "LandscapeData",
    "TrainedModels", "TrainingBudget", "evaluation_batches", "landscape_data", "model_cache_path", "model_config",
    "final_models", "stratified_subset", "train_config", "trained_models", "training_budget",
]

MODELS = ("classifier", "zsl_mlp", "zsl_cn")  # names of figures.style's colours and labels
LANDSCAPE_KIND = {name: kind for kind, name in STYLE_NAMES.items()}  # landscape.MODEL_KINDS
EXTRA_KEY = "landscape_models"  # ctx.extra[EXTRA_KEY] overrides TrainingBudget entries
CACHE_FORMAT = 2  # bump when the content of the .pt cache changes (2: state_sha256)
_TRAIN_SUBSET_OFFSET = 101  # generator seed = ctx.data_seed + offset
_EVAL_SUBSET_OFFSET = 202
_EVAL_BATCH_SIZE = 1024  # samples per batch of the evaluation objective (memory only)
_PREFERRED_DATASET = "AWA2"

B = TypeVar("B")

def _check_positive_int(name: str, value: Any, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TrainingBudget:
    """How the three models are trained and probed along training."""

    epochs: int = 5  # of the paper's recipe (Adam 5e-4, batches of 256)
    trainval_samples: int | None = None  # class-stratified training subset; None: all trainval
    probe_every: int = 25  # steps between trajectory probes (step 0 included)
    lanczos_max_steps: int = 30  # Krylov dimension per Lanczos run of a top-eigenvalue probe
    # relative residual of the top Ritz pair: the eigenvalue error is at most the residual (and
    # usually its square over the gap); 1e-2 instead of comparison's 1e-3 saves a quarter of the
    # probe time and moved lambda_max by < 0.1% on trained AWA2 models
    lanczos_tol: float = 1e-2
    eta_multipliers: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)  # Santurkar step sizes, x lr

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta_multipliers", tuple(float(m) for m in self.eta_multipliers))
        for name in ("epochs", "probe_every", "lanczos_max_steps"):
            _check_positive_int(name, getattr(self, name), "TrainingBudget")
        if self.trainval_samples is not None:
            _check_positive_int("trainval_samples", self.trainval_samples, "TrainingBudget")
        if not (isinstance(self.lanczos_tol, (int, float)) and self.lanczos_tol > 0):
            raise ValueError(f"TrainingBudget.lanczos_tol must be positive, got {self.lanczos_tol!r}")
        if not self.eta_multipliers or min(self.eta_multipliers) <= 0:
            raise ValueError(f"TrainingBudget.eta_multipliers must be positive step-size factors, got "
                             f"{self.eta_multipliers!r}")


FULL_BUDGET = TrainingBudget()
# --fast: 1 epoch on 4096 of the trainval samples (16 steps), a probe every 4 steps
FAST_BUDGET = TrainingBudget(epochs=1, trainval_samples=4096, probe_every=4, lanczos_max_steps=12)


def training_budget(ctx: FigureContext) -> TrainingBudget:
    """The shared training budget of ``ctx`` (:meth:`FigureContext.budget` with :data:`EXTRA_KEY`)."""
    return ctx.budget(EXTRA_KEY, FULL_BUDGET, FAST_BUDGET)


# ------------------------------------------------------------------------------ data
@dataclass(frozen=True, eq=False)
class LandscapeData:
    """The data the three models train on: ``train.trainval`` is the (sub)set used."""

    choice: DataChoice
    train: ZSLData  # trainval restricted to the training subset
    trainval_total: int  # trainval samples of the full data set
    data_seed: int

    @property
    def train_samples(self) -> int:
        return int(self.train.trainval.numel())

    def identity(self) -> dict[str, Any]:
        """What the model cache must match: data set, source, root, seed, training subset."""
        return {"name": self.choice.name, "source": self.choice.source,
                "data_root": None if self.choice.data_root is None else str(self.choice.data_root),
                "data_seed": self.data_seed, "train_samples": self.train_samples,
                "trainval_total": self.trainval_total}

    def describe(self) -> str:
        """"AWA2 synthetic, 4096 of 23527 trainval samples" (for captions)."""
        used = (f"all {self.trainval_total}" if self.train_samples == self.trainval_total
                else f"{self.train_samples} of {self.trainval_total}")
        return f"{self.choice.name} {self.choice.source}, {used} trainval samples"


_DATA_MEMO: dict[tuple[Any, ...], ZSLData] = {}  # the last data set loaded (a GBU set takes seconds)


def _load(ctx: FigureContext, choice: DataChoice) -> ZSLData:
    key = (choice, ctx.data_seed)
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # one entry: AWA2 features alone are 300 MB
        _DATA_MEMO[key] = ctx.load(choice)
    return _DATA_MEMO[key]


def landscape_data(ctx: FigureContext, budget: TrainingBudget | None = None) -> LandscapeData:
    """The data set of the loss-surface figures (AWA2 if available, else the first of
    ``ctx.datasets()``), its trainval restricted as ``budget.trainval_samples`` says.

    Raises:
        ValueError: ``trainval_samples`` is below the number of seen classes.
    """
    budget = training_budget(ctx) if budget is None else budget
    choices = ctx.datasets()
    choice = next((c for c in choices if c.name == _PREFERRED_DATASET), choices[0])
    data = _load(ctx, choice)
    total = int(data.trainval.numel())
    if budget.trainval_samples is not None and budget.trainval_samples < total:
        generator = torch.Generator().manual_seed(ctx.data_seed + _TRAIN_SUBSET_OFFSET)
        subset = stratified_subset(data.trainval, data.labels, budget.trainval_samples, generator=generator)
        data = dataclasses.replace(data, trainval=subset)
    return LandscapeData(choice, data, total, ctx.data_seed)


def stratified_subset(indices: Tensor, labels: Tensor, n: int, *, generator: torch.Generator) -> Tensor:
    """``n`` of ``indices`` [N], drawn round robin over the classes ``labels[indices]``.

    The indices are shuffled with ``generator``; each sample gets its rank within its class
    in that order, and the ``n`` samples of lowest (rank, shuffled position) are kept, so
    class counts differ by at most one (or a class is exhausted) and every class is kept
    when ``n`` is at least the number of classes.

    Returns:
        The chosen indices, sorted ascending, ``[min(n, N)]``.

    Raises:
        ValueError: ``n`` is smaller than the number of classes.
    """
    classes = torch.unique(labels[indices])
    if n < classes.numel():
        raise ValueError(f"a stratified subset of {n} samples cannot keep all {classes.numel()} classes; "
                         f"ask for at least {classes.numel()} samples (e.g. trainval_samples=None for all)")
    shuffled = indices[torch.randperm(indices.numel(), generator=generator).to(indices.device)]
    lab = labels[shuffled]  # [N]
    order = torch.argsort(lab, stable=True)  # [N]: by class, shuffled order within a class
    _, counts = torch.unique_consecutive(lab[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)  # [N]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts  # rank within the class
    position = torch.arange(order.numel(), device=order.device)
    keep = torch.argsort(rank * order.numel() + position)[:n]  # round robin over the classes
    return shuffled[keep].sort().values


def evaluation_batches(data: LandscapeData, samples: int, *, device: str | torch.device | None = None) -> list[Batch]:
    """The training objective on ``samples`` class-stratified *training* samples
    (generator ``data_seed + 202``), in batches of 1024: what the final-model probes use.

    ``L = sum_b n_b L_b / sum_b n_b`` over these batches is the mean cross-entropy (nats) on
    the subset, seen-class attributes normalized as in training (``l2_sqrt``).
    """
    trainval = data.train.trainval
    if samples < trainval.numel():
        generator = torch.Generator().manual_seed(data.data_seed + _EVAL_SUBSET_OFFSET)
        trainval = stratified_subset(trainval, data.train.labels, samples, generator=generator)
    subset = dataclasses.replace(data.train, trainval=trainval)
    return zsl_batches(subset, batch_size=_EVAL_BATCH_SIZE, device=device)


# ---------------------------------------------------------------------------- models
def model_config(name: str, data: ZSLData) -> ClassifierConfig | EmbedderConfig:
    """The configuration of model ``name`` (one of :data:`MODELS`) for ``data``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in LANDSCAPE_KIND:
        raise ValueError(f"unknown landscape model {name!r}; choose one of {', '.join(MODELS)}")
    return landscape_model_config(LANDSCAPE_KIND[name], data)


@dataclass
class TrainedModels:
    """The three trained models of one seed, their trajectories and where they are cached."""

    seed: int
    models: dict[str, nn.Module]  # MODELS -> trained model (on the context's device, training mode)
    trajectories: dict[str, list[dict[str, Any]]]  # TrajectoryProbe.records per model
    histories: dict[str, dict[str, Any]]  # per model: epoch losses, steps, seconds
    path: Path
    reused: bool  # True: read from `path`; False: trained now (and written to `path`)
    key: dict[str, Any] = field(default_factory=dict)


def model_cache_path(ctx: FigureContext, seed: int) -> Path:
    return ctx.out / "data" / f"landscape_models_seed{seed}.pt"


def train_config(ctx: FigureContext, budget: TrainingBudget, seed: int) -> TrainConfig:
    """The paper's recipe with the budget's epochs and ``seed``, on the context's device."""
    return TrainConfig(epochs=budget.epochs, seed=seed, device=str(resolve_device(ctx.device)),
                       progress=ctx.progress)


def _cache_key(budget: TrainingBudget, data: LandscapeData, config: TrainConfig, seed: int) -> dict[str, Any]:
    recipe = {k: v for k, v in dataclasses.asdict(config).items() if k != "progress"}
    return to_jsonable({"format": CACHE_FORMAT, "seed": seed, "budget": budget, "recipe": recipe,
                        "data": data.identity(), "models": MODELS})


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached payload if ``path`` holds one with this key, else None.

    A missing file is silently None; a file that cannot be read as a checkpoint (torn,
    foreign, unreadable) or that was made with other settings is discarded with one line
    on stderr saying why, and the models are retrained over it.
    """
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch's weights-only unpickler raises many types on
        # arbitrary bytes (UnpicklingError, EOFError, IndexError, KeyError, ...): any of them means
        # "not a readable cache", and the reason is printed
        print(f"cnzsl: discarding the model cache {path}: it cannot be read ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else 'no message'}); retraining", file=sys.stderr)
        return None
    if not isinstance(payload, dict) or payload.get("key") != json.dumps(key, sort_keys=True):
        print(f"cnzsl: discarding the model cache {path}: it was made with other settings (budget, "
              f"recipe, data or seed); retraining", file=sys.stderr)
        return None
    digests, states = payload.get("state_sha256") or {}, payload.get("models") or {}
    if any(name not in states or digests.get(name) != state_digest(states[name]) for name in MODELS):
        print(f"cnzsl: discarding the model cache {path}: its tensors do not match the sha256 stored when it "
              "was written (a changed byte); retraining", file=sys.stderr)
        return None
    return payload


def trained_models(
    ctx: FigureContext,
    seed: int,
    *,
    budget: TrainingBudget | None = None,
    data: LandscapeData | None = None,
) -> TrainedModels:
    """The three models trained with ``seed`` (module docstring), from the cache when it
    matches, else trained now with the trajectory probes and cached.

    Args:
        ctx: output folder (cache in ``ctx.out/data``), device, progress.
        seed: initial weights and shuffles; Lanczos start vectors use ``seed + 1``.
        budget: default :func:`training_budget`.
        data: default :func:`landscape_data`.

    Returns:
        :class:`TrainedModels`; ``reused`` says whether the cache was used.
    """
    budget = training_budget(ctx) if budget is None else budget
    data = landscape_data(ctx, budget) if data is None else data
    config = train_config(ctx, budget, seed)
    device = torch.device(config.device)
    key = _cache_key(budget, data, config, seed)
    path = model_cache_path(ctx, seed)
    cached = _read_cache(path, key)
    if cached is not None:
        models = {}
        for name in MODELS:
            model = build_model(model_config(name, data.train), seed)
            model.load_state_dict(cached["models"][name])
            models[name] = model.to(device).train()
        return TrainedModels(seed, models, cached["trajectories"], cached["histories"], path, True, key)

    etas = tuple(config.lr * m for m in budget.eta_multipliers)
    models, trajectories, histories = {}, {}, {}
    for name in MODELS:
        model = build_model(model_config(name, data.train), seed)
        probe = TrajectoryProbe(budget.probe_every, etas, budget.lanczos_tol, budget.lanczos_max_steps,
                                seed=seed + 1)
        history = train(model, data.train, config, on_step=probe)
        models[name], trajectories[name] = model, probe.records
        histories[name] = {"loss": list(history.loss), "steps": history.steps, "seconds": history.seconds,
                           "etas": list(etas)}
    states = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for name, m in models.items()}
    payload = {
        "key": json.dumps(key, sort_keys=True),
        "models": states,
        "state_sha256": {name: state_digest(state) for name, state in states.items()},
        "trajectories": trajectories,
        "histories": histories,
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    return TrainedModels(seed, models, trajectories, histories, path, False, key)


def final_models(
    ctx: FigureContext, samples: int,
) -> tuple[TrainedModels, list[Batch], LandscapeData, TrainingBudget]:
    """``(run, batches, data, training)``: the three models trained with the first seed of
    ``ctx`` (from the cache when it matches), the objective's batches on ``samples``
    training samples on the models' device, the data and the training budget: what the
    final-model figures (slices, spectral density) probe and record."""
    training = training_budget(ctx)
    data = landscape_data(ctx, training)
    run = trained_models(ctx, ctx.seeds[0], budget=training, data=data)
    device = next(run.models["classifier"].parameters()).device
    return run, evaluation_batches(data, samples, device=device), data, training
