"""V5 (docs/science.md section 4.5): the backward pass of class standardization is a scaled projection.

For one column ``h in R^K`` of the hidden matrix (K classes), Eq. (9) with ``eps`` inside
the square root (:func:`analysis.class_standardization.class_standardize`) is

    mu = (1/K) sum_c h_c,   var = (1/K) sum_c (h_c - mu)^2,   tau = sqrt(var + eps),   s = (h - mu) / tau.

**Jacobian.**  ``d mu / d h_c = 1/K`` and ``d var / d h_c = (2/K)(h_c - mu)`` (the term through
``mu`` is ``-(2/K^2) sum_a (h_a - mu) = 0``), so ``d tau / d h_c = (h_c - mu) / (K tau)`` and

    d s_a / d h_c = (delta_ac - 1/K) / tau - (h_a - mu)(h_c - mu) / (K tau^3)
                  = (1/tau) (delta_ac - 1/K - s_a s_c / K).

With upstream gradient ``g = dL/ds`` (per column):

    dL/dh = (1/tau) (g - mean(g) 1 - (<g, s>/K) s)                                   (*)

exactly, also for ``eps > 0`` (``eps`` only enters through ``tau``).  Call the bracket
``b = g - mean(g) 1 - (<g, s>/K) s``.  Since ``<1, s> = 0``,

    ||dL/dh||^2 = (1/tau^2) (||g||^2 - <1, g>^2/K - 2 <g, s>^2/K + <g, s>^2 ||s||^2 / K^2)   (**)

exactly, with ``||s||^2 = K var / (var + eps)``.  For ``eps = 0``, ``||s||^2 = K``, the vectors
``1/sqrt(K)`` and ``s/sqrt(K)`` are orthonormal, ``b`` is the orthogonal projection of ``g``
off ``span{1, s}``, and (**) reduces to the paper's

    ||dL/dh||^2 = (1/tau^2) (||g||^2 - <1, g>^2/K - <g, s>^2/K).

This is the class-axis analogue of Santurkar et al. (2018), "How does batch normalization
help optimization?", Thm 4.1, with the batch size replaced by the number of classes K.
Always ``<1, b> = 0`` (the columns of ``dL/dh`` sum to zero: S is shift-invariant);
``<s, b> = <g, s>(1 - ||s||^2/K) = <g, s> eps / (var + eps)``, zero only for ``eps = 0``
(S is then also scale-invariant).  Upstream gradients in ``span{1, s}`` (``g`` constant over
the classes, or ``g`` proportional to ``s``) give ``dL/dh = 0`` when ``eps = 0``.

:func:`check_v5` compares (*) and (**) with ``torch.autograd`` in float64.  The measured
deviation is deterministic (standard error 0), so a row passes iff it is below a round-off
bound ``64 u kappa``: ``u`` the float64 unit round-off, and ``kappa = K (1 + max|mu|/tau)``
the conditioning factor: sums over K classes (means, ``<g, s>``) carry relative error up to
``K u``, and the centering ``h - mu`` loses ``u |mu| / tau`` relative to the spread of ``h``.
Deviations are measured relative to each column's natural scale ``||g|| / tau`` (the
bracket ``b`` has norm at most ``||g||``), never relative to the result, which vanishes for
the projected-out directions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from analysis.class_standardization import class_standardize, class_statistics
from analysis.estimate import Estimate
from variance.estimate import Check, check

__all__ = [
    "autograd_standardization_gradient",
    "check_v5",
    "predicted_gradient_norm_sq",
    "predicted_standardization_gradient",
    "standardization_bracket",
    "v5_round_off_bound",
]

_DEFAULT_EPS = 1e-5  # the layer's eps (ClassStandardization, class_standardize)


def _validate(g: Tensor, h: Tensor, eps: float) -> None:
    if g.shape != h.shape:
        raise ValueError(
            f"upstream gradient g must have the shape of h [K, d], got {tuple(g.shape)} and {tuple(h.shape)}"
        )
    if h.ndim != 2:
        raise ValueError(f"h must be a [K, d] matrix (one row per class), got shape {tuple(h.shape)}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")


def _standardized(g: Tensor, h: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(g, s [K, d], tau [d])`` in a common floating dtype, validated."""
    _validate(g, h, eps)
    dtype = torch.promote_types(torch.promote_types(g.dtype, h.dtype), torch.float32)
    g, h = g.to(dtype), h.to(dtype)
    mean, var = class_statistics(h)  # raises for K < 2
    tau = torch.sqrt(var + eps).reshape(-1)  # [d] (class_statistics may keep the class axis: [1, d])
    if bool((tau == 0).any()):
        cols = torch.nonzero(tau == 0).flatten().tolist()
        raise ValueError(
            f"columns {cols} of h are constant over the classes and eps=0: S(h) is undefined there; "
            f"pass eps > 0 or drop those columns"
        )
    s = class_standardize(h, mean, var, eps=eps)  # [K, d]
    return g, s, tau


def standardization_bracket(g: Tensor, h: Tensor, eps: float = _DEFAULT_EPS) -> Tensor:
    """``b = g - mean(g) 1 - (<g, s>/K) s`` per column, ``[K, d]`` (``tau`` times (*)).

    Orthogonal to ``1`` always and to ``s`` when ``eps = 0`` (module docstring).
    """
    g, s, _ = _standardized(g, h, eps)
    k = h.shape[0]
    gs = (g * s).sum(dim=0)  # <g, s> per column, [d]
    return g - g.mean(dim=0) - (gs / k) * s


def predicted_standardization_gradient(g: Tensor, h: Tensor, eps: float = _DEFAULT_EPS) -> Tensor:
    """Closed form (*) of ``dL/dh`` ``[K, d]`` for ``s = class_standardize(h, eps=eps)`` and
    upstream gradient ``g = dL/ds`` ``[K, d]``.

    Raises:
        ValueError: ``g`` and ``h`` of different shapes, ``eps < 0``, ``K < 2``, ``h`` not a
            matrix, or a constant column of ``h`` with ``eps = 0``.

    Example: ``predicted_standardization_gradient(g, h).sum(dim=0)`` is zero to round-off.
    """
    _, _, tau = _standardized(g, h, eps)
    return standardization_bracket(g, h, eps) / tau


def predicted_gradient_norm_sq(g: Tensor, h: Tensor, eps: float = _DEFAULT_EPS) -> Tensor:
    """Closed form (**) of ``||dL/dh||^2`` per column, ``[d]`` (exact for every ``eps >= 0``).

    Raises:
        ValueError: as :func:`predicted_standardization_gradient`.
    """
    g, s, tau = _standardized(g, h, eps)
    k = h.shape[0]
    one_g = g.sum(dim=0)  # <1, g>, [d]
    gs = (g * s).sum(dim=0)  # <g, s>, [d]
    ss = (s * s).sum(dim=0)  # ||s||^2 = K var/(var + eps), [d]
    gg = (g * g).sum(dim=0)
    return (gg - one_g**2 / k - 2 * gs**2 / k + gs**2 * ss / k**2) / tau**2


def autograd_standardization_gradient(g: Tensor, h: Tensor, eps: float = _DEFAULT_EPS) -> Tensor:
    """``dL/dh`` ``[K, d]`` by ``torch.autograd.grad`` of ``sum(g * class_standardize(h))``.

    Raises:
        ValueError: as :func:`predicted_standardization_gradient`.
    """
    g, _, _ = _standardized(g, h, eps)
    x = h.detach().to(g.dtype).requires_grad_(True)
    (grad,) = torch.autograd.grad((g * class_standardize(x, eps=eps)).sum(), x)
    return grad


def v5_round_off_bound(h: Tensor, eps: float = 0.0) -> float:
    """``64 u K (1 + max_j |mu_j| / tau_j)``: the pass bound of :func:`check_v5` (module
    docstring), ``u`` the unit round-off of float64."""
    h = h.detach().double()
    _standardized(h, h, eps)  # validates h and eps (a constant column with eps = 0 has no tau)
    mean, var = class_statistics(h)
    kappa = h.shape[0] * (1.0 + float((mean.abs() / torch.sqrt(var + eps)).max()))
    return 64 * torch.finfo(torch.float64).eps * kappa


GradientFn = Callable[[Tensor, Tensor, float], Tensor]


def check_v5(
    h: Tensor, g: Tensor, eps: float = 0.0, *,
    gradient_fn: GradientFn = predicted_standardization_gradient,
) -> list[Check]:
    """V5 on one hidden matrix ``h`` [K, d] and upstream gradient ``g`` [K, d], in float64.

    Four rows, each a deterministic deviation (standard error 0) with pass bound
    :func:`v5_round_off_bound`, relative to each column's scale ``||g_j|| / tau_j``:

    1. ``max |gradient_fn(g, h, eps) - autograd|`` (the closed form (*); ``gradient_fn``
       lets a caller test another formula with the same check);
    2. the norm identity (**): ``max |predicted_gradient_norm_sq - ||autograd||^2|`` over
       ``||g||^2 / tau^2``;
    3. ``<1, dL/dh> = 0``: the autograd column sums, over ``sqrt(K)``;
    4. ``<s, b> = <g, s> eps/(var + eps)`` (0 when ``eps = 0``): ``tau <s, autograd>``
       against it, over ``sqrt(K)`` (``|<s, b>| <= sqrt(K) ||g||``).

    Raises:
        ValueError: as :func:`predicted_standardization_gradient`.
    """
    h64, g64 = h.detach().double(), g.detach().double()
    g64, s, tau = _standardized(g64, h64, eps)
    k, d = h64.shape
    auto = autograd_standardization_gradient(g64, h64, eps)  # [K, d]
    g_norm = g64.norm(dim=0)  # [d]
    scale = torch.where(g_norm > 0, g_norm / tau, torch.ones_like(tau))  # ||g||/tau, 1 where g = 0
    bound = v5_round_off_bound(h64, eps)
    setting = f"K={k}, d={d}, eps={eps:g}"

    def row(what: str, deviation: Tensor, predicted: float = 0.0) -> Check:
        measured = float(deviation.max())
        return check("V5", f"{what}, {setting}", predicted, Estimate(measured, 0.0, 1), bias_bound=bound)

    closed = gradient_fn(g64, h64, eps).double()
    gs = (g64 * s).sum(dim=0)
    ss = (s * s).sum(dim=0)
    s_b_expected = gs * (1 - ss / k)  # <s, b> for the exact bracket
    return [
        row("dL/dh closed form vs autograd", ((closed - auto).abs() / scale).amax(dim=0)),
        row("||dL/dh||^2 identity vs autograd",
            (predicted_gradient_norm_sq(g64, h64, eps) - auto.pow(2).sum(dim=0)).abs() / scale**2),
        row("<1, dL/dh> = 0", auto.sum(dim=0).abs() / (scale * k**0.5)),
        row("<s, b> = <g,s> eps/(var+eps)",
            (tau * (s * auto).sum(dim=0) - s_b_expected).abs() / (scale * tau * k**0.5)),
    ]
