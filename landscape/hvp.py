"""Hessian-vector products and gradient norms of the training loss (docs/science.md section 5.2).

The curvature probes (Lanczos top eigenvalues, Hutchinson trace, spectral density) only
touch the Hessian through products with the data-set Hessian of an :class:`Objective`

    H v = sum_b n_b H_b v / sum_b n_b,     H_b = d^2 L_b / d theta^2  [n, n],  v  [n]

(the Hessian of the sample-weighted mean loss; equal to the Hessian of the full-batch
loss when ``loss_fn`` is a mean over samples and the batches share their class set).
Ways to compute ``H_b v``:

- **double backward** (reverse-over-reverse, the default): ``g_b = grad L_b`` with
  ``create_graph=True``, then ``H_b v = d <g_b, v> / d theta``, i.e.
  ``torch.autograd.grad(g_b, theta, v)``.  Per product: one forward, one backward and
  one double-backward pass.
- **graph reuse** (:class:`HessianOperator` on one batch): the graph of ``g_b`` is built
  once at the origin and every product is only the double-backward pass
  (``retain_graph=True``), at the price of keeping that graph alive.
- **forward-over-reverse** (``method="forward_over_reverse"``):
  ``torch.func.jvp(torch.func.grad(L_b), (theta,), (v,))``; one forward and one backward
  pass, each carrying a tangent.  Composes with other ``torch.func`` transforms.

Measured on 2 shared CPU threads, torch 2.13 (CN preset, K classes, B images; best
per-product wall time in ms over two sessions, after warm-up):

    model (n parameters)                        graph reuse  double backward  jvp(grad)
    d_a 4, d_z 6, hidden (5, 4), f64 (79)          0.8-1.1        1.7-2.0       4.7-5.5
    d_a 12, d_z 32, hidden 1024^2, f32 (1.1M)        6-14          12-26         16-63
    reference size, K 40, B 256, f32 (3.2M)         26-28          34-46         40-54
    reference size, K 40, B 4096, f32               36-42         74-104       114-140

(building the reused graph costs about one recomputed product), so graph reuse is the
default of :class:`HessianOperator` when it has a single batch (``reuse_graph=None``),
and double backward everywhere else.  Several batches are recomputed batch by batch:
one graph per batch would keep the whole data set's graphs alive.

Sharded data: every product is this process's share ``sum_{b local} n_b H_b v / N`` passed
through :meth:`Objective.sum_over_shards` (``N`` from :meth:`Objective.total_samples`), so a
:class:`landscape.distributed.ShardedObjective` makes each product the full-data one on
every process.

Nothing here draws random numbers, and nothing mutates the model (:class:`Objective`).
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn

from landscape.objective import Batch, LossFn, Objective, check_batches, parameter_groups

__all__ = ["HVP_METHODS", "HessianOperator", "gradient_norm", "gradient_norms_by_layer", "hessian_vector_product"]

HVP_METHODS = ("double_backward", "forward_over_reverse")

# reuse_graph=None reuses the graph up to this many batches (one graph each).
_AUTO_REUSE_MAX_BATCHES = 1


@functools.cache
def _prepare_forward_ad() -> None:
    """Import torch's forward-AD decompositions once, silencing only torch's own warning.

    The first ``torch.func.jvp`` imports ``torch._decomp.decompositions_for_jvp``, which in
    torch 2.13 calls the deprecated ``torch.jit.script``: a ``DeprecationWarning`` raised
    from torch's code, an error under ``-W error`` (this project's pytest configuration).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                category=DeprecationWarning)
        try:
            importlib.import_module("torch._decomp.decompositions_for_jvp")
        except ImportError:  # a torch without the module loads nothing here
            pass


def _check_vector(objective: Objective, vector: Tensor) -> Tensor:
    """``vector`` as a flat ``[n]`` tensor on the objective's device and dtype."""
    if not isinstance(vector, Tensor):
        raise TypeError(f"vector must be a torch.Tensor, got {type(vector).__name__}")
    if vector.ndim != 1 or vector.shape[0] != objective.num_parameters:
        raise ValueError(
            f"vector must be flat with length {objective.num_parameters} (the probed parameters "
            f"{list(objective.names)}), got shape {tuple(vector.shape)}; use objective.flatten"
        )
    return vector.detach().to(device=objective.device, dtype=objective.dtype)


def _gradient_graph(objective: Objective, leaves: tuple[Tensor, ...], batch: Batch) -> tuple[Tensor, ...]:
    """``grad L_b`` at ``leaves`` with its graph (``create_graph=True``); an entry without a
    graph is constant in theta (its Hessian rows are zero)."""
    with torch.enable_grad():
        loss = objective.loss(leaves, batch)
        return torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True,
                                   materialize_grads=True)


def _double_backward(grads: tuple[Tensor, ...], leaves: tuple[Tensor, ...], tangents: tuple[Tensor, ...],
                     *, retain_graph: bool) -> tuple[Tensor, ...]:
    """``d <g_b, v> / d theta`` through the graph of ``g_b`` (shaped like ``leaves``)."""
    pairs = [(g, t) for g, t in zip(grads, tangents) if g.requires_grad]
    if not pairs:
        return tuple(torch.zeros_like(p) for p in leaves)
    outputs, grad_outputs = zip(*pairs)
    return torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=retain_graph,
                               allow_unused=True, materialize_grads=True)


def _leaves(params: Sequence[Tensor]) -> tuple[Tensor, ...]:
    # Leaves of our own (sharing the caller's storage, never the model's parameters).
    return tuple(p.detach().requires_grad_(True) for p in params)


def _batch_hvp(objective: Objective, params: tuple[Tensor, ...], tangents: tuple[Tensor, ...],
               batch: Batch, method: str) -> tuple[Tensor, ...]:
    """``H_b v`` shaped like ``params``, recomputed from the forward pass."""
    if method == "forward_over_reverse":
        _prepare_forward_ad()
        grad_fn = torch.func.grad(lambda theta: objective.loss(theta, batch))
        _, hv = torch.func.jvp(grad_fn, (params,), (tangents,))
        return hv
    leaves = _leaves(params)
    return _double_backward(_gradient_graph(objective, leaves, batch), leaves, tangents, retain_graph=False)


def hessian_vector_product(
    objective: Objective,
    params: Sequence[Tensor],
    vector: Tensor,
    batches: Sequence[Batch],
    *,
    method: str = "double_backward",
) -> Tensor:
    """``H(theta) v = sum_b n_b H_b v / sum_b n_b``, recomputed batch by batch.

    Args:
        objective: the loss and the probed parameters.
        params: ``theta``, shaped like the probed parameters (e.g. ``objective.params()``).
        vector: ``v [n]`` in the flat ordering of :meth:`Objective.flatten` (converted to
            the model's device and dtype).
        batches: the data; batch ``b`` weighs ``n_b`` samples.
        method: ``"double_backward"`` (default, faster on CPU) or ``"forward_over_reverse"``
            (module docstring).

    Returns:
        ``H v`` as a flat ``[n]`` tensor on the model's device (detached).

    Raises:
        ValueError: empty ``batches``, ``vector`` of the wrong length, misshapen ``params``,
            unknown ``method``.
    """
    if method not in HVP_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {HVP_METHODS}")
    batches = check_batches(batches)
    params = tuple(p.detach() for p in params)
    objective.flatten(params)  # validates the count and shapes
    tangents = objective.unflatten(_check_vector(objective, vector))
    total = objective.total_samples(batches)
    result = torch.zeros(objective.num_parameters, dtype=objective.dtype, device=objective.device)
    for batch in batches:
        hv = _batch_hvp(objective, params, tangents, batch, method)
        result.add_(objective.flatten(hv).detach(), alpha=batch.size / total)
    return objective.sum_over_shards(result)


class HessianOperator:
    """The data-set Hessian at a fixed origin as a symmetric linear operator ``[n, n]``.

    ``H v = sum_b n_b H_b(theta_0) v / sum_b n_b`` (module docstring), for flat ``v [n]``.

    Args:
        objective: the loss and the probed parameters.
        batches: the data, fixed for the life of the operator.
        params: the origin ``theta_0`` (copied); ``None``: ``objective.params()``.
        reuse_graph: ``True`` builds ``grad L_b`` once per batch with ``create_graph=True`` and
            reuses it for every product (memory: every batch's graph); ``False`` recomputes
            each product by double backward; ``None`` (default) reuses the graph iff there
            is a single batch, the faster choice measured (module docstring).

    The origin and the batches are fixed; the parameters that are not probed are read from
    the model at each product (with graph reuse: once, at construction), so do not train
    the model while an operator built on it is in use.

    Attributes:
        num_matvecs: products computed so far (a matrix of ``k`` columns counts ``k``).

    Raises:
        ValueError: empty ``batches`` or misshapen ``params``.
        TypeError: ``reuse_graph`` is not a bool or None.

    Example (relation)::

        H = HessianOperator(objective, batches)
        u, v = ...  # flat [n] vectors
        torch.testing.assert_close(u @ (H @ v), v @ (H @ u))  # symmetric
    """

    def __init__(
        self,
        objective: Objective,
        batches: Sequence[Batch],
        params: Sequence[Tensor] | None = None,
        *,
        reuse_graph: bool | None = None,
    ) -> None:
        self.objective = objective
        self.batches = check_batches(batches)
        origin = objective.params() if params is None else tuple(p.detach().clone() for p in params)
        objective.flatten(origin)  # validates the count and shapes
        self.origin: tuple[Tensor, ...] = origin
        if reuse_graph is None:
            reuse_graph = len(self.batches) <= _AUTO_REUSE_MAX_BATCHES
        if not isinstance(reuse_graph, bool):
            raise TypeError(f"reuse_graph must be True, False or None (automatic), got {reuse_graph!r}")
        self.reuse_graph = reuse_graph
        total = objective.total_samples(self.batches)  # all processes' samples when sharded
        self._weights = [b.size / total for b in self.batches]
        self.num_matvecs = 0
        self._leaves: tuple[Tensor, ...] = ()
        self._gradients: list[tuple[Tensor, ...]] = []
        if reuse_graph:
            self._build_graphs()

    def _build_graphs(self) -> None:
        self._leaves = _leaves(self.origin)
        self._gradients = [_gradient_graph(self.objective, self._leaves, b) for b in self.batches]

    @property
    def shape(self) -> tuple[int, int]:
        n = self.objective.num_parameters
        return (n, n)

    @property
    def dtype(self) -> torch.dtype:
        return self.objective.dtype

    @property
    def device(self) -> torch.device:
        return self.objective.device

    def matvec(self, vector: Tensor) -> Tensor:
        """``H v`` for a flat ``v [n]`` (converted to the operator's device and dtype).

        Raises:
            ValueError: ``vector`` is not 1-D of length ``n``.
        """
        tangents = self.objective.unflatten(_check_vector(self.objective, vector))
        result = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for i, (weight, batch) in enumerate(zip(self._weights, self.batches)):
            if self.reuse_graph:
                hv = _double_backward(self._gradients[i], self._leaves, tangents, retain_graph=True)
            else:
                hv = _batch_hvp(self.objective, self.origin, tangents, batch, "double_backward")
            result.add_(self.objective.flatten(hv).detach(), alpha=weight)
        self.num_matvecs += 1
        return self.objective.sum_over_shards(result)

    def __matmul__(self, other: Tensor) -> Tensor:
        """``H @ v`` for ``v [n]``, or ``H @ V`` column by column for ``V [n, k]``."""
        if isinstance(other, Tensor) and other.ndim == 2:
            if other.shape[0] != self.shape[0]:
                raise ValueError(f"expected a matrix [{self.shape[0]}, k], got shape {tuple(other.shape)}")
            columns = [self.matvec(column) for column in other.unbind(dim=1)]
            return torch.stack(columns, dim=1) if columns else other.new_zeros(other.shape)
        return self.matvec(other)

    def as_linear_operator(self) -> LinearOperator:
        """The operator for ``scipy.sparse.linalg`` (``eigsh``, ``cg``): float64 numpy in and
        out, ``rmatvec = matvec`` (H is symmetric).  Inputs move to the operator's device."""

        def apply(x: np.ndarray) -> np.ndarray:
            flat = np.asarray(x, dtype=np.float64).reshape(-1)  # scipy passes [n] or [n, 1]
            v = torch.from_numpy(flat).to(device=self.device, dtype=self.dtype)
            return self.matvec(v).to(device="cpu", dtype=torch.float64).numpy()

        return LinearOperator(self.shape, matvec=apply, rmatvec=apply, dtype=np.float64)

    def __repr__(self) -> str:
        return (f"HessianOperator(n={self.shape[0]}, batches={len(self.batches)}, "
                f"reuse_graph={self.reuse_graph}, num_matvecs={self.num_matvecs})")


def gradient_norm(objective: Objective, batches: Sequence[Batch], params: Sequence[Tensor] | None = None) -> float:
    """``||grad L(theta)||_2`` of the sample-weighted mean loss over ``batches``.

    Args:
        params: ``theta``; ``None``: the model's current parameters (``objective.params()``).

    Raises:
        ValueError: empty ``batches`` or misshapen ``params``.
    """
    params = objective.params() if params is None else tuple(params)
    return float(objective.flatten(objective.gradient(params, batches)).norm())


def gradient_norms_by_layer(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    loss_fn: LossFn = nn.functional.cross_entropy,
    statistics: str = "batch",
    objective: Objective | None = None,
) -> dict[str, float]:
    """Gradient norm of the mean loss per parameter group, and in total, at the model's
    current parameters.

    Groups are the modules owning parameters (``"embedder.0"``, ``"embedder.3"``, ...; a
    parameter of the root module, like ``LinearClassifier.weight``, is its own group), in
    the model's order; the last key is ``"total"``, and
    ``sum_g norm_g^2 = total^2``.

    Args:
        objective: the objective to differentiate (e.g. a
            :class:`landscape.distributed.ShardedObjective` of ``model``); ``None`` builds
            ``Objective(model, loss_fn, statistics=statistics)``, over every parameter.

    Raises:
        ValueError: empty ``batches``, unknown ``statistics``, an ``objective`` of another model.
    """
    if objective is None:
        objective = Objective(model, loss_fn, statistics=statistics)
    elif objective.model is not model:
        raise ValueError("objective probes another model than `model`; pass the objective built on it")
    grads = dict(zip(objective.names, objective.gradient(objective.params(), batches)))
    norms = {group: sum(float(grads[name].double().square().sum()) for name in names) ** 0.5
             for group, names in parameter_groups(model).items() if all(name in grads for name in names)}
    norms["total"] = float(objective.flatten(list(grads.values())).double().norm())
    return norms
