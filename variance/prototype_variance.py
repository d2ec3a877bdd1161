"""Claims V2, V3, V4: the variance of prototypes and logits at initialization.

All three rest on one exact identity.  Let ``V`` [d_z, d_L] (the last linear layer) have
i.i.d. zero-mean entries of variance ``s_V^2`` and biases ``b_i`` of variance ``s_b^2``,
independent of its input ``h_c`` [d_L] and of the image features ``z``.  Then, for every
class ``c`` and output coordinate ``i``,

    Var[p_ci | h_c] = s_V^2 ||h_c||^2 + s_b^2                         (p_c = V h_c + b)
    Var[<z, p_c> | h_c, z] = ||z||^2 (s_V^2 ||h_c||^2 + s_b^2)       (= d_z E[z_i^2] (...))

(``E[p_ci] = 0`` by symmetry, so variances are second moments).  Averaging over classes
and features gives what the Monte Carlo estimator measures over random inits:

    P = E[(1/(K d_z)) sum_{c,i} p_ci^2]            = s_V^2 n_h + s_b^2
    L = E[(1/(B K)) sum_{b,c} <z_b, p_c>^2]        = m_z (s_V^2 n_h + s_b^2)

with ``n_h = E[(1/K) sum_c ||h_c||^2]`` and ``m_z = (1/B) sum_b ||z_b||^2``.

- **V2** (attributes normalization, linear embedder ``p_c = V a_c``): ``h_c = a_c``, so
  ``n_h = (1/K) sum_c ||a_c||^2`` is known exactly: 1 after L2 normalization (d_a after
  ``l2_sqrt``, about d_a for standardized attributes); with ``s_V^2 = 1/d_z`` and no bias
  the logit variance equals ``m_z / d_z = E[z_i^2]``, as in a traditional classifier.
- **V3** (the tricks fail for deep embedders): with hidden layers, ``n_h`` depends on depth,
  init and the distribution of attributes across classes.  The row reports as its
  "prediction" the value the tricks guarantee for the linear embedder (same last-layer
  init scheme, fed the attributes: ``1/d_z`` with AN and Eq. (10)); its failure is the claim.
  For bias-free ReLU layers the drift itself is exact (:func:`predicted_hidden_norm_sq`):
  each layer multiplies ``n_h`` by ``d_l s_l^2 / 2``, i.e. by ``1/6`` with PyTorch's
  default init between equal widths, so ``P = 6^{-L} / d_z`` after ``L`` layers.
- **V4** (CN preserves variance): when class standardization directly precedes ``V``,
  every input coordinate has zero mean and unit second moment over classes, so
  ``n_h = d_L`` exactly for ``eps = 0`` (with ``eps > 0``: ``n_h = sum_j v_j/(v_j + eps)``,
  ``v_j`` the class variances of the standardization's input; the check states the bound
  ``s_V^2 sum_j eps/(v_j + eps)`` as its bias).  With Eq. (10), ``s_V^2 = 1/(d_L d_z)``, so
  ``P = 1/d_z + s_b^2`` and ``L = m_z (1/d_z + s_b^2)`` whatever the depth or attributes.

Biases: the authors' layers keep ``nn.Linear``'s default bias, ``s_b^2 = 1/(3 d_L)``,
which the paper's formulas leave out; every prediction here includes it
(``EmbedderConfig(bias=False)`` removes it).  The output ReLU is not part of the claims:
everything is measured on the pre-activation prototypes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from analysis.init import weight_variance
from analysis.model import EmbedderConfig
from variance.batched_embedder import batched_embedder_forward, iter_draws
from analysis.estimate import Estimate, mean_estimate
from variance.estimate import Check, check

__all__ = [
    "PrototypeMoments",
    "check_v2",
    "check_v3",
    "check_v4",
    "final_layer_variances",
    "measure_prototype_moments",
    "predicted_hidden_norm_sq",
    "predicted_raw_logit_variance",
    "predicted_prototype_variance",
]


def final_layer_variances(config: EmbedderConfig) -> tuple[float, float]:
    """``(s_V^2, s_b^2)`` of the last linear layer of ``config`` (``s_b^2 = 0`` without bias)."""
    fan_in = config.hidden_dims[-1] if config.hidden_dims else config.attribute_dim
    s_v2 = weight_variance(config.final_init, fan_in, config.feature_dim)
    return s_v2, (1.0 / (3.0 * fan_in) if config.bias else 0.0)


def predicted_hidden_norm_sq(config: EmbedderConfig, attribute_norm_sq: float) -> float:
    """``n_h = E[(1/K) sum_c ||h_c||^2]`` at the input of V for a bias-free embedder without CN.

    Each hidden layer is ``h_l = relu(W_l h_{l-1})`` with ``W_l`` [d_l, d_{l-1}] i.i.d.
    symmetric of variance ``s_l^2`` (``weight_variance(config.hidden_init, d_{l-1}, d_l)``),
    independent of ``h_{l-1}``.  Given ``h_{l-1}``, the pre-activation ``x = W_l h_{l-1}`` is
    symmetric (``W_l -> -W_l``), so ``E[relu(x_j)^2 | h] = E[x_j^2 | h] / 2 = s_l^2 ||h||^2 / 2``
    and, summing the ``d_l`` coordinates and taking expectations,

        n_l = d_l s_l^2 n_{l-1} / 2,     n_0 = attribute_norm_sq = (1/K) sum_c ||a_c||^2,

    exactly, whatever the attributes (V3: the scale drifts geometrically with depth).
    With PyTorch's default ``s_l^2 = 1/(3 d_{l-1})`` each layer multiplies ``n_h / d_l``
    by ``1/6``.

    Args:
        config: a bias-free embedder without class standardization.
        attribute_norm_sq: ``(1/K) sum_c ||a_c||^2`` of the (normalized) attributes fed in.

    Raises:
        ValueError: ``config`` has biases or CN layers (the recursion needs symmetric,
            un-standardized pre-activations), or ``attribute_norm_sq`` is negative.

    Example: with ``l2_sqrt`` attributes (``n_0 = d_a``), ``hidden_init="pytorch"`` and
    Eq. (10), ``predicted_prototype_variance(s_V^2, predicted_hidden_norm_sq(config, d_a))``
    is ``6^{-L} / d_z`` for ``L`` hidden layers.
    """
    if config.bias or (config.hidden_dims and config.cn_layers):
        raise ValueError(
            f"predicted_hidden_norm_sq needs a bias-free embedder without CN (bias=False, cn_layers=()), "
            f"got bias={config.bias}, cn_layers={config.cn_layers}"
        )
    if not attribute_norm_sq >= 0:
        raise ValueError(f"attribute_norm_sq must be >= 0 (a mean squared norm), got {attribute_norm_sq!r}")
    n_h = float(attribute_norm_sq)
    widths = (config.attribute_dim, *config.hidden_dims)
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        n_h *= fan_out * weight_variance(config.hidden_init, fan_in, fan_out) / 2.0  # ReLU keeps half
    return n_h


def predicted_prototype_variance(s_v2: float, input_norm_sq: float, s_b2: float = 0.0) -> float:
    """``P = s_V^2 n_h + s_b^2``: prototype variance averaged over classes and coordinates."""
    return s_v2 * input_norm_sq + s_b2


def predicted_raw_logit_variance(s_v2: float, input_norm_sq: float, feature_norm_sq: float, s_b2: float = 0.0) -> float:
    """``L = m_z (s_V^2 n_h + s_b^2)``: raw logit ``<z, p_c>`` variance (``m_z = mean ||z||^2``)."""
    return feature_norm_sq * predicted_prototype_variance(s_v2, input_norm_sq, s_b2)


@dataclass(frozen=True)
class PrototypeMoments:
    """Monte Carlo moments over ``num_inits`` random initializations (module docstring)."""

    prototype: Estimate  # P: mean of p_ci^2 over classes and coordinates
    logit: Estimate | None  # L: mean of <z_b, p_c>^2 over features and classes
    input_norm_sq: Estimate  # n_h: mean over classes of ||h_c||^2, the input of V
    feature_norm_sq: float | None  # m_z, exact for the features used
    standardization_gap: float | None  # max over inits of sum_j eps/(v_j + eps), if V's input is standardized
    num_inits: int


@torch.no_grad()
def measure_prototype_moments(
    config: EmbedderConfig,
    attributes: Tensor,
    features: Tensor | None = None,
    *,
    num_inits: int = 1000,
    chunk: int = 32,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> PrototypeMoments:
    """Estimate ``P``, ``L`` and ``n_h`` over ``num_inits`` inits of ``config`` (vectorized).

    Args:
        config: the embedder; the output ReLU is ignored (pre-activation prototypes).
        attributes: ``[K, d_a]`` class attributes, already normalized as the model sees them.
        features: optional ``[B, d_z]`` image features for the logit moment.
        num_inits: number of independent initializations (the Monte Carlo sample size).
        chunk: initializations drawn and run together (memory ~ chunk x parameters).
        eps: the standardization's eps (for the V4 bias bound).
        generator: source of every parameter draw.
    """
    if features is not None and (features.ndim != 2 or features.shape[1] != config.feature_dim):
        raise ValueError(f"features must be [B, {config.feature_dim}], got {tuple(features.shape)}")
    per_init: dict[str, list[Tensor]] = {"p": [], "logit": [], "h": []}
    gap = None
    for draw in iter_draws(config, num_inits, chunk=chunk, generator=generator):
        out = batched_embedder_forward(draw, attributes)
        p = out.prototypes  # [S, K, d_z]
        # float32 sums (cascade summation: ~1e-7 relative) cast to float64 per init
        per_init["p"].append(p.square().mean(dim=(1, 2)).double())
        per_init["h"].append(out.h_last.square().sum(dim=2).mean(dim=1).double())
        if features is not None:
            logits = torch.matmul(features.to(p.dtype), p.transpose(1, 2))  # [S, B, K]
            per_init["logit"].append(logits.square().mean(dim=(1, 2)).double())
        if out.final_standardization_input_var is not None:
            v = out.final_standardization_input_var.double()
            chunk_gap = float((eps / (v + eps)).sum(dim=(1, 2)).max())
            gap = chunk_gap if gap is None else max(gap, chunk_gap)
    return PrototypeMoments(
        prototype=mean_estimate(torch.cat(per_init["p"])),
        logit=mean_estimate(torch.cat(per_init["logit"])) if features is not None else None,
        input_norm_sq=mean_estimate(torch.cat(per_init["h"])),
        feature_norm_sq=float(features.double().pow(2).sum(dim=1).mean()) if features is not None else None,
        standardization_gap=gap,
        num_inits=num_inits,
    )


def _rows(claim: str, setting: str, moments: PrototypeMoments, s_v2: float, s_b2: float,
          n_h: float, bias_in_n_h: float, k: float) -> list[Check]:
    rows = [check(claim, f"Var[p] {setting}", predicted_prototype_variance(s_v2, n_h, s_b2),
                  moments.prototype, k=k, bias_bound=s_v2 * bias_in_n_h)]
    if moments.logit is not None:
        m_z = moments.feature_norm_sq
        rows.append(check(claim, f"Var[<z,p>] {setting}", predicted_raw_logit_variance(s_v2, n_h, m_z, s_b2),
                          moments.logit, k=k, bias_bound=m_z * s_v2 * bias_in_n_h))
    return rows


def check_v2(
    config: EmbedderConfig, attributes: Tensor, features: Tensor | None = None, *, setting: str = "",
    num_inits: int = 1000, k: float = 4.0, generator: torch.Generator | None = None,
) -> list[Check]:
    """V2 for a linear embedder (``config.hidden_dims == ()``): exact prediction from ``||a_c||``."""
    if config.hidden_dims:
        raise ValueError(f"V2 is about linear embedders (hidden_dims=()), got hidden_dims={config.hidden_dims}")
    moments = measure_prototype_moments(config, attributes, features, num_inits=num_inits, generator=generator)
    n_h = float(attributes.double().pow(2).sum(dim=1).mean())
    s_v2, s_b2 = final_layer_variances(config)
    return _rows("V2", setting or "linear", moments, s_v2, s_b2, n_h, 0.0, k)


def check_v3(
    config: EmbedderConfig, attributes: Tensor, features: Tensor | None = None, *, setting: str = "",
    num_inits: int = 1000, k: float = 4.0, generator: torch.Generator | None = None,
) -> list[Check]:
    """V3 for a deep embedder: the value the tricks promise against the measurement.

    The prediction is what the *linear* embedder with the same last-layer init scheme
    gives on these attributes (``s_V^2(d_a, d_z) mean_c ||a_c||^2 + s_b^2``: with AN and
    Eq. (10), ``1/d_z``).  A ``"fail"`` verdict confirms the claim.
    """
    moments = measure_prototype_moments(config, attributes, features, num_inits=num_inits, generator=generator)
    s_v2, s_b2 = final_layer_variances(replace(config, hidden_dims=(), cn_layers=()))
    n_a = float(attributes.double().pow(2).sum(dim=1).mean())
    return _rows("V3", setting or f"depth {len(config.hidden_dims)}, no CN", moments, s_v2, s_b2, n_a, 0.0, k)


def check_v4(
    config: EmbedderConfig, attributes: Tensor, features: Tensor | None = None, *, setting: str = "",
    num_inits: int = 1000, k: float = 4.0, eps: float = 1e-5, generator: torch.Generator | None = None,
    assumed_final_init: str | None = None,
) -> list[Check]:
    """V4: with class standardization right before V, ``n_h = d_L`` whatever comes before.

    ``assumed_final_init`` predicts with another init's variance than the one drawn (to
    show that a wrong prediction fails the same check).

    Raises:
        ValueError: the input of V is not the output of a class standardization.
    """
    depth = len(config.hidden_dims)
    last = depth - 1
    if depth == 0 or last not in config.cn_layer_indices or config.cn_placement == "pre":
        raise ValueError(
            "V4 needs class standardization directly before the last layer: put the last hidden "
            f"layer in cn_layers with cn_placement 'both' or 'post' (got cn_layers={config.cn_layers}, "
            f"cn_placement={config.cn_placement!r})"
        )
    moments = measure_prototype_moments(config, attributes, features, num_inits=num_inits, eps=eps,
                                        generator=generator)
    assumed = config if assumed_final_init is None else replace(config, final_init=assumed_final_init)
    s_v2, s_b2 = final_layer_variances(assumed)
    gap = moments.standardization_gap or 0.0
    return _rows("V4", setting or f"depth {depth}, CN", moments, s_v2, s_b2, float(config.hidden_dims[-1]), gap, k)
