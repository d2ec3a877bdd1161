"""Weight initializations of a linear layer ``W`` [fan_out, fan_in], each a named scheme.

Every scheme draws ``W_ij ~ U(-b, b)`` i.i.d. with ``b = sqrt(3 Var)``, so the schemes
differ only in the variance (the quantity the variance claims are about):

    "pytorch"          Var = 1 / (3 fan_in)       nn.Linear's default, kaiming_uniform(a=sqrt 5)
    "kaiming_fan_in"   Var = 2 / fan_in           He et al. 2015, ReLU gain, forward pass
    "kaiming_fan_out"  Var = 2 / fan_out          He et al. 2015, ReLU gain, backward pass
    "xavier"           Var = 2 / (fan_in + fan_out)   Glorot & Bengio 2010
    "eq10"             Var = 1 / (fan_in fan_out) CN paper Eq. (10): d_h = fan_in, d_z = fan_out
    "eq10_relu"        Var = 2 / (fan_in fan_out (1 - 1/pi))  Eq. (10) when a ReLU follows

Biases, where a layer has them, always follow nn.Linear's default ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``: this is what the authors' code does when it re-initializes only the
weight of the last layer with Eq. (10).  Every draw uses the ``generator`` given.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "init_linear_", "linear_init_bounds", "weight_variance"]

INIT_SCHEMES = ("pytorch", "kaiming_fan_in", "kaiming_fan_out", "xavier", "eq10", "eq10_relu")


def weight_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The variance ``Var[W_ij]`` of ``scheme`` for a ``[fan_out, fan_in]`` weight."""
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be positive, got {fan_in} and {fan_out}")
    variances = {
        "pytorch": 1.0 / (3.0 * fan_in),
        "kaiming_fan_in": 2.0 / fan_in,
        "kaiming_fan_out": 2.0 / fan_out,
        "xavier": 2.0 / (fan_in + fan_out),
        "eq10": 1.0 / (fan_in * fan_out),
        "eq10_relu": 2.0 / (fan_in * fan_out * (1.0 - 1.0 / math.pi)),
    }
    if scheme not in variances:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {INIT_SCHEMES}")
    return variances[scheme]


def linear_init_bounds(scheme: str, fan_in: int, fan_out: int) -> tuple[float, float]:
    """Half-widths ``(b_weight, b_bias)`` of the uniform laws of ``scheme``'s weight and bias.

    ``b_weight = sqrt(3 Var)`` with ``Var = weight_variance(scheme, ...)``; ``b_bias =
    1/sqrt(fan_in)`` (nn.Linear's default, variance ``1/(3 fan_in)``).  Every draw of a
    linear layer's parameters in the toolkit, batched or not, goes through these bounds.
    """
    return math.sqrt(3.0 * weight_variance(scheme, fan_in, fan_out)), 1.0 / math.sqrt(fan_in)


@torch.no_grad()
def init_linear_(
    layer: nn.Linear, scheme: str = "pytorch", *, generator: torch.Generator | None = None
) -> nn.Linear:
    """Initialize ``layer`` in place with ``scheme`` (module docstring) and return it."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"init_linear_ expects an nn.Linear, got {type(layer).__name__}")
    fan_out, fan_in = layer.weight.shape
    bound, bias_bound = linear_init_bounds(scheme, fan_in, fan_out)
    layer.weight.uniform_(-bound, bound, generator=generator)
    if layer.bias is not None:
        layer.bias.uniform_(-bias_bound, bias_bound, generator=generator)
    return layer
