"""EWC-online and MAS-online for CZSL (docs/science.md section 6.4): quadratic anchor penalties.

**Quadratic anchor penalties** (:class:`QuadraticAnchorPenalty`).  EWC-online and
MAS-online share one mechanism: after each task the parameters ``a = theta*`` are stored as
the anchor and a per-parameter importance ``Omega`` is accumulated online,

    Omega <- gamma * Omega + Omega_task           (gamma: decay; Omega = Omega_task at task 1)
    R(theta) = lambda/2 * sum_i Omega_i (theta_i - a_i)^2

and ``R`` is added to the next task's loss.  They differ only in ``Omega_task``:

- EWC-online (Kirkpatrick et al. 2017; online form of Schwarz et al. 2018, "Progress &
  Compress"): the diagonal empirical Fisher, :func:`ewc_importance`;
- MAS-online (Aljundi et al. 2018, "Memory Aware Synapses"; the same online decay): the
  mean absolute gradient of ``||f(x)||_2^2``, :func:`mas_importance`.

Importances are probes, not training steps: they leave ``.grad`` and every running
statistic alone (:func:`analysis.czsl.parameters.batch_gradients`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from analysis.czsl.parameters import (
    Batch,
    LossFn,
    MethodConfig,
    batch_gradients,
    check_decay_weight,
    trainable_parameters,
)

__all__ = ["EWCOnline", "MASOnline", "QuadraticAnchorPenalty", "ewc_importance", "mas_importance"]


class QuadraticAnchorPenalty:
    """``R(theta) = weight/2 * sum_i Omega_i (theta_i - a_i)^2`` with online importance.

    Args:
        decay: ``gamma`` in ``Omega <- gamma * Omega + Omega_task``, in ``[0, 1]``.
        weight: ``lambda >= 0``.

    Attributes:
        importance: ``Omega`` per parameter name (detached, shaped as the parameter);
            empty before the first :meth:`consolidate`.
        anchor: ``a``, detached copies of the parameters at the last consolidation.

    Raises:
        ValueError: ``decay`` outside ``[0, 1]`` or a negative ``weight``.
    """

    def __init__(self, decay: float, weight: float) -> None:
        check_decay_weight(decay, weight)
        self.decay, self.weight = float(decay), float(weight)
        self.importance: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def penalty(self, model: nn.Module) -> Tensor:
        """``weight/2 * sum_i Omega_i (theta_i - a_i)^2``, a 0-dim tensor differentiable in theta.

        Exactly ``0`` (a constant) before the first consolidation.

        Raises:
            ValueError: the model's trainable parameters are not the anchored ones (names
                or shapes differ).
        """
        params = trainable_parameters(model)
        if not self.anchor:
            return params[0][1].new_zeros(())
        self._check_matches(params, self.anchor, "the anchor")
        total = sum(((self.importance[n] * (p - self.anchor[n]) ** 2).sum() for n, p in params),
                    start=params[0][1].new_zeros(()))
        return 0.5 * self.weight * total

    def consolidate(self, model: nn.Module, new_importance: dict[str, Tensor]) -> None:
        """End of a task: ``Omega <- decay * Omega + new_importance``; ``a <- theta``.

        At the first call ``Omega = new_importance``.  Both are stored as detached copies.

        Raises:
            ValueError: ``new_importance`` does not name exactly the trainable parameters
                with their shapes, or holds a negative or non-finite value.
        """
        params = trainable_parameters(model)
        self._check_matches(params, new_importance, "new_importance")
        for n, _ in params:
            value = new_importance[n]
            if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
                raise ValueError(f"importance of {n!r} must be finite and >= 0, got min "
                                 f"{float(value.min())}, max {float(value.max())}")
        fresh = {n: new_importance[n].detach().clone() for n, _ in params}
        if self.importance:
            fresh = {n: self.decay * self.importance[n] + fresh[n] for n in fresh}
        self.importance = fresh
        self.anchor = {n: p.detach().clone() for n, p in params}

    @staticmethod
    def _check_matches(params: list[tuple[str, nn.Parameter]], stored: dict[str, Tensor],
                       what: str) -> None:
        names = [n for n, _ in params]
        if set(names) != set(stored):
            raise ValueError(
                f"{what} names parameters {sorted(stored)} but the model's trainable ones are "
                f"{names}; consolidate with the same model and the same frozen parameters"
            )
        for n, p in params:
            if stored[n].shape != p.shape:
                raise ValueError(f"{what}[{n!r}] has shape {tuple(stored[n].shape)} but the "
                                 f"parameter has shape {tuple(p.shape)}")




def ewc_importance(model: nn.Module, batches: Iterable[Batch],
                   loss_fn: LossFn = nn.functional.cross_entropy) -> dict[str, Tensor]:
    """Diagonal empirical Fisher ``F_i = (1/N) sum_n (d L_n / d theta_i)^2`` over N batches.

    ``L_n = loss_fn(model(x_n, A_n), y_n)`` is the loss of batch ``n`` (the mean over its
    samples for the default cross-entropy).  This is the *batch-gradient* approximation
    used by the reference implementation: the square of the batch-mean gradient, not the
    mean of per-sample squared gradients (which it underestimates by about the batch size
    when per-sample gradients are uncorrelated; the scale is absorbed by ``ewc_weight``).

    Args:
        model: a model of the call protocol; not modified (``.grad`` untouched).
        batches: ``(features [B, d_z], targets [B], attributes [K, d_a])`` triples.
        loss_fn: ``(logits, targets) -> scalar``.

    Returns:
        ``F`` per trainable parameter name, shaped as the parameter.

    Raises:
        ValueError: ``batches`` is empty, or the model has no trainable parameter.
    """
    return batch_gradients(model, batches, loss_fn, lambda g: g.square())


def mas_importance(model: nn.Module, batches: Iterable[Batch]) -> dict[str, Tensor]:
    """MAS importance ``Omega_i = (1/N) sum_n | d/d theta_i  mean_b ||f(x_b)||_2^2 |``.

    ``f(x_b) = model(x_b, A_n)[b]`` is the logit vector of sample ``b`` of batch ``n``
    (Aljundi et al. 2018: sensitivity of the squared L2 norm of the output; unsupervised,
    so targets are ignored).  As in the reference code the absolute value is taken of the
    gradient of the batch mean, then averaged over the N batches.

    Args:
        model: a model of the call protocol; not modified (``.grad`` untouched).
        batches: ``(features, targets, attributes)`` triples; ``targets`` is unused.

    Returns:
        ``Omega`` per trainable parameter name, shaped as the parameter.

    Raises:
        ValueError: ``batches`` is empty, or the model has no trainable parameter.
    """
    return batch_gradients(model, batches, lambda logits, _: logits.square().sum(dim=1).mean(),
                            torch.abs)


class EWCOnline(QuadraticAnchorPenalty):
    """EWC-online: :class:`QuadraticAnchorPenalty` with ``Omega_task`` = :func:`ewc_importance`,
    ``decay = config.ewc_decay`` and ``weight = config.ewc_weight``."""

    def __init__(self, config: MethodConfig = MethodConfig()) -> None:
        super().__init__(config.ewc_decay, config.ewc_weight)

    def end_task(self, model: nn.Module, batches: Iterable[Batch],
                 loss_fn: LossFn = nn.functional.cross_entropy) -> None:
        """Consolidate with the Fisher of ``batches`` (the finished task's data)."""
        self.consolidate(model, ewc_importance(model, batches, loss_fn))


class MASOnline(QuadraticAnchorPenalty):
    """MAS-online: :class:`QuadraticAnchorPenalty` with ``Omega_task`` = :func:`mas_importance`,
    ``decay = config.mas_decay`` and ``weight = config.mas_weight``."""

    def __init__(self, config: MethodConfig = MethodConfig()) -> None:
        super().__init__(config.mas_decay, config.mas_weight)

    def end_task(self, model: nn.Module, batches: Iterable[Batch]) -> None:
        """Consolidate with the MAS importance of ``batches`` (the finished task's data)."""
        self.consolidate(model, mas_importance(model, batches))
