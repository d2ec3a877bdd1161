"""Layer-wise variance profiler for any attribute embedder (claims V3 and V4, docs/science.md section 4).

V3 says the forward-pass scale of a deep embedder depends on depth, init and the
distribution of attributes *across classes*; V4 says CN keeps it fixed.  This module
measures that scale layer by layer for an arbitrary ``nn.Module``, so a new
architecture can be probed without writing hooks.

The embedder's batch axis is the set of classes: every recorded activation is a matrix
``h`` of shape ``[K, d]`` (one row per class), and the four statistics are, in float64,

    mean            = (1/(K d)) sum_{c,j} h_cj
    class_variance  = (1/d) sum_j (1/K) sum_c (h_cj - mu_j)^2,   mu_j = (1/K) sum_c h_cj
    second_moment   = (1/(K d)) sum_{c,j} h_cj^2
    norm_sq         = (1/K) sum_c ||h_c||^2  =  d * second_moment

(``class_variance`` is biased, the quantity class standardization divides by.)

Entries of a profile, in execution order; each :class:`LayerStatistics` names the class of
the module that produced it (``module_type``):

- one per hooked module (every leaf module, or the ``layers`` named), keyed by its name in
  ``model.named_modules()``, ``module_type`` its class (``"Linear"``); a module called
  ``n > 1`` times in one forward pass adds ``"name#2"`` .. ``"name#n"``; outputs that are
  not 2-D tensors are skipped;
- ``"prototypes_pre_activation"``, when the model has a ``pre_activation_prototypes(a)``
  method (the shipped :class:`~analysis.model.AttributeEmbedderModel` has): the output of
  the last layer ``V`` before any output activation, [K, d_z].  The V2-V4 predictions
  (``1/d_z`` with Eq. 10 and CN) are about this quantity; after an output ReLU the
  second moment is about half, so compare the claims with :func:`prototypes_entry`'s
  entry, never blindly with ``"prototypes"``.  It is computed in a second forward pass,
  without hooks, under the same probe settings (so it adds no module entries);
- ``"prototypes"``: the embedder output ``P(a)`` [K, d_z] (``model.prototypes(a)`` when the
  model has that method, else ``model(a)``); these two entries' ``module_type`` is the
  model's class;
- with ``features`` z [B, d_z]: ``"logits_raw"`` ``<z_b, p_c>`` and ``"logits_ns"``
  ``gamma^2 cos(z_b, p_c)``, both recorded **class-major**, ``[K, B] = (z p^T)^T``, so that
  ``class_variance`` is, as everywhere, the spread across classes (here: of one image's
  logits, averaged over images).  The profiler computes them itself: ``module_type`` ``""``.

What the profiler needs from a model (the model contract, README): a method
``prototypes(attributes [K, d_a]) -> [K, d_z]``, or a ``forward`` that takes the attributes
alone and returns them (a bare embedder such as an ``nn.Sequential``).  A model with
neither, e.g. one whose only method is ``forward(features, attributes)``, is refused with
a one-line ``TypeError`` before anything runs.  The NS scale of ``"logits_ns"`` is
``gamma``, or the model's ``head.gamma``: a number or a one-element tensor (a learned
temperature, an ``nn.Parameter``), read, detached, at each call.

Profiling is pure (a probe must leave the model as it found it): it runs under
``torch.no_grad`` and :func:`~analysis.probe_mode.probe_mode`, restores every module's
``training`` flag, every buffer (so any custom stateful module is also left unchanged)
and the global random state, and removes its hooks, also when the forward pass raises.

``statistics`` picks the statistics that normalization layers use while profiling, the
same choice under the same name as in ``landscape.Objective``:

- ``"batch"`` (default): training mode, class standardization and BatchNorm normalize
  with the statistics of the classes passed in, as in a training step;
- ``"running"``: evaluation mode, running statistics.  At init these are zeros and ones,
  so ``S(h) = h / sqrt(1 + eps)``: the running profile of a fresh CN model shows the
  un-normalized forward pass.

Dropout is off under both (:mod:`analysis.probe_mode`): a profile is a deterministic
function of the parameters.
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from analysis.normalization import normalize_scale_logits
from analysis.probe_mode import check_statistics, probe_mode
from analysis.training import StepInfo
from analysis.estimate import Estimate, mean_estimate

__all__ = [
    "MOMENTS",
    "RESERVED_NAMES",
    "LayerStatistics",
    "VarianceRecorder",
    "profile_at_init",
    "profile_layers",
    "prototypes_entry",
]

MOMENTS = ("mean", "class_variance", "second_moment", "norm_sq")
RESERVED_NAMES = ("prototypes_pre_activation", "prototypes", "logits_raw", "logits_ns")
_CONTRACT = ("model.prototypes(attributes [K, d_a]) -> [K, d_z], or a forward(attributes) that returns them "
             "(the model contract, README)")


@dataclass(frozen=True)
class LayerStatistics:
    """Statistics of one ``[K, d]`` activation over the class axis (module docstring).

    ``module_type`` says what produced the activation: the class name of the hooked module,
    the model's class for ``"prototypes"`` and ``"prototypes_pre_activation"``, ``""`` for
    the logits (computed by the profiler) and by default.  It is last and optional, so
    records built from the name, shape and :data:`MOMENTS` alone still work.
    """

    name: str  # module name, or "prototypes_pre_activation" / "prototypes" / "logits_raw" / "logits_ns"
    shape: tuple[int, ...]  # (K, d); (K, B) for the logits
    mean: float  # mean of all entries
    class_variance: float  # per-coordinate variance over classes (biased), averaged over coordinates
    second_moment: float  # mean of the squared entries
    norm_sq: float  # mean over classes of the squared row norm ||h_c||^2
    module_type: str = ""  # class name of the module ("Linear"); the model's for the prototypes; "" for logits

    @classmethod
    def of(cls, name: str, h: Tensor, module_type: str = "") -> LayerStatistics:
        """The statistics of ``h`` [K, d], computed in float64.

        Raises:
            ValueError: ``h`` is not a 2-D tensor.
        """
        if h.ndim != 2:
            raise ValueError(f"expected a [K, d] activation for {name!r}, got shape {tuple(h.shape)}")
        return cls._from_values(name, tuple(h.shape), _moments(h).tolist(), module_type)

    @classmethod
    def _from_values(cls, name: str, shape: tuple[int, ...], values: Sequence[float],
                     module_type: str = "") -> LayerStatistics:
        return cls(name, shape, **dict(zip(MOMENTS, values, strict=True)), module_type=module_type)

    def as_dict(self) -> dict[str, float]:
        """The four statistics by name (:data:`MOMENTS`): numbers only, for arithmetic over them;
        :meth:`as_record` is the self-describing form to serialize."""
        return {stat: getattr(self, stat) for stat in MOMENTS}

    def as_record(self) -> dict[str, str | list[int] | float]:
        """A JSON-ready record: ``name``, ``module_type``, ``shape`` (a list), then :data:`MOMENTS`."""
        return {"name": self.name, "module_type": self.module_type, "shape": list(self.shape), **self.as_dict()}


def prototypes_entry(profile: Mapping[str, object]) -> str:
    """The entry of ``profile`` to compare with the V2-V4 predictions about the prototypes.

    ``"prototypes_pre_activation"`` when the profile has it (the model exposes its
    pre-activation prototypes), else ``"prototypes"``: the claims are about the output of
    the last layer ``V`` before any output activation (module docstring).  ``profile`` is
    what :func:`profile_layers` or :func:`profile_at_init` returns, or any mapping keyed
    by entry names (``VarianceRecorder.as_arrays()``).

    Raises:
        ValueError: ``profile`` has neither entry.
    """
    for name in ("prototypes_pre_activation", "prototypes"):
        if name in profile:
            return name
    raise ValueError(
        f"the profile has no prototypes entry (entries: {', '.join(map(str, profile)) or 'none'}); pass "
        f"the result of profile_layers or profile_at_init"
    )


def _moments(h: Tensor) -> Tensor:
    """:data:`MOMENTS` of ``h`` [K, d], in that order, as a float64 tensor [4]."""
    h = h.detach().double()
    sq = h.square()
    return torch.stack((h.mean(), h.var(dim=0, correction=0).mean(), sq.mean(), sq.sum(dim=1).mean()))


def _check_attributes(attributes: Tensor) -> None:
    if not isinstance(attributes, Tensor) or attributes.ndim != 2 or attributes.shape[0] < 1:
        shape = tuple(attributes.shape) if isinstance(attributes, Tensor) else type(attributes).__name__
        raise ValueError(
            f"attributes must be a 2-D [K, d_a] matrix with one row per class (K >= 1), got "
            f"{shape}; for a single class pass attributes[None]"
        )


def _resolve_gamma(model: nn.Module, gamma: float | Tensor | None) -> float:
    """``gamma`` if given, else ``model.head.gamma``, as a float: a real number, or a
    one-element real tensor such as a learned ``nn.Parameter`` (its current value, detached)."""
    source = "gamma"
    if gamma is None:
        gamma = getattr(getattr(model, "head", None), "gamma", None)
        source = f"{type(model).__name__}.head.gamma"
        if gamma is None:
            raise ValueError(
                f"features were given but no NS scale: {type(model).__name__} has no head.gamma; "
                f"pass gamma=... (the reference recipe uses 5)"
            )
    if isinstance(gamma, Tensor):
        if gamma.numel() != 1 or gamma.is_complex() or gamma.dtype == torch.bool:
            raise ValueError(
                f"{source} must be a positive finite number or a one-element real tensor, got a "
                f"{gamma.dtype} tensor of shape {tuple(gamma.shape)}"
            )
        value = float(gamma.detach())  # detached: a learned temperature is read, never tracked
    elif isinstance(gamma, numbers.Real) and not isinstance(gamma, bool):
        value = float(gamma)
    else:
        raise ValueError(f"{source} must be a positive finite number or a one-element tensor, got {gamma!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"gamma must be a positive finite number, got {value!r} (from {source})")
    return value


def _embedder(model: nn.Module) -> Callable[[Tensor], object]:
    """``model.prototypes`` if callable, else ``model`` itself when its ``forward`` can take the
    attributes alone; checked on the signature, before anything runs (module docstring).

    Raises:
        TypeError: neither (the one-line message names what the profiler needs).
    """
    embed = getattr(model, "prototypes", None)
    if callable(embed):
        return embed
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # no Python signature to read: let the call decide
        return model
    try:
        signature.bind(object())  # one positional argument: the attributes
    except TypeError:
        raise TypeError(
            f"{type(model).__name__} has no prototypes() method and its forward({', '.join(signature.parameters)}) "
            f"does not take the attributes alone; the profiler needs {_CONTRACT}"
        ) from None
    return model


def _hook_targets(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs to hook: every leaf module, or the ``layers`` named."""
    modules = dict(model.named_modules())
    modules.pop("", None)  # the root's output is the "prototypes" entry
    clash = sorted(set(modules) & set(RESERVED_NAMES))
    if clash:
        raise ValueError(
            f"module name(s) {clash} clash with the profile entries {RESERVED_NAMES}; rename "
            f"the submodule(s)"
        )
    if layers is None:
        return [(name, m) for name, m in modules.items() if next(m.children(), None) is None]
    if isinstance(layers, str):
        layers = [layers]  # a single name, not its characters
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(
            f"unknown layer name(s) {unknown}; choose among model.named_modules(): "
            f"{', '.join(modules) or '(none)'}"
        )
    return [(name, modules[name]) for name in dict.fromkeys(layers)]


@contextmanager
def _restored_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's ``training`` flag and every buffer on exit (also on error)."""
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(m, key, b, b.detach().clone()) for m in model.modules()
               for key, b in m._buffers.items() if b is not None]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for m, key, original, saved in buffers:
                m._buffers[key] = original  # undo a replaced buffer
                if not torch.equal(original, saved):
                    original.copy_(saved)  # undo an in-place update (e.g. BatchNorm)


def _cuda_devices(model: nn.Module) -> list[int]:
    """Indices of the CUDA devices holding the model (their RNG state is forked)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


def _model_device(model: nn.Module, default: torch.device) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return default if tensor is None else tensor.device


def profile_layers(
    model: nn.Module,
    attributes: Tensor,
    features: Tensor | None = None,
    *,
    layers: Sequence[str] | None = None,
    gamma: float | Tensor | None = None,
    statistics: str = "batch",
) -> dict[str, LayerStatistics]:
    """Profile one forward pass of ``model`` on ``attributes`` (module docstring).

    Args:
        model: any embedder; ``model.prototypes(attributes)`` is called when it exists,
            else ``model(attributes)``, which must return the prototypes ``[K, d_z]``;
            ``model.pre_activation_prototypes(attributes)``, when it exists, adds
            ``"prototypes_pre_activation"``.
        attributes: class attributes ``[K, d_a]`` (moved to the model's device).
        features: optional image features ``[B, d_z]``; adds ``"logits_raw"`` and ``"logits_ns"``.
        layers: names (from ``model.named_modules()``) of the modules to hook; ``None``
            hooks every leaf module and keeps those with a 2-D output.
        gamma: NS scale for ``"logits_ns"``, a number or a one-element tensor; ``None``
            reads ``model.head.gamma`` (which may be an ``nn.Parameter``).
        statistics: ``"batch"`` (normalize with the statistics of ``attributes``) or
            ``"running"`` (the running ones); dropout is off under both.

    Returns:
        ``{name: LayerStatistics}`` in execution order, then ``"prototypes_pre_activation"``
        (if the model exposes it), ``"prototypes"`` and the logits.  The model, its
        buffers, the global RNG and autograd state are left as they were.

    Raises:
        ValueError: ``attributes`` not 2-D; unknown ``statistics`` or layer name; a named layer
            produced no 2-D output; a module name clashes with :data:`RESERVED_NAMES`;
            prototypes not 2-D, or pre-activation prototypes of another shape;
            ``features`` not ``[B, d_z]``; no valid ``gamma``.
        TypeError: the model has no ``prototypes()`` and its ``forward`` does not take the
            attributes alone (the message names the contract).
    """
    _check_attributes(attributes)
    check_statistics(statistics)
    embed = _embedder(model)
    pre_embed = getattr(model, "pre_activation_prototypes", None)
    targets = _hook_targets(model, layers)
    if features is not None:
        if not isinstance(features, Tensor) or features.ndim != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must be a 2-D [B, d_z] matrix, got {shape}")
        gamma = _resolve_gamma(model, gamma)
    device = _model_device(model, attributes.device)
    attributes = attributes.to(device)

    model_type = type(model).__name__
    pending: list[tuple[str, tuple[int, ...], Tensor, str]] = []  # moments stay on the device
    calls: dict[str, int] = {}

    def make_hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            # statistics now: a later in-place op (ReLU(inplace=True)) may overwrite output
            if isinstance(output, Tensor) and output.ndim == 2:
                calls[name] = calls.get(name, 0) + 1
                key = name if calls[name] == 1 else f"{name}#{calls[name]}"
                pending.append((key, tuple(output.shape), _moments(output), type(module).__name__))
        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    pre_activation = None
    with _restored_state(model):
        with torch.no_grad(), probe_mode(model, statistics), \
                torch.random.fork_rng(devices=_cuda_devices(model)):
            try:
                for name, m in targets:  # one by one: a failed registration leaves none behind
                    handles.append(m.register_forward_hook(make_hook(name)))
                prototypes = embed(attributes)
            finally:
                for handle in handles:
                    handle.remove()
            if callable(pre_embed):  # a second pass, no hooks: no module entries twice
                pre_activation = pre_embed(attributes)

    if layers is not None:
        silent = [name for name, _ in targets if name not in calls]
        if silent:
            raise ValueError(
                f"layer(s) {silent} produced no 2-D [K, d] output in the forward pass (not "
                f"called by prototypes(), or another output shape); name modules on the "
                f"attribute path"
            )
    if not isinstance(prototypes, Tensor) or prototypes.ndim != 2:
        shape = tuple(prototypes.shape) if isinstance(prototypes, Tensor) else type(prototypes).__name__
        raise ValueError(
            f"the embedder must return prototypes [K, d_z], got {shape}; give the model a "
            f"prototypes(attributes) method that does"
        )
    if pre_activation is not None:
        if not isinstance(pre_activation, Tensor) or pre_activation.shape != prototypes.shape:
            shape = (tuple(pre_activation.shape) if isinstance(pre_activation, Tensor)
                     else type(pre_activation).__name__)
            raise ValueError(
                f"{model_type}.pre_activation_prototypes(attributes) returned {shape}, expected the "
                f"prototypes' shape {tuple(prototypes.shape)}: V's output before the output activation"
            )
        pending.append(("prototypes_pre_activation", tuple(pre_activation.shape), _moments(pre_activation),
                        model_type))
    pending.append(("prototypes", tuple(prototypes.shape), _moments(prototypes), model_type))
    if features is not None:
        if features.shape[1] != prototypes.shape[1]:
            raise ValueError(
                f"features have d_z = {features.shape[1]} but the prototypes "
                f"{tuple(prototypes.shape)} have d_z = {prototypes.shape[1]}; pass [B, "
                f"{prototypes.shape[1]}] features"
            )
        z = features.detach().to(device=prototypes.device, dtype=torch.float64)
        p = prototypes.detach().double()
        raw = p @ z.T  # [K, B], class-major
        ns = normalize_scale_logits(z, p, gamma).T  # [K, B]
        pending += [("logits_raw", tuple(raw.shape), _moments(raw), ""),
                    ("logits_ns", tuple(ns.shape), _moments(ns), "")]

    values = torch.stack([m for _, _, m, _ in pending]).cpu().tolist()  # one device sync
    return {name: LayerStatistics._from_values(name, shape, v, module_type)
            for (name, shape, _, module_type), v in zip(pending, values)}


def profile_at_init(
    build: Callable[[torch.Generator], nn.Module],
    attributes: Tensor,
    features: Tensor | None = None,
    *,
    seeds: Sequence[int],
    layers: Sequence[str] | None = None,
    gamma: float | Tensor | None = None,
    statistics: str = "batch",
) -> dict[str, dict[str, Estimate]]:
    """Monte Carlo profile over initializations: the mean of each statistic over seeds.

    For each seed ``s`` the model ``build(torch.Generator().manual_seed(s))`` is profiled
    with :func:`profile_layers`; each statistic is then averaged over the ``n`` seeds,
    with standard error ``std / sqrt(n)`` (:func:`~variance.estimate.mean_estimate`):

        E_theta[stat(layer)]  ~=  (1/n) sum_s stat_s(layer)  +-  std_s / sqrt(n)

    Attributes and features are fixed: the expectation is over the weights only.

    Args:
        build: makes a fresh model from a generator; it must draw every weight from it.
        attributes, features, layers, gamma, statistics: as in :func:`profile_layers`.
        seeds: at least 2 distinct integers (one model each).

    Returns:
        ``{layer: {statistic: Estimate}}`` with the statistics of :data:`MOMENTS` (numbers
        only; each layer's ``module_type`` is that of :func:`profile_layers` on any one model).

    Raises:
        ValueError: fewer than 2 seeds or a repeated seed; the models of two seeds have
            different layers; anything :func:`profile_layers` refuses.
        TypeError: ``build`` returned something other than an ``nn.Module``.
    """
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise ValueError(
            f"seeds must hold at least 2 seeds (a standard error needs 2 samples), got {seeds}; "
            f"e.g. seeds=range(32)"
        )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct (repeated models are not independent samples), got {seeds}")
    _check_attributes(attributes)
    check_statistics(statistics)
    profiles: list[dict[str, LayerStatistics]] = []
    for seed in seeds:
        model = build(torch.Generator().manual_seed(seed))
        if not isinstance(model, nn.Module):
            raise TypeError(f"build must return an nn.Module, got {type(model).__name__} for seed {seed}")
        profiles.append(profile_layers(model, attributes, features, layers=layers, gamma=gamma, statistics=statistics))
    names = list(profiles[0])
    for seed, profile in zip(seeds, profiles):
        if list(profile) != names:
            raise ValueError(
                f"the model of seed {seed} has layers {list(profile)}, the one of seed "
                f"{seeds[0]} has {names}; build must give the same architecture for every seed"
            )
    return {
        name: {stat: mean_estimate(torch.tensor([getattr(p[name], stat) for p in profiles],
                                                dtype=torch.float64))
               for stat in MOMENTS}
        for name in names
    }


class VarianceRecorder:
    """Training callback: profiles the model every ``every`` steps of ``analysis.training.train``.

    ``train(model, data, config, on_step=recorder)`` calls it after each optimizer step; on
    steps ``0, every, 2 every, ...`` it profiles the model on the step's seen-class
    attributes and image batch (:func:`profile_layers`, which leaves the model, its running
    statistics and the global RNG untouched, so the run is bitwise the same as without it)
    and appends ``(step, epoch, {layer: LayerStatistics})`` to :attr:`records`.

    Args:
        every: profile every ``every``-th step (each profile costs about one forward pass,
            two for a model with ``pre_activation_prototypes``).
        layers, gamma, statistics: as in :func:`profile_layers`; with ``gamma=None`` a learned
            ``model.head.gamma`` is read at each recorded step.
        use_features: also record the logits on the step's image batch.

    Raises:
        ValueError: ``every`` is not a positive integer, or ``statistics`` is unknown.
    """

    def __init__(
        self, every: int = 1, *, layers: Sequence[str] | None = None, gamma: float | Tensor | None = None,
        statistics: str = "batch", use_features: bool = True,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer (record every n-th step), got {every!r}")
        check_statistics(statistics)
        self.every, self.layers, self.gamma, self.statistics = every, layers, gamma, statistics
        self.use_features = use_features
        self.records: list[tuple[int, int, dict[str, LayerStatistics]]] = []

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.every:
            return
        features = info.features if self.use_features else None
        profile = profile_layers(info.model, info.attributes, features, layers=self.layers,
                                 gamma=self.gamma, statistics=self.statistics)
        self.records.append((info.step, info.epoch, profile))

    @property
    def steps(self) -> np.ndarray:
        """Global steps of the records, int64 ``[n]``."""
        return np.array([step for step, _, _ in self.records], dtype=np.int64)

    @property
    def epochs(self) -> np.ndarray:
        """Epochs of the records, int64 ``[n]``."""
        return np.array([epoch for _, epoch, _ in self.records], dtype=np.int64)

    @property
    def module_types(self) -> dict[str, str]:
        """``{layer: module_type}`` over the records, in the order of :meth:`as_arrays`."""
        return {name: stats.module_type for _, _, profile in self.records for name, stats in profile.items()}

    def as_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """``{layer: {statistic: float64 [n]}}`` over the records (NaN where a layer is absent)."""
        names = list(dict.fromkeys(name for _, _, profile in self.records for name in profile))
        out = {name: {stat: np.full(len(self.records), np.nan) for stat in MOMENTS} for name in names}
        for i, (_, _, profile) in enumerate(self.records):
            for name, stats in profile.items():
                for stat in MOMENTS:
                    out[name][stat][i] = getattr(stats, stat)
        return out
