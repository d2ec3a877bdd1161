"""What every continual-learning baseline shares: its configuration, its view of the model,
its option checks and its gradient estimates.

Every method is model-agnostic: it sees the model only through the trainable entries of
``model.named_parameters()`` (``requires_grad=True``, in that order) and through the call
protocol ``model(features [B, d_z], attributes [K, d_a]) -> logits [B, K]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from analysis.class_standardization import frozen_class_statistics

__all__ = [
    "AGEM_MEMORY_PER_CLASS", "Batch", "LossFn", "MethodConfig", "agem_memory_for", "batch_gradients",
    "check_decay_weight", "check_positive_int", "trainable_parameters",
]

Batch = tuple[Tensor, Tensor, Tensor]  # (features [B, d_z], targets [B], attributes [K, d_a])
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits [B, K], targets [B]) -> scalar


def check_decay_weight(decay: float, weight: float, prefix: str = "") -> None:
    if not (math.isfinite(decay) and 0.0 <= decay <= 1.0):
        raise ValueError(f"{prefix}decay must lie in [0, 1] (1: never forget, 0: last task only), "
                         f"got {decay}")
    if not (math.isfinite(weight) and weight >= 0.0):
        raise ValueError(f"{prefix}weight must be a finite number >= 0 (0 disables the penalty), "
                         f"got {weight}")


def check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs the methods act on: those with ``requires_grad``."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (requires_grad=True); "
                         f"unfreeze the parameters the method should act on")
    return params


def batch_gradients(model: nn.Module, batches: Iterable[Batch],
                     objective: Callable[[Tensor, Tensor], Tensor],
                     transform: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``(1/N) sum_batches transform(d objective(model(x, A), y) / d theta)`` per parameter,
    via ``torch.autograd.grad`` (``.grad`` is left untouched; unused parameters get 0).

    Forward passes run in the model's current mode but never update the running statistics
    of class standardization (:func:`analysis.class_standardization.frozen_class_statistics`):
    an estimate is a probe, not a training step.
    """
    params = trainable_parameters(model)
    tensors = [p for _, p in params]
    total = [torch.zeros_like(p) for p in tensors]
    count = 0
    with frozen_class_statistics(model):
        for features, targets, attributes in batches:
            value = objective(model(features, attributes), targets)
            grads = torch.autograd.grad(value, tensors, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc += transform(g.detach())
            count += 1
    if count == 0:
        raise ValueError("batches is empty; pass at least one (features, targets, attributes) batch")
    return {n: acc / count for (n, _), acc in zip(params, total)}


# Per-class A-GEM memory of the reference code (configs/agem.yml): 25 images per class on
# AWA, 10 on CUB, 5 on SUN (SUN has 717 classes of about 20 training images each).
AGEM_MEMORY_PER_CLASS: dict[str, int] = {"AWA1": 25, "AWA2": 25, "CUB": 10, "SUN": 5}


@dataclass(frozen=True)
class MethodConfig:
    """Hyperparameters of every CZSL baseline; defaults are the reference values."""

    ewc_decay: float = 0.99  # gamma of the online Fisher, Omega <- gamma Omega + F_task
    ewc_weight: float = 10.0  # lambda of the EWC penalty lambda/2 sum F (theta - a)^2
    mas_decay: float = 0.95  # gamma of the online MAS importance
    mas_weight: float = 1e-4  # lambda of the MAS penalty
    agem_memory_per_class: int = 10  # samples kept per class (CUB; SUN: 5, agem_memory_for)
    # memory samples per reference gradient; None: the protocol's (toolkit 256, authors 128),
    # resolved by analysis.czsl.protocol.CZSLConfig
    agem_memory_batch: int | None = None

    def __post_init__(self) -> None:
        for name in ("ewc", "mas"):
            check_decay_weight(getattr(self, f"{name}_decay"), getattr(self, f"{name}_weight"),
                                prefix=f"{name}_")
        check_positive_int(self.agem_memory_per_class, "agem_memory_per_class")
        if self.agem_memory_batch is not None:
            check_positive_int(self.agem_memory_batch, "agem_memory_batch")


def agem_memory_for(dataset: str) -> int:
    """Samples per class in the A-GEM memory for ``dataset``, as the reference CLI sets it.

    ``"AWA1"``, ``"AWA2"`` -> 25, ``"CUB"`` -> 10, ``"SUN"`` -> 5 (case-insensitive), any
    other name -> 10 (the :class:`MethodConfig` default).
    """
    return AGEM_MEMORY_PER_CLASS.get(str(dataset).upper(), 10)
