"""A residual MLP attribute embedder with pre-LayerNorm blocks, under the toolkit's model contract.

    a [K, d_a] -> Linear -> depth x [h + Linear(ReLU(LayerNorm(h)))] -> Linear -> p [K, d_z]
    logits [B, K] = gamma^2 cos(z_b, p_c)

LayerNorm normalizes each class's hidden vector over its coordinates, so unlike class
normalization it never mixes classes and has no running statistics.

    cnzsl probe --model examples/residual_layernorm.py:ResidualLayerNormEmbedder \
        --model-kwargs '{"width": 512}' --dataset CUB --fast --out runs/probe-resln
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from analysis import NormalizeScale


def _init_uniform_(layer: nn.Linear, generator: torch.Generator | None) -> nn.Linear:
    """PyTorch's default law, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    bound = layer.in_features ** -0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class ResidualLayerNormEmbedder(nn.Module):
    """The contract: ``ResidualLayerNormEmbedder(attribute_dim, feature_dim, generator=None)``."""

    def __init__(self, attribute_dim: int, feature_dim: int, generator: torch.Generator | None = None,
                 *, width: int = 1024, depth: int = 2, gamma: float = 5.0) -> None:
        super().__init__()
        self.inp = _init_uniform_(nn.Linear(attribute_dim, width), generator)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.ReLU(), _init_uniform_(nn.Linear(width, width), generator))
            for _ in range(depth)
        )
        self.out = _init_uniform_(nn.Linear(width, feature_dim), generator)
        self.head = NormalizeScale(gamma)  # the profiler reads the NS scale from head.gamma

    def prototypes(self, attributes: Tensor) -> Tensor:
        """[K, d_a] -> [K, d_z]."""
        h = self.inp(attributes)
        for block in self.blocks:
            h = h + block(h)  # residual: an addition, not a module
        return self.out(h)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        """Logits [B, K] = gamma^2 cos(features_b, prototypes_c)."""
        return self.head(features, self.prototypes(attributes))
