"""The CN-ZSL attribute-embedder model, its ablation presets, and the traditional classifier.

Both models follow one protocol, so training, metrics and probes treat them alike:

    model(features [B, d_z], attributes [K, d_a]) -> logits [B, K] = gamma^2 cos(z_b, p_c)

**Attribute embedder** (:class:`AttributeEmbedderModel`): prototypes ``p_c = P(a_c)`` from
an MLP over the class axis.  Each hidden layer ``i`` is ``Linear -> ReLU``; if ``i`` is
in ``cn_layers`` class standardization S (Eq. 9) wraps the ReLU as ``cn_placement`` says
(``"both"``: ``S -> ReLU -> S``, the paper's reference).  The last layer ``V`` maps to
``d_z`` with ``final_init`` (Eq. 10 in CN) and an optional output ReLU.  With
``hidden_dims=()`` the embedder is linear, ``p_c = V a_c``.  ``prototypes(a)`` returns
the prototypes after the output ReLU, ``pre_activation_prototypes(a)`` the output of ``V``
before it, the quantity the V2-V4 claims are about.

The reference "3-layer MLP + CN" (docs/science.md section 2.6) is preset ``"cn"``:

    Linear(d_a,1024) -> ReLU -> Linear(1024,1024) -> S -> ReLU -> S -> Linear(1024,2048)[Eq.10] -> ReLU

and the ablation rows differ only in ``cn_layers`` and ``final_init``:

    preset       cn_layers   final_init
    "mlp"        ()          "pytorch"
    "mlp+eq9"    (-1,)       "pytorch"
    "mlp+eq10"   ()          "eq10"
    "cn"         (-1,)       "eq10"

**Normalization zoo.**  ``normalization`` names the layer that sits where CN sits (the
hidden layers in ``cn_layers``, placed as ``cn_placement`` says): ``"cn"`` (class
standardization, no affine parameters), ``"bn"`` (``nn.BatchNorm1d`` over the class axis,
affine, running statistics as BatchNorm keeps them), ``"ln"`` (``nn.LayerNorm`` over the
hidden coordinates of each class, affine), ``"rmsnorm"`` (``nn.RMSNorm``, per class,
scale only).  The zoo presets differ from ``"cn"`` in that field alone, so they keep
Eq. (10) for ``V``: every one of them hands ``V`` inputs of unit second moment at init
(per coordinate over the classes for CN and BatchNorm, per class over the coordinates
for LayerNorm and RMSNorm), the assumption Eq. (10) is derived under.  At init
BatchNorm in training mode *is* class standardization (biased variance, same eps, weight
1, bias 0); they part when the affine parameters train and in the running variance
(BatchNorm stores the unbiased one).

    preset       cn_layers   final_init   normalization
    "bn"         (-1,)       "eq10"       "bn"
    "ln"         (-1,)       "eq10"       "ln"
    "rmsnorm"    (-1,)       "eq10"       "rmsnorm"

**Traditional classifier** (:class:`LinearClassifier`): one learned weight row ``w_c`` per
seen class on the image features, the same NS head; it ignores attribute values (the
attribute matrix only fixes which classes, and how many, are scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from analysis.class_standardization import STANDARDIZATION_MODES, ClassStandardization
from analysis.init import INIT_SCHEMES, init_linear_
from analysis.normalization import NormalizeScale

__all__ = [
    "CN_PLACEMENTS",
    "NORMALIZATIONS",
    "PRESETS",
    "AttributeEmbedderModel",
    "ClassifierConfig",
    "EmbedderConfig",
    "LinearClassifier",
    "preset_config",
]

CN_PLACEMENTS = ("both", "pre", "post")
NORMALIZATIONS = ("cn", "bn", "ln", "rmsnorm")


@dataclass(frozen=True)
class EmbedderConfig:
    """Architecture of the attribute embedder and its NS head (see module docstring)."""

    attribute_dim: int  # d_a: AwA 85, CUB 312, SUN 102, aPY 64
    feature_dim: int = 2048  # d_z: ResNet-101 features
    hidden_dims: tuple[int, ...] = (1024, 1024)  # () gives a linear embedder
    cn_layers: tuple[int, ...] = (-1,)  # hidden layers wrapped by the normalization; negative counts from the end
    cn_placement: str = "both"  # "both": S->ReLU->S, "pre": S->ReLU, "post": ReLU->S
    hidden_init: str = "pytorch"  # init of every hidden Linear (analysis.init)
    final_init: str = "eq10"  # init of the last Linear V
    output_relu: bool = True  # ReLU after V (prototypes >= 0, like ResNet features)
    gamma: float = 5.0  # NS scale: logits = gamma^2 cos
    bias: bool = True  # biases in every Linear
    standardization_mode: str = "correct"  # or "notebook": the authors' var + eps quirk
    normalization: str = "cn"  # the layer at the cn_layers: "cn", "bn", "ln" or "rmsnorm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
        object.__setattr__(self, "cn_layers", tuple(int(i) for i in self.cn_layers))
        for name in ("attribute_dim", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be positive widths, got {self.hidden_dims}")
        depth = len(self.hidden_dims)
        for i in self.cn_layers:
            if not -depth <= i < depth:
                raise ValueError(
                    f"cn_layers entry {i} is out of range for {depth} hidden layers "
                    f"(valid: {-depth}..{depth - 1}); use cn_layers=() for no CN"
                )
        if len({i % depth for i in self.cn_layers}) != len(self.cn_layers):
            raise ValueError(f"cn_layers {self.cn_layers} names a hidden layer twice")
        if self.cn_placement not in CN_PLACEMENTS:
            raise ValueError(f"cn_placement must be one of {CN_PLACEMENTS}, got {self.cn_placement!r}")
        for name in ("hidden_init", "final_init"):
            if getattr(self, name) not in INIT_SCHEMES:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {INIT_SCHEMES}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a positive finite number, got {self.gamma}")
        if self.standardization_mode not in STANDARDIZATION_MODES:
            raise ValueError(
                f"standardization_mode must be one of {STANDARDIZATION_MODES}, "
                f"got {self.standardization_mode!r}"
            )

        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {self.normalization!r}; choose one of {NORMALIZATIONS}"
            )

    @property
    def cn_layer_indices(self) -> frozenset[int]:
        """``cn_layers`` as non-negative hidden-layer indices."""
        return frozenset(i % len(self.hidden_dims) for i in self.cn_layers)


PRESETS: dict[str, dict[str, Any]] = {
    "mlp": {"cn_layers": (), "final_init": "pytorch"},
    "mlp+eq9": {"cn_layers": (-1,), "final_init": "pytorch"},
    "mlp+eq10": {"cn_layers": (), "final_init": "eq10"},
    "cn": {"cn_layers": (-1,), "final_init": "eq10"},
    # the normalization zoo: "cn" with another layer where CN sits (module docstring)
    "bn": {"cn_layers": (-1,), "final_init": "eq10", "normalization": "bn"},
    "ln": {"cn_layers": (-1,), "final_init": "eq10", "normalization": "ln"},
    "rmsnorm": {"cn_layers": (-1,), "final_init": "eq10", "normalization": "rmsnorm"},
}


def preset_config(name: str, attribute_dim: int, feature_dim: int = 2048, **overrides: Any) -> EmbedderConfig:
    """The :class:`EmbedderConfig` of an ablation row (module docstring), with overrides.

    Raises:
        ValueError: ``name`` is not one of :data:`PRESETS`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(EmbedderConfig(attribute_dim, feature_dim), **{**PRESETS[name], **overrides})


def _linear(fan_in: int, fan_out: int, bias: bool) -> nn.Linear:
    """An uninitialized ``nn.Linear`` (``skip_init``): its default init would draw from the
    global RNG; every weight is drawn by :func:`init_linear_` from the caller's generator."""
    return torch.nn.utils.skip_init(nn.Linear, fan_in, fan_out, bias=bias)


def _normalization(config: EmbedderConfig, width: int) -> nn.Module:
    """The layer of ``config.normalization`` over ``width`` hidden coordinates (deterministic
    init: no random draw, so the generator's stream is the same for every normalization)."""
    if config.normalization == "bn":
        return nn.BatchNorm1d(width)  # over the class axis: the embedder's batch is the class set
    if config.normalization == "ln":
        return nn.LayerNorm(width)
    if config.normalization == "rmsnorm":
        return nn.RMSNorm(width)
    return ClassStandardization(width, mode=config.standardization_mode)


class AttributeEmbedderModel(nn.Module):
    """CN-ZSL model: attribute embedder ``P`` plus NS head (module docstring).

    Args:
        config: the architecture.
        generator: source of every initial weight (``None``: torch's global generator).
    """

    def __init__(self, config: EmbedderConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.attribute_dim
        for i, hidden in enumerate(config.hidden_dims):
            layers.append(init_linear_(_linear(width, hidden, config.bias), config.hidden_init,
                                       generator=generator))
            cn = i in config.cn_layer_indices
            standardize = lambda: _normalization(config, hidden)  # noqa: E731
            if cn and config.cn_placement in ("both", "pre"):
                layers.append(standardize())
            layers.append(nn.ReLU())
            if cn and config.cn_placement in ("both", "post"):
                layers.append(standardize())
            width = hidden
        layers.append(init_linear_(_linear(width, config.feature_dim, config.bias), config.final_init,
                                   generator=generator))
        if config.output_relu:
            layers.append(nn.ReLU())
        self.embedder = nn.Sequential(*layers)
        self.head = NormalizeScale(config.gamma)

    def prototypes(self, attributes: Tensor) -> Tensor:
        """Class prototypes ``P(a)``: attributes [K, d_a] -> [K, d_z] (after the output ReLU if any)."""
        self._check_attributes(attributes)
        return self.embedder(attributes)

    def pre_activation_prototypes(self, attributes: Tensor) -> Tensor:
        """The output of the last layer ``V`` before the output ReLU: ``V h_c + b_V``, [K, d_a] -> [K, d_z].

        The V2-V4 claims (docs/science.md section 4) are about this quantity: with Eq. (10) and
        CN right before ``V`` its second moment is ``1/d_z`` plus the bias's share.  After the
        output ReLU (:meth:`prototypes`) it is about half of that, so comparing the claims
        with :meth:`prototypes` fails.  Without ``output_relu`` both methods return the same.
        The variance profiler records it as the entry ``"prototypes_pre_activation"``.
        """
        self._check_attributes(attributes)
        h = attributes
        for layer in self.embedder[:-1] if self.config.output_relu else self.embedder:
            h = layer(h)
        return h

    def _check_attributes(self, attributes: Tensor) -> None:
        if attributes.ndim != 2 or attributes.shape[1] != self.config.attribute_dim:
            raise ValueError(
                f"expected attributes of shape [K, {self.config.attribute_dim}], got "
                f"{tuple(attributes.shape)}"
            )

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        """Logits [B, K] = gamma^2 cos(features_b, P(attributes_c))."""
        return self.head(features, self.prototypes(attributes))


@dataclass(frozen=True)
class ClassifierConfig:
    """Traditional classifier: one weight row per seen class, same NS head."""

    num_classes: int  # K_s, the seen classes it is trained on
    feature_dim: int = 2048  # d_z
    gamma: float = 5.0  # NS scale
    init: str = "pytorch"  # scheme of the [K, d_z] weight (analysis.init)

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.feature_dim < 1:
            raise ValueError(
                f"num_classes and feature_dim must be positive, got {self.num_classes} and "
                f"{self.feature_dim}"
            )
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown init {self.init!r}; choose one of {INIT_SCHEMES}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"gamma must be a positive finite number, got {self.gamma}")


class LinearClassifier(nn.Module):
    """Traditional classifier with the NS head: logits_bc = gamma^2 cos(z_b, w_c).

    Follows the same call protocol as :class:`AttributeEmbedderModel`; ``attributes`` only
    has to have ``num_classes`` rows (their values are ignored).
    """

    def __init__(self, config: ClassifierConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        linear = init_linear_(_linear(config.feature_dim, config.num_classes, False), config.init,
                              generator=generator)
        self.weight = linear.weight  # [K, d_z]
        self.head = NormalizeScale(config.gamma)

    def prototypes(self, attributes: Tensor | None = None) -> Tensor:
        """The class weight rows [K, d_z]."""
        if attributes is not None and attributes.shape[0] != self.config.num_classes:
            raise ValueError(
                f"this classifier scores {self.config.num_classes} classes, got attributes for "
                f"{attributes.shape[0]}; a traditional classifier cannot score unseen classes"
            )
        return self.weight

    def forward(self, features: Tensor, attributes: Tensor | None = None) -> Tensor:
        return self.head(features, self.prototypes(attributes))
