"""The paper's training recipe (docs/science.md section 3.1), with all data resident on the device.

Recipe: softmax cross-entropy over the **seen** classes, every step passing the whole
seen-class attribute matrix [K_s, d_a] through the model; Adam (lr 5e-4, L2 weight decay
1e-4, as ``torch.optim.Adam``), StepLR (x0.1 every 25 epochs), 50 epochs, mini-batches of
256 ``trainval`` images reshuffled every epoch (the last, smaller batch is kept, like the
authors' DataLoader), attributes normalized once over all classes with ``attribute_norm``.

The optimizer is Adam's fused implementation by default (``fused_optimizer``): the same
update as the default ``foreach`` one up to float32 rounding, about 2.5 times faster per
optimizer step on the CPU, where the step costs as much as the forward and backward pass.

Data never leaves the device: a seeded permutation of the ``trainval`` rows is drawn on
the CPU once per epoch and batches are slices of device tensors, so the loop runs no
collation and synchronizes with the device once per epoch (for the epoch loss).  On the
CPU the run is deterministic for a given seed.

The loop itself is :func:`analysis.recipe_loop.fit`, shared with the many-seeds trainer
(:mod:`analysis.seed_ensemble`).  On CUDA (``fast_path="auto"``) it captures a whole epoch
in a CUDA graph and replays it, which removes the per-step launch and Python overhead
that dominates this tiny model; the plain loop runs on the CPU and whenever an
``on_step`` callback is given.

``on_step`` takes one callback or a sequence of them (a recorder and a probe in one run):
after each optimizer step they are called in the order given, all with the same
:class:`StepInfo`; an empty sequence is no callback.

A diverging run is never reported as if nothing happened: a loss that becomes NaN or
infinite stops it with a :class:`DivergedError` (epoch, step, last finite loss, "lower
--lr"), and a run whose loss rose (:attr:`History.diverged`) is flagged by ``cnzsl train``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from analysis.data import ZSLData
from analysis.model import AttributeEmbedderModel, ClassifierConfig, EmbedderConfig, LinearClassifier
from analysis.normalization import ATTRIBUTE_NORMS, normalize_attributes
from analysis.recipe_loop import FAST_PATHS, DivergedError, fit

__all__ = ["DIVERGENCE_TOLERANCE", "DivergedError", "History", "OnStep", "StepInfo", "TrainConfig", "build_model", "resolve_device", "seen_targets", "train", "train_model"]

DEVICES = ("auto", "cpu", "cuda")

# History.diverged: the last epoch's mean loss exceeds the first's by more than this relative
# margin (float32 noise on a flat run stays far below it; a run that learns drops by far more).
DIVERGENCE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; defaults are the paper's reference values."""

    epochs: int = 50
    batch_size: int = 256  # images per step
    lr: float = 5e-4  # Adam learning rate
    weight_decay: float = 1e-4  # Adam's L2 penalty (not AdamW's decoupled decay)
    lr_step_epochs: int = 25  # StepLR period
    lr_decay: float = 0.1  # StepLR factor
    seed: int = 1  # initial weights and the per-epoch shuffles
    attribute_norm: str = "l2_sqrt"  # analysis.normalization.ATTRIBUTE_NORMS
    device: str = "auto"  # "auto" picks CUDA when present
    fused_optimizer: bool = True  # Adam's fused kernel: same update, ~2.5x faster step on CPU
    fast_path: str = "auto"  # "auto": whole epochs as CUDA graphs on CUDA, plain loop on CPU
    progress: bool = True  # tqdm bar over epochs
    progress_label: str = "train"  # the bar's name (e.g. the model, when a command trains several)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr_step_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not self.lr > 0 or not self.weight_decay >= 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0 and 0 < lr_decay <= 1, got lr={self.lr}, "
                f"weight_decay={self.weight_decay}, lr_decay={self.lr_decay}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 2**63 - 1:
            raise ValueError(f"seed must be an integer in [0, 2^63 - 1] (a torch.Generator seed), got {self.seed!r}")
        if self.attribute_norm not in ATTRIBUTE_NORMS:
            raise ValueError(f"unknown attribute_norm {self.attribute_norm!r}; choose one of {ATTRIBUTE_NORMS}")
        if self.fast_path not in FAST_PATHS:
            raise ValueError(f"unknown fast_path {self.fast_path!r}; choose one of {FAST_PATHS}")
        _check_device_name(self.device)


@dataclass
class History:
    """What a training run returns: per-epoch loss and timings."""

    loss: list[float] = field(default_factory=list)  # mean cross-entropy over each epoch's samples
    epoch_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole loop, device synchronized
    device: str = "cpu"
    steps: int = 0
    path: str = "plain"  # "plain" loop or "graph" (whole epochs replayed as CUDA graphs)

    @property
    def diverged(self) -> bool:
        """The loss rose: ``loss[-1] > loss[0] * (1 + DIVERGENCE_TOLERANCE)``, the last epoch's
        mean loss against the first's (never with fewer than two epochs).  Such a run still has
        results, flagged: ``cnzsl train`` warns and records ``diverged`` in results.json.

        Example: ``History(loss=[4.6, 6.4]).diverged`` is True, ``History(loss=[4.6, 1.2]).diverged`` False.
        """
        return len(self.loss) >= 2 and self.loss[-1] > self.loss[0] * (1 + DIVERGENCE_TOLERANCE)


@dataclass(frozen=True)
class StepInfo:
    """Passed to ``on_step`` after each optimizer step (the model must not be modified)."""

    step: int  # 0-based global step
    epoch: int  # 0-based epoch
    loss: Tensor  # the step's mean loss, on the device (0-dim, detached)
    model: nn.Module
    features: Tensor  # the step's batch [B, d_z]
    targets: Tensor  # [B], indices into the seen classes
    attributes: Tensor  # normalized seen-class attributes [K_s, d_a]


OnStep = Callable[[StepInfo], None]  # an ``on_step`` callback


def _callbacks(on_step: OnStep | Sequence[OnStep] | None) -> list[OnStep]:
    """``on_step`` as a list of callbacks: ``None`` -> ``[]``, a callable -> ``[it]``, a sequence as given.

    Raises:
        TypeError: ``on_step`` is neither ``None``, a callable nor a list or tuple of callables.
    """
    if on_step is None:
        return []
    if callable(on_step):
        return [on_step]
    if not isinstance(on_step, (list, tuple)):
        raise TypeError(
            f"on_step must be a callable f(StepInfo), a list or tuple of them, or None, got "
            f"{type(on_step).__name__}"
        )
    bad = [f"{i}: {type(f).__name__}" for i, f in enumerate(on_step) if not callable(f)]
    if bad:
        raise TypeError(f"every on_step callback must be callable f(StepInfo); not callable at index {', '.join(bad)}")
    return list(on_step)


def _check_device_name(device: str | torch.device) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` with a non-negative integer N, else a ValueError."""
    name = str(device)
    if name in DEVICES or re.fullmatch(r"cuda:\d+", name):
        return
    raise ValueError(f"unknown device {name!r}; choose one of {DEVICES} or 'cuda:N' with an integer N")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _check_device_name(device)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; use --device cpu or auto")
    return device


def build_model(config: EmbedderConfig | ClassifierConfig, seed: int) -> nn.Module:
    """The model for ``config``, its weights drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(config, EmbedderConfig):
        return AttributeEmbedderModel(config, generator=generator)
    if isinstance(config, ClassifierConfig):
        return LinearClassifier(config, generator=generator)
    raise TypeError(f"expected an EmbedderConfig or ClassifierConfig, got {type(config).__name__}")


def seen_targets(data: ZSLData, indices: Tensor | None = None) -> Tensor:
    """Labels of the samples ``indices`` (default ``data.trainval``) remapped to 0..K_s-1,
    the column order of the seen classes; a sample of an unseen class maps to -1."""
    to_seen = torch.full((data.num_classes,), -1, dtype=torch.int64, device=data.device)
    seen = data.seen_classes
    to_seen[seen] = torch.arange(seen.numel(), device=data.device)
    return to_seen[data.labels[data.trainval if indices is None else indices]]


def train(
    model: nn.Module,
    data: ZSLData,
    config: TrainConfig = TrainConfig(),
    *,
    on_step: OnStep | Sequence[OnStep] | None = None,
) -> History:
    """Train ``model`` in place on ``data.trainval`` with the recipe in ``config``.

    Args:
        model: any model of the protocol ``model(features, attributes) -> logits``.
        data: the data set (moved to the device for the run; the caller's copy is untouched).
        config: the recipe.
        on_step: optional callback after each step (for probes that record a trajectory), or
            a list or tuple of callbacks, called in that order with the same :class:`StepInfo`;
            ``[]`` is the same as ``None``.

    Returns:
        The :class:`History`; the model is left on the device in training mode.

    Raises:
        TypeError: ``on_step`` is not a callable, a list or tuple of callables, or ``None``.
        DivergedError: a step's loss became NaN or infinite (it names the epoch, the step and
            the last finite loss; the fix is a smaller ``lr``).
    """
    callbacks = _callbacks(on_step)
    device = resolve_device(config.device)
    data = data.to(device)
    model.to(device).train()
    attributes = normalize_attributes(data.attributes, config.attribute_norm)[data.seen_classes]
    features = data.features[data.trainval]  # [n, d_z], resident on the device
    targets = seen_targets(data)  # [n]
    n = features.shape[0]

    shuffle = torch.Generator().manual_seed(config.seed)

    def step_loss(rows: Tensor) -> Tensor:
        return nn.functional.cross_entropy(model(features[rows], attributes), targets[rows])

    def callback(step: int, epoch: int, loss: Tensor, rows: Tensor) -> None:
        info = StepInfo(step, epoch, loss, model, features[rows], targets[rows], attributes)
        for f in callbacks:  # in the order given
            f(info)

    log = fit(model.parameters(), step_loss, lambda: torch.randperm(n, generator=shuffle), n, config, device,
              on_step=callback if callbacks else None)
    return History(loss=[float(x) for x in log.loss], epoch_seconds=log.epoch_seconds, seconds=log.seconds,
                   device=str(device), steps=log.steps, path=log.path)


def train_model(
    config: EmbedderConfig | ClassifierConfig,
    data: ZSLData,
    train_config: TrainConfig = TrainConfig(),
    **kwargs: OnStep | Sequence[OnStep] | None,
) -> tuple[nn.Module, History]:
    """Build the model of ``config`` with ``train_config.seed`` and :func:`train` it."""
    model = build_model(config, train_config.seed)
    return model, train(model, data, train_config, **kwargs)
