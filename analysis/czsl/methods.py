"""Continual-learning baselines of CZSL (PAPER.md section 4): EWC-online, MAS-online, A-GEM.

Every method is model-agnostic: it sees the model only through the trainable entries of
``model.named_parameters()`` (``requires_grad=True``, in that order) and through the call
protocol ``model(features [B, d_z], attributes [K, d_a]) -> logits [B, K]``.

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

**A-GEM** (Chaudhry et al. 2019, "Efficient Lifelong Learning with A-GEM"): an episodic
memory of a few samples per past class (:class:`EpisodicMemory`); each step the task
gradient ``g`` is projected so that, to first order, the loss on a memory batch (gradient
``g_ref``) does not increase (:func:`agem_project`).  One step reads

    loss.backward()
    g = flat_grad(model)
    x_m, y_m = memory.sample(config.agem_memory_batch, generator=gen)
    g_ref = agem_reference_gradient(model, x_m, y_m, attributes)   # leaves .grad alone
    assign_flat_grad(model, agem_project(g, g_ref))
    optimizer.step()

Forward passes made here to estimate an importance or a reference gradient run in the
model's current mode but never update the running statistics of class standardization
(:func:`analysis.class_standardization.frozen_class_statistics`): an estimate is a probe,
not a training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from analysis.class_standardization import frozen_class_statistics
from analysis.rng import resolve_generator

__all__ = [
    "AGEM_MEMORY_PER_CLASS",
    "EWCOnline",
    "EpisodicMemory",
    "MASOnline",
    "MethodConfig",
    "QuadraticAnchorPenalty",
    "agem_memory_for",
    "agem_project",
    "agem_reference_gradient",
    "assign_flat_grad",
    "ewc_importance",
    "flat_grad",
    "mas_importance",
]

Batch = tuple[Tensor, Tensor, Tensor]  # (features [B, d_z], targets [B], attributes [K, d_a])
LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits [B, K], targets [B]) -> scalar

# Per-class A-GEM memory of the reference CLI: 10 images per class on CUB, 5 on SUN
# (SUN has 717 classes of about 20 training images each).
AGEM_MEMORY_PER_CLASS: dict[str, int] = {"CUB": 10, "SUN": 5}


@dataclass(frozen=True)
class MethodConfig:
    """Hyperparameters of every CZSL baseline; defaults are the reference values."""

    ewc_decay: float = 0.99  # gamma of the online Fisher, Omega <- gamma Omega + F_task
    ewc_weight: float = 10.0  # lambda of the EWC penalty lambda/2 sum F (theta - a)^2
    mas_decay: float = 0.95  # gamma of the online MAS importance
    mas_weight: float = 1e-4  # lambda of the MAS penalty
    agem_memory_per_class: int = 10  # samples kept per class (CUB; SUN: 5, agem_memory_for)
    agem_memory_batch: int = 256  # memory samples per reference gradient

    def __post_init__(self) -> None:
        for name in ("ewc", "mas"):
            _check_decay_weight(getattr(self, f"{name}_decay"), getattr(self, f"{name}_weight"),
                                prefix=f"{name}_")
        for name in ("agem_memory_per_class", "agem_memory_batch"):
            _check_positive_int(getattr(self, name), name)


def agem_memory_for(dataset: str) -> int:
    """Samples per class in the A-GEM memory for ``dataset``, as the reference CLI sets it.

    ``"CUB"`` -> 10, ``"SUN"`` -> 5 (case-insensitive), any other name -> 10 (the
    :class:`MethodConfig` default).
    """
    return AGEM_MEMORY_PER_CLASS.get(str(dataset).upper(), 10)


def _check_decay_weight(decay: float, weight: float, prefix: str = "") -> None:
    if not (math.isfinite(decay) and 0.0 <= decay <= 1.0):
        raise ValueError(f"{prefix}decay must lie in [0, 1] (1: never forget, 0: last task only), "
                         f"got {decay}")
    if not (math.isfinite(weight) and weight >= 0.0):
        raise ValueError(f"{prefix}weight must be a finite number >= 0 (0 disables the penalty), "
                         f"got {weight}")


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs the methods act on: those with ``requires_grad``."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (requires_grad=True); "
                         f"unfreeze the parameters the method should act on")
    return params


# --------------------------------------------------------------------------- EWC / MAS


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
        _check_decay_weight(decay, weight)
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
        params = _trainable(model)
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
        params = _trainable(model)
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


def _batch_gradients(model: nn.Module, batches: Iterable[Batch],
                     objective: Callable[[Tensor, Tensor], Tensor],
                     transform: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """``(1/N) sum_batches transform(d objective(model(x, A), y) / d theta)`` per parameter,
    via ``torch.autograd.grad`` (``.grad`` is left untouched; unused parameters get 0)."""
    params = _trainable(model)
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
    return _batch_gradients(model, batches, loss_fn, lambda g: g.square())


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
    return _batch_gradients(model, batches, lambda logits, _: logits.square().sum(dim=1).mean(),
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


# --------------------------------------------------------------------------- A-GEM



class EpisodicMemory:
    """A-GEM's episodic memory: at most ``per_class`` (features, label) samples per class.

    Samples of a class are a uniformly random subset of those offered to :meth:`add`; a
    class already stored only fills its free slots (stored samples are never replaced).

    Args:
        per_class: the per-class capacity (``MethodConfig.agem_memory_per_class``).

    Raises:
        ValueError: ``per_class < 1``.
    """

    def __init__(self, per_class: int) -> None:
        _check_positive_int(per_class, "per_class")
        self.per_class = per_class
        self._features: dict[int, Tensor] = {}  # class -> [n_c, d_z], n_c <= per_class
        self._labels: dict[int, Tensor] = {}  # class -> [n_c]

    def __len__(self) -> int:
        return sum(f.shape[0] for f in self._features.values())

    def counts(self) -> dict[int, int]:
        """Stored samples per class, in increasing class order."""
        return {c: self._features[c].shape[0] for c in sorted(self._features)}

    @property
    def features(self) -> Tensor:
        """All stored features ``[n, d_z]``, class by class in increasing class order."""
        if not self._features:
            raise ValueError("the memory is empty; call add(features, labels) first")
        return torch.cat([self._features[c] for c in sorted(self._features)])

    @property
    def labels(self) -> Tensor:
        """The labels ``[n]`` of :attr:`features`."""
        if not self._labels:
            raise ValueError("the memory is empty; call add(features, labels) first")
        return torch.cat([self._labels[c] for c in sorted(self._labels)])

    # ``generator`` may be passed positionally (unlike STYLE's keyword-only rule): the
    # brief's signature is add(features, labels, generator) and analysis/czsl/protocol.py
    # calls it that way.
    def add(self, features: Tensor, labels: Tensor, generator: torch.Generator | None = None) -> None:
        """Store a random subset of at most ``per_class`` samples of each class in ``labels``.

        Classes are visited in increasing order and each draws one ``randperm`` from
        ``generator``, so a seeded generator makes the selection deterministic.

        Args:
            features: ``[n, d_z]``.
            labels: ``[n]`` integer class labels.
            generator: source of the selection (``None``: fresh OS entropy).

        Raises:
            ValueError: ``features`` is not 2-D, ``labels`` not 1-D of the same length, or
                ``d_z`` differs from the stored features.
        """
        if features.ndim != 2 or labels.ndim != 1 or labels.shape[0] != features.shape[0]:
            raise ValueError(f"expected features [n, d_z] and labels [n], got shapes "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
        if self._features:
            stored = next(iter(self._features.values())).shape[1]
            if features.shape[1] != stored:
                raise ValueError(f"features have d_z = {features.shape[1]} but the memory stores "
                                 f"d_z = {stored}; use one memory per feature space")
        generator = resolve_generator(generator)
        for c in torch.unique(labels).tolist():  # sorted
            rows = torch.nonzero(labels == c).squeeze(1)
            have = self._features[c].shape[0] if c in self._features else 0
            room = self.per_class - have
            if room <= 0:
                continue
            pick = rows[torch.randperm(rows.numel(), generator=generator)[:room].to(rows.device)]
            new_f, new_y = features[pick].detach().clone(), labels[pick].clone()
            if c in self._features:
                new_f = torch.cat([self._features[c], new_f])
                new_y = torch.cat([self._labels[c], new_y])
            self._features[c], self._labels[c] = new_f, new_y

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``min(batch, len(self))`` samples drawn uniformly without replacement.

        Returns:
            ``(features [m, d_z], labels [m])``.

        Raises:
            ValueError: ``batch < 1`` or the memory is empty.
        """
        _check_positive_int(batch, "batch")
        features, labels = self.features, self.labels
        order = torch.randperm(features.shape[0], generator=resolve_generator(generator))[:batch]
        order = order.to(features.device)
        return features[order], labels[order]


def flat_grad(model: nn.Module) -> Tensor:
    """The ``.grad`` of every trainable parameter, flattened and concatenated ``[P]``.

    A parameter whose ``.grad`` is ``None`` (not reached by the last backward pass)
    contributes zeros.
    """
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for _, p in _trainable(model)])


def assign_flat_grad(model: nn.Module, flat: Tensor) -> None:
    """Write ``flat`` [P] (the layout of :func:`flat_grad`) into the parameters' ``.grad``.

    Decision on ``None`` grads: a parameter whose ``.grad`` is ``None`` stays ``None`` when
    its slice of ``flat`` is all zero (so optimizers keep skipping it and
    ``assign_flat_grad(model, flat_grad(model))`` changes nothing), and gets a ``.grad``
    otherwise: the A-GEM projection mixes ``g_ref`` into coordinates where ``g`` was zero,
    and those must move for the projected step to be the one analysed.

    Raises:
        ValueError: ``flat`` is not 1-D with one entry per trainable parameter element.
    """
    params = _trainable(model)
    total = sum(p.numel() for _, p in params)
    if flat.ndim != 1 or flat.numel() != total:
        raise ValueError(f"flat must be a 1-D tensor of the {total} trainable parameter elements, "
                         f"got shape {tuple(flat.shape)}")
    offset = 0
    for _, p in params:
        piece = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is None:
            if bool((piece != 0).any()):
                p.grad = piece.detach().clone().to(p.dtype)
        else:
            p.grad.copy_(piece)


def agem_project(grad: Tensor, ref: Tensor) -> Tensor:
    """A-GEM projection (Chaudhry et al. 2019, Eq. 11) of a flat gradient.

        g~ = g                                  if <g, g_ref> >= 0
        g~ = g - (<g, g_ref> / <g_ref, g_ref>) g_ref   otherwise

    ``g~`` is the Euclidean projection of ``g`` onto the half-space
    ``{x : <x, g_ref> >= 0}``, so a step ``theta - eta g~`` does not increase the memory
    loss to first order: ``<g_ref, g~> >= 0``.  A zero ``ref`` gives ``<g, ref> = 0`` and
    returns ``g``.

    Args:
        grad: ``g`` [P], the task gradient.
        ref: ``g_ref`` [P], the gradient of the loss on a memory batch.

    Returns:
        ``g~`` [P] (``grad`` itself when no projection is needed).

    Raises:
        ValueError: ``grad`` and ``ref`` are not 1-D tensors of the same shape.
    """
    if grad.ndim != 1 or grad.shape != ref.shape:
        raise ValueError(f"grad and ref must be flat vectors of the same length (see flat_grad), "
                         f"got shapes {tuple(grad.shape)} and {tuple(ref.shape)}")
    dot = torch.dot(grad, ref)
    if dot >= 0:
        return grad
    return grad - (dot / torch.dot(ref, ref)) * ref


def agem_reference_gradient(model: nn.Module, features: Tensor, targets: Tensor, attributes: Tensor,
                            loss_fn: LossFn = nn.functional.cross_entropy) -> Tensor:
    """``g_ref = d loss_fn(model(x_m, A), y_m) / d theta``, flat [P] in :func:`flat_grad` layout.

    Computed with ``torch.autograd.grad``: ``.grad`` and running statistics are untouched.
    """
    return torch.cat([g.reshape(-1) for g in
                      _batch_gradients(model, [(features, targets, attributes)], loss_fn,
                                       lambda g: g).values()])
