"""A registry of tiny attribute embedders with every common layer type, under the model
contract ``NAME(attribute_dim, feature_dim, generator=None)`` (README, probing section).

Used by the purity tests of every probe: BatchNorm1d/2d, LayerNorm, GroupNorm, RMSNorm,
dropout, residual connections, a learned temperature, a weight-tied layer, a
parameter-free layer and CN, plus the two shipped examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from analysis import AttributeEmbedderModel, NormalizeScale, preset_config
from tests.conftest import REPO
from analysis.user_model import resolve_model

WIDTH = 6  # hidden width of every tiny model


def _uniform_(module: nn.Module, generator: torch.Generator | None) -> nn.Module:
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = layer.in_features ** -0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)
    return module


class _Embedder(nn.Module):
    """``prototypes = body(a)``, logits ``exp(log_t) cos`` or the NS head."""

    def __init__(self, body: nn.Module, temperature: bool = False) -> None:
        super().__init__()
        self.body = body
        self.head = NormalizeScale(5.0)
        if temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(20.0)))  # 0-dim, learned

    def prototypes(self, attributes: Tensor) -> Tensor:
        return self.body(attributes)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        p = self.prototypes(attributes)
        if hasattr(self, "log_temperature"):
            cos = nn.functional.normalize(features, dim=1) @ nn.functional.normalize(p, dim=1).T
            return self.log_temperature.exp() * cos
        return self.head(features, p)


class _To4d(nn.Module):
    """[K, 8] <-> [K, 2, 2, 2], so that BatchNorm2d normalizes 2 channels over classes and space."""

    def forward(self, h: Tensor) -> Tensor:
        return h.reshape(h.shape[0], 2, 2, 2)


class _TiedResidual(nn.Module):
    """``h + W softplus(W h)``: one weight used twice (tied), a parameter-free layer, a residual."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.shared = nn.Linear(width, width)
        self.act = nn.Softplus()

    def forward(self, h: Tensor) -> Tensor:
        return h + self.shared(self.act(self.shared(h)))


def batchnorm1d(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
    return _uniform_(_Embedder(nn.Sequential(nn.Linear(d_a, WIDTH), nn.BatchNorm1d(WIDTH), nn.ReLU(),
                                             nn.Linear(WIDTH, d_z))), generator)


def batchnorm2d(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
    return _uniform_(_Embedder(nn.Sequential(nn.Linear(d_a, 8), _To4d(), nn.BatchNorm2d(2), nn.Flatten(),
                                             nn.Tanh(), nn.Linear(8, d_z))), generator)


def groupnorm(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
    return _uniform_(_Embedder(nn.Sequential(nn.Linear(d_a, WIDTH), nn.GroupNorm(2, WIDTH), nn.ReLU(),
                                             nn.Linear(WIDTH, d_z))), generator)


def dropout(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
    return _uniform_(_Embedder(nn.Sequential(nn.Linear(d_a, WIDTH), nn.Dropout(0.5), nn.Tanh(),
                                             nn.Linear(WIDTH, d_z))), generator)


def tied_residual_temperature(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
    return _uniform_(_Embedder(nn.Sequential(nn.Linear(d_a, WIDTH), _TiedResidual(WIDTH), nn.Linear(WIDTH, d_z)),
                               temperature=True), generator)


def _preset(name: str) -> Callable[..., nn.Module]:
    def build(d_a: int, d_z: int, generator: torch.Generator | None = None) -> nn.Module:
        config = preset_config(name, d_a, d_z, hidden_dims=(WIDTH, 5), output_relu=False)
        return AttributeEmbedderModel(config, generator=generator)

    return build


def _example(text: str, **kwargs) -> Callable[..., nn.Module]:
    path, _, name = text.partition(":")
    spec = resolve_model(f"{REPO / path}:{name}", kwargs)
    return lambda d_a, d_z, generator=None: spec.build(d_a, d_z, generator)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "batchnorm1d": batchnorm1d,
    "batchnorm2d": batchnorm2d,
    "layernorm_residual": _example("examples/residual_layernorm.py:ResidualLayerNormEmbedder", width=WIDTH),
    "groupnorm": groupnorm,
    "rmsnorm": _preset("rmsnorm"),
    "dropout": dropout,
    "tied_residual_temperature": tied_residual_temperature,
    "cn": _preset("cn"),
    "batchnorm_dropout_example": _example("examples/batchnorm_dropout.py:batchnorm_dropout_embedder",
                                          width=WIDTH, dropout=0.3),
}


def build(name: str, d_a: int = 4, d_z: int = 5, seed: int = 0, *, warm: bool = True) -> nn.Module:
    """Architecture ``name`` in float64; ``warm``: running statistics moved off (0, 1) by two
    training-mode passes, so that ``statistics="running"`` differs from ``"batch"``."""
    model = ARCHITECTURES[name](d_a, d_z, generator=torch.Generator().manual_seed(seed)).double()
    if warm:
        g = torch.Generator().manual_seed(seed + 100)
        model.train()
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)  # dropout draws of the warm-up passes
            for _ in range(2):
                model(torch.rand(3, d_z, generator=g, dtype=torch.float64),
                      torch.rand(7, d_a, generator=g, dtype=torch.float64) * 3 + 1)
    return model
