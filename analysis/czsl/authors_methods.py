"""EWC-online, MAS-online and A-GEM as the authors' code runs them (``--protocol authors``).

Read from universome/class-norm (``src/trainers/{ewc_online,mas,agem}_task_trainer.py``,
``src/utils/weights_importance.py``, ``configs/{ewc_online,mas,agem}.yml``); written here
from that reading, not copied.  Where the toolkit's own methods
(:mod:`analysis.czsl.anchor_penalties`, :mod:`analysis.czsl.agem`) differ:

**EWC-online.**  At the *start* of task ``t + 1`` (not the end of task ``t``) the
importance is estimated on task ``t + 1``'s training images, with every class embedded
and the logits restricted to task ``t``'s classes (the previous trainer's output mask):

    F_i = (1/N) sum_batches (d/d theta_i  CE(mask_t(logits_b), y_b))^2,   then min-max normalized
    F  <- (F - min F) / (max F - min F)                 (over all parameters at once)

The labels ``y_b`` are task ``t + 1``'s classes, whose logits the mask sets to ``-inf``, so
the cross-entropy is infinite but its gradient is finite: it is the gradient of the batch
mean of ``logsumexp_{c in task t} logit_c`` (the ``-logit_y`` term is cut by the mask).  That
is what :func:`authors_ewc_importance` computes (tests check it against the literal masked
cross-entropy).  ``Omega <- gamma Omega + F`` (gamma 0.99) and the penalty is
``coef sum_i Omega_i (theta_i - a_i)^2`` with ``coef = 10`` and **no 1/2**: a
:class:`~analysis.czsl.anchor_penalties.QuadraticAnchorPenalty` of weight ``2 coef``
(:func:`authors_anchor_penalty`).  ``N`` counts samples, not batches.

**MAS-online.**  The same schedule and mask; the importance is
``(1/N) sum_batches |d/d theta  sum_b sum_{c in task t} logit_bc^2|`` (a sum over the batch,
not a mean), without normalization; gamma 0.95, coef 1e-4.

**A-GEM.**  The memory is a list of ``(features, label, task)`` rows
(:class:`TaskMaskedMemory`); at the end of each task every class of it adds
``min(n_c, per_class)`` rows drawn without replacement, and the authors' code does this
**twice** (once at the end of ``TaskTrainer.start``, once more in ``LLLTrainer``), so a class
holds up to ``2 per_class`` rows, duplicates possible (per class: 25 on AWA, 10 on CUB, 5 on
SUN).  The reference gradient is the mean cross-entropy of ``min(128, len)`` rows drawn
without replacement, every class embedded, each row's logits restricted to the classes of
its own task (:func:`masked_reference_gradient`); the projection is
:func:`analysis.czsl.agem.agem_project` (theirs keeps ``g`` iff ``<g, g_ref> > 0``; at 0 both
return ``g``).

Kept from the toolkit in both protocols, and stated here: importances and reference
gradients are probes (``torch.autograd.grad``; ``.grad`` and CN's running statistics are
left alone, where the authors' forward passes in train mode would update them), in the
model's current mode (train mode during training, as theirs).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from analysis.czsl.anchor_penalties import QuadraticAnchorPenalty
from analysis.czsl.parameters import Batch, MethodConfig, batch_gradients, check_positive_int
from analysis.rng import resolve_generator

__all__ = [
    "TaskMaskedMemory",
    "authors_anchor_penalty",
    "authors_ewc_importance",
    "authors_mas_importance",
    "masked_reference_gradient",
    "min_max_normalize",
]


def authors_anchor_penalty(method: str, config: MethodConfig = MethodConfig()) -> QuadraticAnchorPenalty:
    """The authors' EWC or MAS penalty ``coef sum Omega (theta - a)^2``: weight ``2 coef``
    (our penalty carries ``1/2``), decay and coef from ``config`` (their values are the
    :class:`MethodConfig` defaults: EWC 0.99 / 10, MAS 0.95 / 1e-4).

    Raises:
        ValueError: ``method`` is neither ``"ewc"`` nor ``"mas"``.
    """
    if method == "ewc":
        return QuadraticAnchorPenalty(config.ewc_decay, 2.0 * config.ewc_weight)
    if method == "mas":
        return QuadraticAnchorPenalty(config.mas_decay, 2.0 * config.mas_weight)
    raise ValueError(f"the authors' anchor penalties are 'ewc' and 'mas', got {method!r}")


def min_max_normalize(importance: dict[str, Tensor]) -> dict[str, Tensor]:
    """``(F - min F) / (max F - min F)`` with min and max over every parameter at once.

    A constant ``F`` (no information; the authors' code would divide by zero) gives zeros.
    """
    low = min(float(v.min()) for v in importance.values())
    high = max(float(v.max()) for v in importance.values())
    if high == low:
        return {n: torch.zeros_like(v) for n, v in importance.items()}
    return {n: (v - low) / (high - low) for n, v in importance.items()}


def _check_columns(columns: Tensor, num_classes: int) -> None:
    if columns.ndim != 1 or columns.numel() == 0:
        raise ValueError(f"columns must be a non-empty 1-D tensor of class indices, got shape {tuple(columns.shape)}")
    if int(columns.min()) < 0 or int(columns.max()) >= num_classes:
        raise ValueError(f"columns must lie in [0, {num_classes}) (one per embedded class), got "
                         f"{columns.min().item()}..{columns.max().item()}")


def _checked(batches: Iterable[Batch], columns: Tensor) -> list[Batch]:
    """``batches`` as a list, once ``columns`` is checked against the fewest classes embedded."""
    batches = list(batches)
    if batches:
        _check_columns(columns, min(int(a.shape[0]) for _, _, a in batches))
    return batches


def _sample_weight(batches: list[Batch]) -> float:
    """``num_batches / num_samples``: turns :func:`batch_gradients`' mean over batches into
    the authors' sum over batches divided by the number of samples."""
    return len(batches) / sum(int(x.shape[0]) for x, _, _ in batches)


def authors_ewc_importance(model: nn.Module, batches: Iterable[Batch], columns: Tensor) -> dict[str, Tensor]:
    """The authors' EWC importance (module docstring): min-max normalized
    ``(1/N) sum_batches (grad of mean_b logsumexp(logits_b[columns]))^2``.

    Args:
        model: a model of the call protocol; not modified.
        batches: ``(features, targets, attributes)`` of the *new* task, ``attributes`` of
            every class (the targets are unused: their logits are masked out).
        columns: the previous task's classes, as columns of the logits.
    """
    batches = _checked(batches, columns)
    raw = batch_gradients(model, batches, lambda logits, _: torch.logsumexp(logits[:, columns], dim=1).mean(),
                          torch.square)
    return min_max_normalize(raw)  # the 1/N scale cancels here


def authors_mas_importance(model: nn.Module, batches: Iterable[Batch], columns: Tensor) -> dict[str, Tensor]:
    """The authors' MAS importance (module docstring):
    ``(1/N) sum_batches |grad of sum_b sum_{c in columns} logit_bc^2|``, not normalized.

    Arguments as :func:`authors_ewc_importance`.
    """
    batches = _checked(batches, columns)
    raw = batch_gradients(model, batches, lambda logits, _: logits[:, columns].square().sum(), torch.abs)
    scale = _sample_weight(batches)
    return {n: v * scale for n, v in raw.items()}


class TaskMaskedMemory:
    """The authors' A-GEM memory: rows ``(features, label, task)`` in the order they were added.

    Args:
        per_class: rows a class adds per call of :meth:`add_task`.

    Raises:
        ValueError: ``per_class < 1``.
    """

    def __init__(self, per_class: int) -> None:
        check_positive_int(per_class, "per_class")
        self.per_class = per_class
        self._features: list[Tensor] = []
        self._labels: list[Tensor] = []
        self._tasks: list[Tensor] = []

    def __len__(self) -> int:
        return sum(int(y.numel()) for y in self._labels)

    def add_task(self, features: Tensor, labels: Tensor, task: int, generator: torch.Generator | None = None) -> None:
        """Append ``min(n_c, per_class)`` rows of each class of ``labels`` (classes in increasing
        order, rows drawn without replacement, one ``randperm`` per class), tagged ``task``.

        Raises:
            ValueError: ``features`` not ``[n, d]`` with ``labels`` ``[n]``.
        """
        if features.ndim != 2 or labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"expected features [n, d_z] and labels [n], got shapes "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
        generator = resolve_generator(generator)
        for c in torch.unique(labels).tolist():
            rows = torch.nonzero(labels == c).squeeze(1)
            pick = rows[torch.randperm(rows.numel(), generator=generator)[:self.per_class].to(rows.device)]
            self._features.append(features[pick].detach().clone())
            self._labels.append(labels[pick].clone())
            self._tasks.append(torch.full_like(labels[pick], task))

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``min(batch, len(self))`` rows drawn uniformly without replacement:
        ``(features [m, d_z], labels [m], tasks [m])``.

        Raises:
            ValueError: ``batch < 1`` or the memory is empty.
        """
        check_positive_int(batch, "batch")
        if not self._labels:
            raise ValueError("the memory is empty; call add_task(features, labels, task) first")
        features, labels, tasks = torch.cat(self._features), torch.cat(self._labels), torch.cat(self._tasks)
        order = torch.randperm(labels.numel(), generator=resolve_generator(generator))[:batch].to(labels.device)
        return features[order], labels[order], tasks[order]


def masked_reference_gradient(model: nn.Module, features: Tensor, labels: Tensor, masks: Tensor,
                              attributes: Tensor) -> Tensor:
    """The authors' A-GEM reference gradient, flat ``[P]`` (:func:`analysis.czsl.agem.flat_grad`
    layout): ``d/d theta  mean_b CE(logits_b with -inf outside masks_b, labels_b)``.

    Args:
        features: ``[m, d_z]`` memory rows.
        labels: ``[m]`` their classes (columns of ``attributes``).
        masks: ``[m, C]`` bool, row ``b`` true on the classes of the task ``b`` came from.
        attributes: ``[C, d_a]``, every class.

    Raises:
        ValueError: ``masks`` is not ``[m, C]`` bool, or a row's own class is masked out.
    """
    m, num_classes = labels.shape[0], attributes.shape[0]
    if masks.dtype != torch.bool or masks.shape != (m, num_classes):
        raise ValueError(f"masks must be a bool [m, C] = [{m}, {num_classes}] tensor, got "
                         f"{masks.dtype} {tuple(masks.shape)}")
    if not bool(masks[torch.arange(m, device=masks.device), labels].all()):
        raise ValueError("every memory row's label must lie inside its own task mask")

    def masked_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits.masked_fill(~masks, float("-inf")), targets)

    grads = batch_gradients(model, [(features, labels, attributes)], masked_cross_entropy, lambda g: g)
    return torch.cat([g.reshape(-1) for g in grads.values()])
