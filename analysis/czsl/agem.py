"""A-GEM for CZSL (docs/science.md section 6.4): gradients projected against an episodic memory.

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

The reference gradient is a probe, not a training step: it leaves ``.grad`` and every
running statistic alone (:func:`analysis.czsl.parameters.batch_gradients`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from analysis.czsl.parameters import LossFn, batch_gradients, check_positive_int, trainable_parameters
from analysis.rng import resolve_generator

__all__ = ["EpisodicMemory", "agem_project", "agem_reference_gradient", "assign_flat_grad", "flat_grad"]


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
        check_positive_int(per_class, "per_class")
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
        check_positive_int(batch, "batch")
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
                      for _, p in trainable_parameters(model)])


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
    params = trainable_parameters(model)
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
                      batch_gradients(model, [(features, targets, attributes)], loss_fn,
                                       lambda g: g).values()])
