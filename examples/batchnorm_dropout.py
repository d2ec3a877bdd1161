"""A BatchNorm + dropout attribute embedder built by a factory, under the toolkit's model contract.

    a [K, d_a] -> Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear -> ReLU -> p [K, d_z]
    logits [B, K] = exp(log_temperature) * cos(z_b, p_c)      (a learned temperature)

BatchNorm here normalizes over the class axis (the embedder's batch is the set of classes),
like class standardization but with affine parameters and BatchNorm's running statistics.
The probes evaluate dropout as off (the expected network) and BatchNorm with the statistics
of the classes passed in (``statistics="batch"``) or its running ones (``"running"``).

    cnzsl probe --model examples/batchnorm_dropout.py:batchnorm_dropout_embedder \
        --model-kwargs '{"dropout": 0.2}' --dataset CUB --fast --out runs/probe-bn
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class _BatchNormDropoutEmbedder(nn.Module):
    def __init__(self, embedder: nn.Sequential, temperature: float) -> None:
        super().__init__()
        self.embedder = embedder
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))  # a learned scalar

    def prototypes(self, attributes: Tensor) -> Tensor:
        """[K, d_a] -> [K, d_z]."""
        return self.embedder(attributes)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        """Logits [B, K] = exp(log_temperature) cos(features_b, prototypes_c)."""
        z = nn.functional.normalize(features, dim=1)
        p = nn.functional.normalize(self.prototypes(attributes), dim=1)
        return self.log_temperature.exp() * (z @ p.T)


def batchnorm_dropout_embedder(attribute_dim: int, feature_dim: int, generator: torch.Generator | None = None,
                               *, width: int = 1024, dropout: float = 0.5, temperature: float = 25.0) -> nn.Module:
    """The contract: ``batchnorm_dropout_embedder(attribute_dim, feature_dim, generator=None)``."""
    first, last = nn.Linear(attribute_dim, width), nn.Linear(width, feature_dim)
    with torch.no_grad():  # every weight from `generator`: PyTorch's default law
        for layer in (first, last):
            bound = layer.in_features ** -0.5
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    embedder = nn.Sequential(first, nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout), last, nn.ReLU())
    return _BatchNormDropoutEmbedder(embedder, temperature)
