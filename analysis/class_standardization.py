"""Class standardization, Eq. (9) of Class Normalization (the "S" of CN).

For a hidden matrix ``h`` of shape ``[K, d]`` (one row per class: the embedder's batch
axis is the class axis) the layer computes, per column ``j``,

    mu_j      = (1/K) sum_c h_cj
    sigma2_j  = (1/K) sum_c (h_cj - mu_j)^2              (biased, as BatchNorm normalizes)
    S(h)_cj   = (h_cj - mu_j) / sqrt(sigma2_j + eps)

with no affine parameters.  Training uses the statistics of the classes passed in and
updates running averages ``r <- (1 - m) r + m x`` with momentum ``m = 0.1``; evaluation
uses only the running averages, so adding unseen classes to an evaluation batch cannot
change the output of the seen ones (using their statistics would be transductive).

Decisions:
- The running variance stores the *biased* class variance, the same quantity that
  normalizes in training, so evaluating on the training classes at stationarity
  reproduces the training-mode output.  (``BatchNorm1d`` stores the unbiased one; the
  two differ by ``K/(K-1)``.)
- ``mode="notebook"`` reproduces the authors' notebook exactly: unbiased variance, and
  division by ``var + eps`` instead of ``sqrt(var + eps)``.  It exists to reproduce their
  numbers, never as a default.
- Probes that differentiate through the layer need a pure function of the input:
  :func:`class_standardize` is one, and :func:`frozen_class_statistics` runs a whole
  model in training mode (batch statistics) without touching any running statistic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = [
    "STANDARDIZATION_MODES",
    "ClassStandardization",
    "class_standardize",
    "class_statistics",
    "frozen_class_statistics",
]

STANDARDIZATION_MODES = ("correct", "notebook")


def class_statistics(h: Tensor, mode: str = "correct") -> tuple[Tensor, Tensor]:
    """Per-column mean and variance over the class axis of ``h`` [..., K, d].

    Leading dimensions are batch dimensions (e.g. many initializations at once); the
    statistics are over the class axis ``-2``.  Returns ``(mean [..., 1, d], var [..., 1, d])``;
    the variance is biased (divides by K) in ``"correct"`` mode and unbiased (divides by
    K - 1, as ``torch.var``) in ``"notebook"`` mode.
    """
    if mode not in STANDARDIZATION_MODES:
        raise ValueError(f"mode must be one of {STANDARDIZATION_MODES}, got {mode!r}")
    if h.ndim < 2:
        raise ValueError(
            f"class standardization expects a [K, d] matrix (one row per class), got shape "
            f"{tuple(h.shape)}"
        )
    k = h.shape[-2]
    if k < 2:
        raise ValueError(
            f"class standardization needs at least 2 classes to estimate a variance, got K={k}; "
            f"pass more classes or evaluate in eval mode (running statistics)"
        )
    var, mean = torch.var_mean(h, dim=-2, correction=0 if mode == "correct" else 1, keepdim=True)
    return mean, var


def class_standardize(
    h: Tensor,
    mean: Tensor | None = None,
    var: Tensor | None = None,
    *,
    eps: float = 1e-5,
    mode: str = "correct",
) -> Tensor:
    """Pure Eq. (9): ``(h - mean) / sqrt(var + eps)`` over the class axis of ``h`` [..., K, d].

    Args:
        h: hidden matrix ``[K, d]``, or a batch ``[..., K, d]`` standardized independently.
        mean, var: statistics broadcastable to ``h`` (e.g. running ones ``[d]``); both
            ``None`` means the class statistics of ``h`` itself (:func:`class_statistics`).
        eps: added to the variance (inside the square root in ``"correct"`` mode).
        mode: ``"correct"`` or ``"notebook"`` (divides by ``var + eps``, no square root).

    Returns:
        The standardized matrix, shaped as ``h``; differentiable in ``h``, no side effects.
    """
    if (mean is None) != (var is None):
        raise ValueError("pass both mean and var, or neither (to use the statistics of h)")
    if mean is None:
        mean, var = class_statistics(h, mode)
    elif mode not in STANDARDIZATION_MODES:
        raise ValueError(f"mode must be one of {STANDARDIZATION_MODES}, got {mode!r}")
    scale = var + eps if mode == "notebook" else torch.sqrt(var + eps)
    return (h - mean) / scale


class ClassStandardization(nn.Module):
    """Eq. (9) as a layer with running statistics (see the module docstring).

    Args:
        num_features: ``d``, the width of the hidden matrix.
        eps: variance floor, inside the square root.
        momentum: running-average momentum ``m`` in ``r <- (1 - m) r + m x``.
        mode: ``"correct"`` (default) or ``"notebook"`` (the authors' quirk).

    Buffers ``running_mean`` (zeros) and ``running_var`` (ones) are saved in the state dict.
    Set ``update_running_stats = False`` (or use :func:`frozen_class_statistics`) to
    normalize with batch statistics in training mode without updating them.
    """

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
        mode: str = "correct",
    ) -> None:
        super().__init__()
        if mode not in STANDARDIZATION_MODES:
            raise ValueError(f"mode must be one of {STANDARDIZATION_MODES}, got {mode!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        self.num_features, self.eps, self.momentum, self.mode = num_features, eps, momentum, mode
        self.update_running_stats = True
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != 2 or h.shape[1] != self.num_features:
            raise ValueError(
                f"expected a [K, {self.num_features}] matrix (one row per class), got shape "
                f"{tuple(h.shape)}"
            )
        if not self.training:
            return class_standardize(h, self.running_mean, self.running_var,
                                     eps=self.eps, mode=self.mode)
        mean, var = class_statistics(h, self.mode)
        if self.update_running_stats:
            with torch.no_grad():  # r + m (x - r), i.e. lerp, written with ops vmap batches
                self.running_mean.add_(mean.detach().squeeze(0) - self.running_mean, alpha=self.momentum)
                self.running_var.add_(var.detach().squeeze(0) - self.running_var, alpha=self.momentum)
        return class_standardize(h, mean, var, eps=self.eps, mode=self.mode)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, mode={self.mode!r}"


@contextmanager
def frozen_class_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, no :class:`ClassStandardization` of ``model`` updates its running
    statistics; training-mode layers still normalize with the statistics of the classes
    passed in.  The previous settings are restored on exit, also after an exception.
    """
    layers = [m for m in model.modules() if isinstance(m, ClassStandardization)]
    before = [m.update_running_stats for m in layers]
    for m in layers:
        m.update_running_stats = False
    try:
        yield model
    finally:
        for m, flag in zip(layers, before):
            m.update_running_stats = flag
