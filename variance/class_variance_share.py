"""V3 (docs/science.md section 4.3) across classes: the share of the prototype variance that lies
*between* classes is set by the distribution of the attributes across classes.

V3 is a qualitative statement (the scale before the last layer depends on, among other
things, the distribution of attributes across classes) and comes with **no quantitative
prediction**.  The prediction below is the toolkit's own, derived here; the rows that use
it are claims about this derivation, which is the quantitative content of the statement.

**The quantity.**  For prototypes ``p`` [K, d_z] of one initialization,

    C = (1/(K d_z)) sum_{c,i} (p_ci - pbar_i)^2      (variance across classes, pbar_i = mean_c p_ci)
    P = (1/(K d_z)) sum_{c,i} p_ci^2                 (second moment, what V2-V4 predict)

and the share is ``rho = E[C] / E[P]`` (expectations over random inits).  The second-moment
rows of V3 cannot see the attributes' distribution (real CUB attributes, i.i.d. |Gaussian|
and centred Gaussian ones give the same ``P`` to 3 %: it is fixed by ``mean_c ||a_c||^2`` and
the exact ReLU recursion of :func:`variance.prototype_variance.predicted_hidden_norm_sq`);
``rho`` can.

**Derivation.**  Let ``p_c = V h_c`` with ``V`` [d_z, d_L] i.i.d. zero-mean of variance
``s_V^2``, independent of the last hidden layer ``h`` [K, d_L] (no bias).  Given ``h``,
``E_V[p_ci p_c'i] = s_V^2 <h_c, h_c'>``, so

    E_V[C | h] = s_V^2 (1/K) sum_c ||h_c - hbar||^2,     E_V[P | h] = s_V^2 (1/K) sum_c ||h_c||^2,

and with the class Gram matrix ``G = E[h h^T]`` [K, K] (expectation over the hidden weights)

    rho = 1 - (1^T G 1 / K^2) / (tr G / K) = 1 - ||mean_c h_c||^2 / mean_c ||h_c||^2     (in expectation).

``G`` follows the attributes through the ReLU layers ``h_l = relu(W_l h_{l-1})``, ``W_l``
i.i.d. zero-mean of variance ``s_l^2``.  For Gaussian ``W_l`` the pair
``(w . x, w . y)`` is Gaussian and (Cho & Saul 2009, the degree-1 arc-cosine kernel)

    E[relu(w.x) relu(w.y)] = (s_l^2 / (2 pi)) ||x|| ||y|| (sin t + (pi - t) cos t),   cos t = <x,y>/(||x|| ||y||),

so, in the limit of wide layers where ``<h_c, h_c'>`` concentrates at its mean,

    G_0 = A A^T (A [K, d_a] the attributes as the model sees them),
    G_l(c, c') = (d_l s_l^2 / (2 pi)) sqrt(G_{l-1}(c,c) G_{l-1}(c',c')) (sin t + (pi - t) cos t).

The factor ``d_l s_l^2 / 2`` multiplies all of ``G_l`` and cancels in ``rho``: the share
depends on the depth and on the *angles between the classes' attribute vectors* only,
not on the init scale, ``V``'s scheme or ``d_z`` (:func:`predicted_class_variance_share`).
Consequences:

- i.i.d. centred attributes (the standardized, uncorrelated batch that fan-in inits
  assume): ``cos t_0 ~ 0``, so one layer gives ``cos t_1 = 1/pi`` and ``rho ~ 1 - 1/pi = 0.68``,
  two layers ``rho ~ 0.50``;
- non-negative attributes (real ones, i.i.d. |Gaussian|): ``cos t_0 ~ 0.6`` or more, and
  ``rho ~ 0.25-0.3`` after two layers: most of the prototype variance is a shared offset,
  the same for every class, which the NS head's cosine cannot use to tell classes apart.
- with CN right before ``V`` the input is centred over the classes, ``hbar = 0``: ``rho = 1``
  exactly, whatever the attributes.

**Assumptions and the stated bias bound.**  The toolkit draws *uniform* weights (so
``w.x`` is Gaussian only approximately, by the central limit theorem over ``d_a`` inputs)
and finite widths (``E[f(G)] != f(E[G])`` for the nonlinear kernel map: a correction of
order ``1/width`` per layer, Hanin & Nica 2019).  Neither is bounded in closed form here;
the checks allow ``bias = depth / min(width)``, an allowance (not a proof) for both.  It is
checked, not proven: for real CUB, i.i.d. |Gaussian| and centred Gaussian attributes at
widths 64 and 1024 and depths 1-3 the measured share lies within 0.006 of the prediction
(at most 2.3 standard errors at 64 inits), inside the allowance; at width 1024 and depth 3
all three sit about +0.003 = 3/1024 above it, the size of finite-width correction the
allowance is for.  The allowance grows as the width shrinks: at width 64 and depth 2 it is
0.03, more than 5 % of a share of 0.26, so such a row no longer resolves a 5 % error.

**The estimator.**  Over ``n`` inits with per-init ``(C_s, P_s)`` the ratio of means
``R = mean(C) / mean(P)`` has the delta-method standard error
``std(C_s - R P_s) / (sqrt(n) mean(P))`` (:func:`measure_class_variance_share`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from analysis.estimate import Estimate
from analysis.model import EmbedderConfig
from variance.batched_embedder import batched_embedder_forward, iter_draws
from variance.estimate import Check, check

__all__ = [
    "IID_ATTRIBUTE_LAWS",
    "arccos_kernel_gram",
    "check_v3_share",
    "iid_attributes",
    "measure_class_variance_share",
    "predicted_class_variance_share",
    "share_bias_bound",
]

IID_ATTRIBUTE_LAWS = ("abs-gaussian", "gaussian")  # i.i.d. |N(0,1)| (non-negative) and N(0,1) (centred)


def _check_matrix(attributes: Tensor) -> None:
    if not isinstance(attributes, Tensor) or attributes.ndim != 2 or attributes.shape[0] < 2:
        shape = tuple(attributes.shape) if isinstance(attributes, Tensor) else type(attributes).__name__
        raise ValueError(f"attributes must be a [K, d_a] matrix with K >= 2 classes, got {shape}")


def _check_no_cn_no_bias(config: EmbedderConfig) -> None:
    if config.bias or config.cn_layers or not config.hidden_dims:
        raise ValueError(
            "the share prediction is for a bias-free deep embedder without CN (bias=False, cn_layers=(), "
            f"hidden_dims non-empty), got bias={config.bias}, cn_layers={config.cn_layers}, "
            f"hidden_dims={config.hidden_dims}"
        )


def arccos_kernel_gram(attributes: Tensor, depth: int) -> Tensor:
    """The class Gram matrix ``G_depth`` [K, K] of wide bias-free ReLU layers, up to a scale
    (module docstring; ``G_0 = A A^T``, each layer the degree-1 arc-cosine map), in float64.

    Raises:
        ValueError: ``attributes`` not a [K, d_a] matrix with K >= 2, a zero attribute row,
            or ``depth < 0``.

    Example: for orthogonal unit rows, ``G_1`` has diagonal ``1/2`` and off-diagonal ``1/(2 pi)``
    (``t = pi/2``: ``sin t + (pi - t) cos t = 1``), up to the common scale.
    """
    _check_matrix(attributes)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    a = attributes.detach().double()
    gram = a @ a.T  # [K, K]
    if bool((gram.diagonal() <= 0).any()):
        rows = torch.nonzero(gram.diagonal() <= 0).flatten().tolist()
        raise ValueError(f"attribute rows {rows} are zero: their angle to other classes is undefined")
    for _ in range(depth):
        norms = gram.diagonal().sqrt()  # [K]
        outer = norms[:, None] * norms[None, :]
        cos = (gram / outer).clamp(-1.0, 1.0)
        t = torch.acos(cos)
        # the factor d_l s_l^2 is left out: it cancels in the share
        gram = outer * (torch.sin(t) + (math.pi - t) * cos) / (2.0 * math.pi)
    return gram


def predicted_class_variance_share(attributes: Tensor, depth: int) -> float:
    """``rho = 1 - (1^T G 1 / K^2) / (tr G / K)`` with ``G = arccos_kernel_gram(attributes, depth)``.

    ``attributes`` [K, d_a] as the model sees them (normalized); the share is invariant to a
    common scale of them and to the init scales (module docstring).

    Raises:
        ValueError: as :func:`arccos_kernel_gram`.
    """
    gram = arccos_kernel_gram(attributes, depth)
    k = gram.shape[0]
    return float(1.0 - (gram.sum() / k**2) / (gram.diagonal().sum() / k))


def share_bias_bound(config: EmbedderConfig) -> float:
    """The stated allowance ``depth / min(width)`` for uniform weights and finite width
    (module docstring: an allowance, checked, not proven)."""
    _check_no_cn_no_bias(config)
    return len(config.hidden_dims) / min(config.hidden_dims)


@torch.no_grad()
def measure_class_variance_share(
    config: EmbedderConfig,
    attributes: Tensor,
    *,
    num_inits: int = 100,
    chunk: int = 16,
    generator: torch.Generator | None = None,
) -> Estimate:
    """``mean(C) / mean(P)`` over ``num_inits`` inits of ``config`` with its delta-method
    standard error (module docstring), on the pre-activation prototypes.

    Raises:
        ValueError: ``attributes`` not [K, d_a] with K >= 2 and ``d_a = config.attribute_dim``,
            or ``num_inits < 2``.
    """
    _check_matrix(attributes)
    if attributes.shape[1] != config.attribute_dim:
        raise ValueError(f"attributes must be [K, {config.attribute_dim}], got {tuple(attributes.shape)}")
    if isinstance(num_inits, bool) or not isinstance(num_inits, int) or num_inits < 2:
        raise ValueError(f"num_inits must be an integer >= 2 (a standard error needs 2 inits), got {num_inits!r}")
    between, second = [], []
    for draw in iter_draws(config, num_inits, chunk=chunk, generator=generator):
        p = batched_embedder_forward(draw, attributes).prototypes.double()  # [S, K, d_z]
        between.append(p.var(dim=1, correction=0).mean(dim=1))  # C_s, [S]
        second.append(p.square().mean(dim=(1, 2)))  # P_s, [S]
    c, q = torch.cat(between), torch.cat(second)
    ratio = float(c.mean() / q.mean())
    stderr = float((c - ratio * q).std(correction=1)) / (math.sqrt(num_inits) * float(q.mean()))
    return Estimate(ratio, stderr, num_inits)


def iid_attributes(num_classes: int, attribute_dim: int, law: str, *, generator: torch.Generator) -> Tensor:
    """``[K, d_a]`` i.i.d. attributes of ``law`` (:data:`IID_ATTRIBUTE_LAWS`), float32, the
    same shape as a real matrix, to compare shares with (normalize them as the real ones).

    Raises:
        ValueError: an unknown ``law`` or non-positive sizes.
    """
    if law not in IID_ATTRIBUTE_LAWS:
        raise ValueError(f"unknown law {law!r}; choose one of {IID_ATTRIBUTE_LAWS}")
    if num_classes < 2 or attribute_dim < 1:
        raise ValueError(f"need num_classes >= 2 and attribute_dim >= 1, got {num_classes}, {attribute_dim}")
    a = torch.randn(num_classes, attribute_dim, generator=generator)
    return a.abs() if law == "abs-gaussian" else a


def check_v3_share(
    config: EmbedderConfig,
    attributes: Tensor,
    *,
    label: str = "given",
    predicted_from: Tensor | None = None,
    num_inits: int = 100,
    k: float = 4.0,
    generator: torch.Generator | None = None,
) -> Check:
    """V3 across classes: the measured share ``rho`` against the arc-cosine prediction,
    bias bound :func:`share_bias_bound`.

    Args:
        config: a bias-free deep embedder without CN.
        attributes: [K, d_a] as the model sees them; the share is measured on these.
        label: names the attributes in the row's setting.
        predicted_from: predict from *other* attributes (e.g. i.i.d. centred ones: the
            standardized batch that inits assume) to show that the prediction of the wrong
            attribute distribution fails; ``None``: from ``attributes``.
        num_inits, k, generator: Monte Carlo inits, standard errors allowed, source of draws.

    Raises:
        ValueError: as :func:`measure_class_variance_share` and :func:`share_bias_bound`.
    """
    bias = share_bias_bound(config)
    source = attributes if predicted_from is None else predicted_from
    predicted = predicted_class_variance_share(source, len(config.hidden_dims))
    measured = measure_class_variance_share(config, attributes, num_inits=num_inits, generator=generator)
    setting = (f"share of Var[p] across classes, depth {len(config.hidden_dims)}, no CN, {label} attributes"
               + ("" if predicted_from is None else ", predicted from i.i.d. centred ones"))
    return check("V3", setting, predicted, measured, k=k, bias_bound=bias)
