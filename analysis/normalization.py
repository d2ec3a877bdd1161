"""The two popular tricks the CN paper analyses: normalize+scale (NS) and attributes
normalization (AN), docs/science.md sections 2.2 and 2.3.

NS logits, for features ``z`` [B, d_z] and prototypes ``p`` [K, d_z]:

    logits_bc = <gamma z_b / ||z_b||, gamma p_c / ||p_c||> = gamma^2 cos(z_b, p_c)

AN rescales each class attribute vector (rows of ``a`` [C, d_a]):

    "l2":        a_c / ||a_c||
    "l2_sqrt":   sqrt(d_a) a_c / ||a_c||      (the reference recipe)
    "standardize": per-attribute (a_:j - mean_j) / std_j across classes (ablation)
    "none":      a_c unchanged
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["ATTRIBUTE_NORMS", "NormalizeScale", "normalize_attributes", "normalize_scale_logits"]

ATTRIBUTE_NORMS = ("l2_sqrt", "l2", "standardize", "none")


def normalize_scale_logits(
    features: Tensor, prototypes: Tensor, gamma: float, eps: float = 1e-12
) -> Tensor:
    """NS logits ``gamma^2 cos(z_b, p_c)``: features [B, d] x prototypes [K, d] -> [B, K].

    ``eps`` floors each norm (as :func:`torch.nn.functional.normalize`), so an all-zero
    prototype (possible after a ReLU) gives zero logits instead of NaN.
    """
    if features.ndim != 2 or prototypes.ndim != 2 or features.shape[1] != prototypes.shape[1]:
        raise ValueError(
            f"expected features [B, d] and prototypes [K, d] with the same d, got shapes "
            f"{tuple(features.shape)} and {tuple(prototypes.shape)}"
        )
    z = gamma * nn.functional.normalize(features, dim=1, eps=eps)
    p = gamma * nn.functional.normalize(prototypes, dim=1, eps=eps)
    return z @ p.T  # [B, K]


class NormalizeScale(nn.Module):
    """Module form of :func:`normalize_scale_logits` with a fixed scale ``gamma``."""

    def __init__(self, gamma: float = 5.0) -> None:
        super().__init__()
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a positive finite number, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, features: Tensor, prototypes: Tensor) -> Tensor:
        return normalize_scale_logits(features, prototypes, self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"


def normalize_attributes(attributes: Tensor, method: str = "l2_sqrt", eps: float = 1e-12) -> Tensor:
    """Attributes normalization of a class-attribute matrix ``[C, d_a]`` (module docstring).

    Args:
        attributes: one row per class.
        method: one of :data:`ATTRIBUTE_NORMS`.
        eps: floor for norms and standard deviations (an all-zero row or constant
            attribute stays zero instead of becoming NaN).

    Returns:
        A new ``[C, d_a]`` tensor; the input is not modified.
    """
    if method not in ATTRIBUTE_NORMS:
        raise ValueError(f"unknown attribute normalization {method!r}; choose one of {ATTRIBUTE_NORMS}")
    if attributes.ndim != 2:
        raise ValueError(f"attributes must be a [C, d_a] matrix, got shape {tuple(attributes.shape)}")
    if method == "none":
        return attributes.clone()
    if method == "standardize":
        std = attributes.std(dim=0, correction=0).clamp_min(eps)
        return (attributes - attributes.mean(dim=0)) / std
    unit = nn.functional.normalize(attributes, dim=1, eps=eps)
    return unit * math.sqrt(attributes.shape[1]) if method == "l2_sqrt" else unit
