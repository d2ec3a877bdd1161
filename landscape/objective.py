"""The training loss as a pure function of the parameters (docs/science.md section 5.5), for any model.

Every loss-surface probe (gradient norms, Hessian-vector products, Lanczos, slices) needs

    L(theta) = sum_b n_b L_b(theta) / sum_b n_b,   L_b(theta) = loss_fn(model_theta(Z_b, A_b), y_b)

as a function of an explicit parameter tuple ``theta``, with no side effect on the model.
:class:`Objective` evaluates it with ``torch.func.functional_call``: the probed parameters
come from the caller, every other parameter and every buffer is read from the model at
the time of the call, and the model is left bitwise as it was (parameters, buffers, the
``training`` flag of every submodule).  Models follow the protocol of
:mod:`analysis.model`: ``model(features [B, d_z], attributes [K, d_a]) -> logits [B, K]``.

**Which statistics normalization layers use** (``statistics``, the one choice of
:mod:`analysis.probe_mode`, shared with the variance profiler):

- ``"batch"`` (default): the model runs in training mode, so every class standardization
  and every ``BatchNorm`` normalizes with the statistics of the classes passed in
  (``Batch.attributes``), exactly as in the training step.  This is the landscape of the
  training objective.  Because the statistics are taken over the class axis, they do not
  depend on the images of the batch: for a fixed class set the per-sample losses are
  independent of each other.
- ``"running"``: the model runs in eval mode, so these layers normalize with their running
  averages, which are constants here: the landscape of the function used at test time.

In both cases no running statistic is ever updated and **dropout is off**, so the loss is
a deterministic function of the parameters (:func:`analysis.probe_mode.probe_mode` says
why).  As a second guard, every buffer is passed to ``functional_call`` as a copy: a
custom module that writes into its buffers writes into the copy, never into the model.
``LayerNorm``, ``GroupNorm``, ``RMSNorm``, residual connections, learned scalars and tied
weights need nothing special (tied parameters are one entry of ``named_parameters()``).

**Sharded data.**  The data-set average is written once, through two hooks every
probe goes through: :meth:`Objective.total_samples` (``sum_b n_b``) and
:meth:`Objective.sum_over_shards` (the identity here: one process holds all the data).
:class:`landscape.distributed.ShardedObjective` overrides both with all-reduces over a
``torch.distributed`` process group, so the same probes see the full-data objective when
each process holds only its shard (``zsl_batches(..., shard=(rank, world_size))``).

**Flat vectors.**  :meth:`Objective.flatten` concatenates the row-major entries
(``t.reshape(-1)``) of each probed parameter in the order of :attr:`Objective.names`,
which is the order of ``model.named_parameters()`` restricted to the selection (whatever
order the caller listed the names in); :meth:`Objective.unflatten` inverts it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from analysis.data import ZSLData
from analysis.normalization import normalize_attributes
from analysis.probe_mode import STATISTICS, check_statistics, probe_mode

# The same remapping the training loop uses (labels -> 0..K_s-1 in seen-class order), so
# the probed loss is the trained loss; a private helper of the sibling core, on purpose.
from analysis.training import seen_targets

__all__ = ["SPLITS", "STATISTICS", "Batch", "LossFn", "Objective", "check_batches", "parameter_groups", "parameter_names",
           "zsl_batches"]

SPLITS = ("trainval", "test_seen")  # the splits whose samples all belong to seen classes

LossFn = Callable[[Tensor, Tensor], Tensor]  # (logits [B, K], targets [B]) -> mean loss []


@dataclass(frozen=True)
class Batch:
    """One mini-batch of the objective: images, their targets, and the classes scored.

    Args:
        features: ``[B, d_z]`` image features, ``B >= 1``.
        targets: ``[B]`` indices into the rows of ``attributes``.
        attributes: ``[K, d_a]`` attributes of the classes scored (ZSL training: the
            normalized seen-class attributes).

    Raises:
        ValueError: a shape does not fit the description above.
    """

    features: Tensor
    targets: Tensor
    attributes: Tensor

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] < 1:
            raise ValueError(
                f"Batch.features must be a [B, d_z] matrix with B >= 1, got shape "
                f"{tuple(self.features.shape)}"
            )
        if self.targets.shape != (self.features.shape[0],):
            raise ValueError(
                f"Batch.targets must have shape ({self.features.shape[0]},), one target per "
                f"feature row, got {tuple(self.targets.shape)}"
            )
        if self.attributes.ndim != 2:
            raise ValueError(
                f"Batch.attributes must be a [K, d_a] matrix (one row per class scored), got "
                f"shape {tuple(self.attributes.shape)}"
            )

    @property
    def size(self) -> int:
        """``B``, the number of samples (the weight of this batch in a data-set average)."""
        return self.features.shape[0]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Batch:
        """A copy on ``device``; ``dtype`` converts the floating tensors (targets stay int)."""
        return Batch(self.features.to(device=device, dtype=dtype), self.targets.to(device),
                     self.attributes.to(device=device, dtype=dtype))


def zsl_batches(
    data: ZSLData,
    *,
    attribute_norm: str = "l2_sqrt",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    split: str = "trainval",
    shard: tuple[int, int] | None = None,
) -> list[Batch]:
    """The ZSL training objective on a split of ``data`` (default ``trainval``) as a list of batches.

    Attributes are normalized over all classes with ``attribute_norm`` and restricted to
    the seen classes, targets are remapped to seen-class indices (as
    :func:`analysis.training.train` does); the samples are split sequentially, without
    shuffling, so the list is deterministic.

    With ``shard=(r, W)`` only the rank-strided rows ``r, r + W, r + 2W, ...`` of the split
    are kept (the shard of process ``r`` of ``W``): the ``W`` shards partition the split,
    with sizes ``ceil((n - r) / W)`` that differ by at most one, and
    ``sum_r n_r L_r / sum_r n_r`` is the split's loss
    (:class:`landscape.distributed.ShardedObjective`).

    Args:
        data: the data set.
        attribute_norm: one of :data:`analysis.normalization.ATTRIBUTE_NORMS`.
        batch_size: samples per batch (the last one may be smaller); ``None``: one batch.
        device: where the batches live; ``None``: the device of ``data``.
        split: ``"trainval"`` (the training objective) or ``"test_seen"`` (the same loss on
            the held-out images of the seen classes).
        shard: ``(rank, world_size)`` with ``0 <= rank < world_size``; ``None``: every sample.

    Returns:
        ``ceil(n_r / batch_size)`` batches sharing one ``[K_s, d_a]`` attribute matrix.

    Raises:
        ValueError: ``batch_size`` is not a positive integer, an unknown ``split`` (or
            ``attribute_norm``), a malformed ``shard``, or more processes than samples.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if device is not None:
        data = data.to(device)
    indices = getattr(data, split)  # [n] sample indices of the split
    if shard is not None:
        indices = indices[_shard_rows(indices.numel(), shard, split)]
    attributes = normalize_attributes(data.attributes, attribute_norm)[data.seen_classes]  # [K_s, d_a]
    features = data.features[indices]  # [n_r, d_z]
    targets = seen_targets(data, indices)  # [n_r]
    if bool((targets < 0).any()):
        raise ValueError(f"split {split!r} holds samples of classes that are not seen in trainval; "
                         "the objective scores the seen classes only")
    size = features.shape[0] if batch_size is None else int(batch_size)
    return [Batch(f, t, attributes) for f, t in zip(features.split(size), targets.split(size))]


def _shard_rows(n: int, shard: tuple[int, int], split: str) -> slice:
    """The rows ``rank::world_size`` of ``n``, after checking ``shard = (rank, world_size)``."""
    try:
        rank, world_size = (int(x) for x in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (rank, world_size) of integers, got {shard!r}") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard=(rank={rank}, world_size={world_size}) needs 0 <= rank < world_size")
    if world_size > n:
        raise ValueError(f"world size {world_size} exceeds the {n} samples of split {split!r}: some process "
                         f"would hold no sample; use at most {n} processes")
    return slice(rank, None, world_size)


def parameter_names(model: nn.Module, module: str | None = None) -> list[str]:
    """Names of the parameters of ``model`` owned by the submodule ``module`` (recursively).

    ``module=None`` gives all parameters; ``module="embedder.6"`` the names starting with
    ``"embedder.6."``; a parameter name itself (``"embedder.6.weight"``) gives just it.

    Raises:
        ValueError: ``module`` names no submodule or parameter with parameters.
    """
    names = [name for name, _ in model.named_parameters()]
    if module is None:
        return names
    selected = [name for name in names if name == module or name.startswith(module + ".")]
    if not selected:
        modules = sorted({name.rpartition(".")[0] for name in names} - {""})
        raise ValueError(
            f"model has no submodule or parameter {module!r} with parameters; modules with "
            f"parameters: {modules}"
        )
    return selected


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """The parameters of ``model`` grouped by the module that owns them, in the model's order.

    ``{"embedder.0": ["embedder.0.weight", "embedder.0.bias"], ...}``; a parameter of the root
    module (``LinearClassifier.weight``) is its own group.  The groups partition the
    parameters: the per-layer probes (gradient norms, Hessian blocks) use them.
    """
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.rpartition(".")[0] or name, []).append(name)
    return groups


def check_batches(batches: Sequence[Batch]) -> list[Batch]:
    """``batches`` as a non-empty list of :class:`Batch`.

    Raises:
        ValueError: no batch.  TypeError: an element that is not a Batch.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("batches is empty: pass at least one Batch (e.g. zsl_batches(data))")
    for batch in batches:
        if not isinstance(batch, Batch):
            raise TypeError(f"batches must hold Batch objects, got {type(batch).__name__}")
    return batches


class Objective:
    """The loss ``loss_fn(model(features, attributes), targets)`` as a pure function of the
    parameters named in ``parameters`` (module docstring).

    Args:
        model: any model of the protocol ``model(features, attributes) -> logits``.
        loss_fn: ``(logits [B, K], targets [B]) -> scalar``; a **mean** over the samples, so
            sample-weighted batch averages equal the data-set loss.
        parameters: names of the probed parameters (``None``: all of them); see
            :func:`parameter_names` for a per-layer selection.  The others are constants.
        statistics: ``"batch"`` (training mode: CN and BatchNorm use the statistics of the
            classes passed in) or ``"running"`` (eval mode: their running statistics);
            dropout is off under both (module docstring).

    Raises:
        ValueError: unknown ``statistics``, an unknown, repeated or empty parameter
            selection, or probed parameters of different dtypes or devices.

    Example (relation, not a value)::

        obj = Objective(model)
        theta = obj.params()
        assert torch.equal(obj.flatten(obj.unflatten(obj.flatten(theta))), obj.flatten(theta))
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn = nn.functional.cross_entropy,
        *,
        parameters: Sequence[str] | None = None,
        statistics: str = "batch",
    ) -> None:
        check_statistics(statistics)
        named = dict(model.named_parameters())
        if parameters is None:
            wanted = set(named)
        else:
            if isinstance(parameters, str):
                raise TypeError(
                    f"parameters must be a list of names, got the string {parameters!r}; "
                    f"use parameter_names(model, {parameters!r}) for a submodule"
                )
            parameters = list(parameters)
            unknown = [name for name in parameters if name not in named]
            if unknown:
                raise ValueError(
                    f"unknown parameter name(s) {unknown}; the model has {list(named)} "
                    f"(parameter_names(model, module) selects a submodule)"
                )
            if len(set(parameters)) != len(parameters):
                raise ValueError(f"parameters lists a name twice: {parameters}")
            wanted = set(parameters)
        if not wanted:
            raise ValueError("no parameter selected: pass at least one name (or None for all)")
        self.model = model
        self.loss_fn = loss_fn
        self.statistics = statistics
        self.names: tuple[str, ...] = tuple(name for name in named if name in wanted)  # model order
        selected = [named[name] for name in self.names]
        kinds = {(p.dtype, p.device) for p in selected}
        if len(kinds) > 1:
            raise ValueError(
                f"probed parameters must share one dtype and device, got {sorted(map(str, kinds))}; "
                f"convert the model (e.g. model.double()) or select a subset"
            )
        self.shapes: tuple[torch.Size, ...] = tuple(p.shape for p in selected)
        self.numels: tuple[int, ...] = tuple(p.numel() for p in selected)
        self.dtype: torch.dtype = selected[0].dtype
        self.device: torch.device = selected[0].device

    @property
    def num_parameters(self) -> int:
        """``n``, the length of the flat parameter vector."""
        return sum(self.numels)

    # -- parameters ------------------------------------------------------------------
    def params(self) -> tuple[Tensor, ...]:
        """Detached copies of the probed parameters at their current values (the origin)."""
        named = dict(self.model.named_parameters())
        return tuple(named[name].detach().clone() for name in self.names)

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """``[n]``: the tensors (shaped like the probed parameters) concatenated row-major
        in the order of :attr:`names`.

        Raises:
            ValueError: wrong number of tensors or a wrong shape.
        """
        self._check_params(tensors, "tensors")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: Tensor) -> tuple[Tensor, ...]:
        """Inverse of :meth:`flatten`: a flat ``[n]`` vector -> views shaped like the parameters.

        Raises:
            ValueError: ``vector`` is not 1-D of length :attr:`num_parameters`.
        """
        if vector.ndim != 1 or vector.shape[0] != self.num_parameters:
            raise ValueError(
                f"expected a flat vector of length {self.num_parameters} (the probed "
                f"parameters {list(self.names)}), got shape {tuple(vector.shape)}"
            )
        return tuple(piece.view(shape) for piece, shape in zip(vector.split(self.numels), self.shapes))

    # -- the data-set average: the two hooks a sharded objective overrides -------------
    def total_samples(self, batches: Sequence[Batch]) -> int:
        """``N = sum_b n_b``, the number of samples the average runs over (here: all of them
        are in ``batches``)."""
        return sum(b.size for b in batches)

    def sum_over_shards(self, local: Tensor) -> Tensor:
        """The sum of ``local`` over the processes holding the data: ``local`` itself here.

        Every probe computes its share ``sum_{b local} n_b f_b / N`` and passes it through
        this hook, so that an override (an all-reduce) makes it the full-data average.
        """
        return local

    # -- the function ----------------------------------------------------------------
    def loss(self, params: Sequence[Tensor], batch: Batch) -> Tensor:
        """``L_b(theta)``, a 0-dim tensor differentiable in ``params`` (and only in them).

        Pure: ``torch.func.functional_call(model, {**fixed, **dict(zip(names, params)),
        **buffer_copies}, (batch.features, batch.attributes))`` under
        :func:`~analysis.probe_mode.probe_mode` (the mode of :attr:`statistics`, dropout off,
        no running statistic updated); the mode of every submodule is restored afterwards,
        also on error.  Works under ``torch.func`` transforms.

        Raises:
            ValueError: wrong number or shapes of ``params``, or a batch on another device.
        """
        self._check_params(params, "params")
        if batch.device != self.device:
            raise ValueError(
                f"batch is on {batch.device} but the model's parameters are on {self.device}; "
                f"move it with batch.to({str(self.device)!r})"
            )
        named = dict(self.model.named_parameters())
        values = {name: p.detach() for name, p in named.items()}  # constants: no graph into the model
        values.update(zip(self.names, params))
        # copies: whatever a custom module writes into its buffers never reaches the model
        values.update((name, b.detach().clone()) for name, b in self.model.named_buffers())
        with probe_mode(self.model, self.statistics):
            logits = torch.func.functional_call(self.model, values, (batch.features, batch.attributes))
        return self.loss_fn(logits, batch.targets)

    def mean_loss(self, params: Sequence[Tensor], batches: Sequence[Batch]) -> Tensor:
        """``sum_b n_b L_b(theta) / sum_b n_b``, the data-set loss when ``loss_fn`` is a mean.

        Raises:
            ValueError: ``batches`` is empty.
        """
        batches = check_batches(batches)
        total = self.total_samples(batches)
        return self.sum_over_shards(sum(self.loss(params, b) * (b.size / total) for b in batches))

    def gradient(self, params: Sequence[Tensor], batches: Sequence[Batch]) -> tuple[Tensor, ...]:
        """``sum_b n_b grad L_b(theta) / sum_b n_b``, shaped like ``params`` (detached views
        of one flat vector).

        One reverse pass per batch (``torch.func.grad``), so memory does not grow with the
        number of batches.

        Raises:
            ValueError: ``batches`` is empty, or ``params`` do not fit.
        """
        batches = check_batches(batches)
        self._check_params(params, "params")
        total = self.total_samples(batches)
        params = tuple(p.detach() for p in params)
        result = torch.zeros(self.num_parameters, dtype=params[0].dtype, device=params[0].device)
        pieces = self.unflatten(result)  # views: the sum is accumulated in one flat buffer
        for batch in batches:
            grads = torch.func.grad(lambda theta, b=batch: self.loss(theta, b))(params)
            for acc, g in zip(pieces, grads):
                acc.add_(g, alpha=batch.size / total)
        return self.unflatten(self.sum_over_shards(result))  # one reduction for every tensor

    # -- helpers ---------------------------------------------------------------------
    def _check_params(self, params: Sequence[Tensor], what: str) -> None:
        if len(params) != len(self.names):
            raise ValueError(
                f"{what} must hold {len(self.names)} tensors, one per probed parameter "
                f"{list(self.names)}, got {len(params)}"
            )
        for name, shape, p in zip(self.names, self.shapes, params):
            if p.shape != shape:
                raise ValueError(f"{what} entry for {name!r} must have shape {tuple(shape)}, got {tuple(p.shape)}")

    def __repr__(self) -> str:
        return (f"Objective({type(self.model).__name__}, statistics={self.statistics!r}, "
                f"{len(self.names)} tensors, {self.num_parameters} parameters)")

