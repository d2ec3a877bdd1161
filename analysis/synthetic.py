"""Synthetic GBU-shaped data: the embedded default, and features for real attributes.

Real image features (``res101.mat``) are hundreds of MB and not shipped, so the toolkit
stands in for them with a generator whose features depend on the class attributes
through a fixed random nonlinear map, making zero-shot transfer learnable:

    attributes  a_c = relu(L u_c + b + 0.3 e_c) / ||.||    u_c ~ N(0, I_r), r = min(d_a, 16)
                (non-negative, correlated across attributes, unit L2 rows like GBU ``att``)
    image n     a~_n = a_{y_n} + tau xi_n / sqrt(d_a)      xi_n ~ N(0, I_{d_a})
    features    z_n = relu(s softplus(2 B tanh(A a~_n) / sqrt(H) + rho zeta_{y_n} - 1) + sigma eps_n)

with ``A`` [H, d_a] and ``B`` [d_z, H] Gaussian (H = 64) fixed for the data set,
``zeta_c ~ N(0, I_{d_z})`` a class-specific part the attributes cannot explain (it caps
zero-shot accuracy, as real data does), ``tau`` the per-image variation of the expressed
attributes (intra-class variation along the same directions as the class differences)
and ``eps_n ~ N(0, I_{d_z})`` i.i.d. noise.  Features are non-negative and
non-isotropic, like pooled ResNet activations.

The defaults (s = 1, rho = 1, tau = 1, sigma = 1.5) were tuned on the AWA1 and CUB presets
(10 epochs, seed 0) so that the reference CN model reaches unseen accuracies of the order
of the published ones (AWA1: ZSL 54, GZSL U/S/H 54/60/57; CUB: 52, 52/79/62) and the plain
MLP stays below it (AWA1 H 54, CUB H 48).  Known difference from real ResNet features: an
unseen sample is seldom taken for a seen class (GZSL-U stays close to ZSL-U and AUSUC
close to its bound), while seen samples are often taken for unseen classes.

Presets (:data:`SYNTHETIC_PRESETS`) copy the real sizes of the GBU proposed splits.
:func:`make_semi_synthetic` keeps a real ``att_splits.mat`` (attributes, split indices)
and synthesizes only features and labels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from analysis.data import DataError, ZSLData

__all__ = [
    "SYNTHETIC_PRESETS",
    "SyntheticSpec",
    "make_semi_synthetic",
    "make_synthetic",
    "synthesize_features",
    "synthetic_spec",
]


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of a synthetic data set (defaults of the generator's knobs included)."""

    name: str
    num_seen: int  # K_s
    num_unseen: int  # K_u
    attribute_dim: int  # d_a
    trainval: int  # samples of seen classes used for training
    test_seen: int  # held-out samples of seen classes
    test_unseen: int  # samples of unseen classes
    feature_dim: int = 2048  # d_z
    class_separation: float = 1.0  # s, scale of the class means relative to the noise
    unexplained: float = 1.0  # rho, class signal the attributes cannot predict
    instance_jitter: float = 1.0  # tau, per-image variation of the expressed attributes
    noise: float = 1.5  # sigma of the i.i.d. feature noise

    @property
    def num_classes(self) -> int:
        return self.num_seen + self.num_unseen

    @property
    def num_samples(self) -> int:
        return self.trainval + self.test_seen + self.test_unseen


# Real GBU sizes (Xian et al. 2018, proposed splits): N / d_a / seen + unseen.
SYNTHETIC_PRESETS: dict[str, SyntheticSpec] = {
    "AWA1": SyntheticSpec("AWA1", 40, 10, 85, 19832, 4958, 5685),
    "AWA2": SyntheticSpec("AWA2", 40, 10, 85, 23527, 5882, 7913),
    "CUB": SyntheticSpec("CUB", 150, 50, 312, 7057, 1764, 2967),
    "SUN": SyntheticSpec("SUN", 645, 72, 102, 10320, 2580, 1440),
    "APY": SyntheticSpec("APY", 20, 12, 64, 5932, 1483, 7924),
}


def synthetic_spec(name: str, **overrides: float | int) -> SyntheticSpec:
    """The preset for data set ``name`` (case-insensitive), with field overrides."""
    key = name.upper()
    if key not in SYNTHETIC_PRESETS:
        raise ValueError(f"unknown synthetic data set {name!r}; choose one of {', '.join(SYNTHETIC_PRESETS)}")
    return replace(SYNTHETIC_PRESETS[key], **overrides)


def _synthetic_attributes(num_classes: int, attribute_dim: int, generator: torch.Generator) -> Tensor:
    rank = min(attribute_dim, 16)
    loadings = torch.randn(attribute_dim, rank, generator=generator) / math.sqrt(rank)
    base = torch.randn(attribute_dim, generator=generator) * 0.5 - 0.25
    latent = torch.randn(num_classes, rank, generator=generator)
    raw = latent @ loadings.T + base + 0.3 * torch.randn(num_classes, attribute_dim, generator=generator)
    att = raw.relu()
    # a class with no active attribute would have an undefined direction: give it one
    empty = att.sum(dim=1) == 0
    att[empty, raw[empty].argmax(dim=1)] = 1.0
    return att / att.norm(dim=1, keepdim=True)  # [C, d_a], unit rows like GBU att


def synthesize_features(
    attributes: Tensor,
    labels: Tensor,
    *,
    feature_dim: int = 2048,
    class_separation: float = 1.0,
    unexplained: float = 1.0,
    instance_jitter: float = 1.0,
    noise: float = 1.5,
    generator: torch.Generator,
) -> Tensor:
    """Features ``[N, d_z]`` for ``labels`` [N] from class ``attributes`` [C, d_a] (module docstring).

    The random map (A, B) and the class-specific parts are drawn first from ``generator``,
    then the per-sample jitter and noise, so a seed fixes the whole data set.
    """
    if attributes.ndim != 2 or labels.ndim != 1:
        raise ValueError(f"expected attributes [C, d_a] and labels [N], got shapes "
                         f"{tuple(attributes.shape)} and {tuple(labels.shape)}")
    c, d_a = attributes.shape
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < c:
        raise ValueError(f"labels must lie in [0, {c - 1}] for {c} classes, got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if min(noise, unexplained, instance_jitter) < 0 or class_separation <= 0:
        raise ValueError(
            f"need noise, unexplained, instance_jitter >= 0 and class_separation > 0; got "
            f"{noise}, {unexplained}, {instance_jitter}, {class_separation}"
        )
    hidden = 64
    a_map = torch.randn(hidden, d_a, generator=generator)  # A, applied to sqrt(d_a) a / sqrt(d_a)
    b_map = torch.randn(feature_dim, hidden, generator=generator) * (2.0 / math.sqrt(hidden))  # 2 B / sqrt(H)
    specific = unexplained * torch.randn(c, feature_dim, generator=generator) - 1.0  # rho xi_c - 1
    attributes = attributes.float()
    n = labels.numel()
    out = torch.empty(n, feature_dim)
    for chunk in torch.arange(n).split(4096):  # bounded temporary memory
        y = labels[chunk]
        jitter = torch.randn(chunk.numel(), d_a, generator=generator) * (instance_jitter / math.sqrt(d_a))
        h = torch.tanh((attributes[y] + jitter) @ a_map.T)  # [n, H]
        mean = torch.nn.functional.softplus(h @ b_map.T + specific[y]) * class_separation
        eps = torch.randn(chunk.numel(), feature_dim, generator=generator)
        out[chunk] = (mean + noise * eps).relu_()
    return out


def _balanced_labels(classes: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` labels cycling through ``classes`` (sizes differ by at most one), shuffled."""
    labels = classes.repeat(count // classes.numel() + 1)[:count]
    return labels[torch.randperm(count, generator=generator)]


def make_synthetic(spec: SyntheticSpec | str, *, seed: int = 0) -> ZSLData:
    """A fully synthetic :class:`ZSLData` of the sizes in ``spec`` (a preset name or spec).

    Classes ``0..K_s-1`` are seen and ``K_s..C-1`` unseen; ``trainval`` and ``test_seen``
    samples are drawn from the seen classes in balanced numbers, ``test_unseen`` from the
    unseen ones; sample order is shuffled.  Deterministic in ``seed``.
    """
    if isinstance(spec, str):
        spec = synthetic_spec(spec)
    if spec.num_seen < 2 or spec.num_unseen < 1:
        raise ValueError(f"need at least 2 seen and 1 unseen class, got {spec.num_seen} and {spec.num_unseen}")
    if spec.trainval < spec.num_seen:
        raise ValueError(f"trainval ({spec.trainval}) must hold at least one sample per seen class ({spec.num_seen})")
    g = torch.Generator().manual_seed(seed)
    attributes = _synthetic_attributes(spec.num_classes, spec.attribute_dim, g)
    seen = torch.arange(spec.num_seen)
    unseen = torch.arange(spec.num_seen, spec.num_classes)
    labels_by_split = [
        _balanced_labels(seen, spec.trainval, g),
        _balanced_labels(seen, spec.test_seen, g),
        _balanced_labels(unseen, spec.test_unseen, g),
    ]
    order = torch.randperm(spec.num_samples, generator=g)  # sample position of each draw
    labels = torch.empty(spec.num_samples, dtype=torch.int64)
    labels[order] = torch.cat(labels_by_split)
    splits = order.split([spec.trainval, spec.test_seen, spec.test_unseen])
    features = synthesize_features(
        attributes, labels, feature_dim=spec.feature_dim, class_separation=spec.class_separation,
        unexplained=spec.unexplained, instance_jitter=spec.instance_jitter, noise=spec.noise,
        generator=g,
    )
    return ZSLData(
        name=spec.name, features=features, labels=labels, attributes=attributes,
        trainval=splits[0].sort().values, test_seen=splits[1].sort().values,
        test_unseen=splits[2].sort().values,
        class_names=tuple(f"class_{c:03d}" for c in range(spec.num_classes)),
        source="synthetic", provenance={"generator": "analysis.synthetic", "seed": seed,
                                        "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__}},
    )


def make_semi_synthetic(
    att_splits_path: str | Path, *, seed: int = 0, feature_dim: int = 2048,
    class_separation: float = 1.0, unexplained: float = 1.0, instance_jitter: float = 1.0,
    noise: float = 1.5,
) -> ZSLData:
    """Real attributes and splits from ``att_splits_path``, synthetic features and labels.

    ``res101.mat`` (which holds the labels) is not needed.  Unseen classes are those named
    in ``testclasses.txt`` beside the file (the GBU release ships it); without that file
    they are a seeded random choice of the preset's unseen count for that data set.
    Samples of ``trainval``/``test_seen`` get seen labels, ``test_unseen`` unseen ones,
    in balanced numbers; ``train``/``val`` indices are kept when present (their labels are
    synthetic too, so the proposed split's class-disjoint validation does not carry over).
    """
    from analysis.gbu import read_att_splits  # the loader owns the file format

    path = Path(att_splits_path)
    splits = read_att_splits(path)
    name = path.parent.name.upper()
    g = torch.Generator().manual_seed(seed)
    c = len(splits.class_names)
    names_file = path.parent / "testclasses.txt"
    if names_file.exists():
        wanted = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        index = {n: i for i, n in enumerate(splits.class_names)}
        missing = [w for w in wanted if w not in index]
        if missing:
            raise DataError(f"{names_file}: class {missing[0]!r} is not in {path.name}'s allclasses_names")
        unseen = torch.tensor(sorted(index[w] for w in wanted), dtype=torch.int64)
        rule = f"unseen classes from {names_file.name}"
    elif name in SYNTHETIC_PRESETS:
        unseen = torch.randperm(c, generator=g)[: SYNTHETIC_PRESETS[name].num_unseen].sort().values
        rule = f"unseen classes drawn at random (no {names_file.name})"
    else:
        raise DataError(
            f"{path}: cannot tell the unseen classes: put testclasses.txt (one class name per "
            f"line) beside it, or name its folder after a GBU data set ({', '.join(SYNTHETIC_PRESETS)})"
        )
    seen = torch.tensor([i for i in range(c) if i not in set(unseen.tolist())], dtype=torch.int64)
    n = splits.num_samples_indexed
    labels = _balanced_labels(seen, n, g)  # samples outside the splits: any seen class
    labels[splits.test_unseen] = _balanced_labels(unseen, splits.test_unseen.numel(), g)
    seen_samples = torch.cat([splits.trainval, splits.test_seen])
    labels[seen_samples] = _balanced_labels(seen, seen_samples.numel(), g)
    features = synthesize_features(splits.attributes, labels, feature_dim=feature_dim,
                                   class_separation=class_separation, unexplained=unexplained,
                                   instance_jitter=instance_jitter, noise=noise, generator=g)
    return ZSLData(
        name=name, features=features, labels=labels, attributes=splits.attributes,
        trainval=splits.trainval, test_seen=splits.test_seen, test_unseen=splits.test_unseen,
        train=splits.train, val=splits.val, class_names=splits.class_names, source="semi-synthetic",
        provenance={"att_splits": os.path.abspath(path), "features": "analysis.synthetic", "seed": seed, "rule": rule},
    )
