"""Every variance claim V1-V5 on one data set: the rows of the ``cnzsl variance`` table.

For a data set (real attributes where given, synthetic otherwise) :func:`variance_report`
runs, with the attributes normalized as the model sees them and image features (real or
synthetic) for the logit rows:

    V1  Var[gamma^2 cos] for d = d_z, gamma = 5 (exact 1/d and the paper's d/(d-2)^2), and
        Var[cos] of pairs of the data set's features (real-like: departs from 1/d)
    V2  linear embedder p = V a, Eq. (10) init, attributes L2-normalized ("l2": ||a|| = 1,
        the scale drops out) and standardized ("standardize": ||a||^2 = d_a)
    V3  depth 1..5 without CN: the linear-model value fails (expected)
    V4  depth 1..5 with CN before V: 1/d_z whatever the depth (expected to pass)
    V5  the standardization Jacobian identity on the embedder's hidden activations

Embedders here have no biases (the setting of the paper's derivations; module
:mod:`variance.prototype_variance` handles biases too).  Each row records the outcome the
claim expects: V3 rows confirm the claim when the linear-model prediction *fails*.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from analysis.data import ZSLData
from analysis.model import EmbedderConfig
from analysis.normalization import normalize_attributes
from variance.estimate import Check, check
from variance.normalize_scale import check_v1, estimate_cosine_variance_of
from variance.prototype_variance import check_v2, check_v3, check_v4
from variance.standardization_jacobian import check_v5

__all__ = ["ClaimRow", "format_variance_table", "variance_report"]


@dataclass(frozen=True)
class ClaimRow:
    """A :class:`Check` with the data set it ran on and the outcome the claim expects."""

    dataset: str
    source: str
    check: Check
    expected: str  # "pass", or "fail" where the claim is that a naive prediction breaks

    @property
    def confirmed(self) -> bool:
        return self.check.verdict == self.expected


def _features_sample(data: ZSLData, count: int, generator: torch.Generator) -> Tensor:
    rows = torch.randperm(data.num_samples, generator=generator)[:count]
    return data.features[rows]


def variance_report(
    data: ZSLData,
    *,
    num_inits: int = 100,
    width: int = 1024,
    depths: tuple[int, ...] = (1, 2, 3, 4, 5),
    num_pairs: int = 20_000,
    num_features: int = 64,
    generator: torch.Generator | None = None,
) -> list[ClaimRow]:
    """All rows for ``data`` (module docstring); ``num_inits`` random inits per embedder row."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    d_a, d_z = data.attribute_dim, data.feature_dim
    z = _features_sample(data, num_features, g)
    rows: list[tuple[Check, str]] = []

    rows += [(c, "pass") for c in check_v1(d_z, 5.0, num_pairs, generator=g)]
    real_like = estimate_cosine_variance_of(data.features, num_pairs=num_pairs, generator=g)
    rows.append((check("V1", f"Var[cos] of {data.source} feature pairs vs 1/d (real-like departure)",
                       1.0 / d_z, real_like.variance), "fail"))

    linear = EmbedderConfig(d_a, d_z, hidden_dims=(), cn_layers=(), final_init="eq10", bias=False)
    for norm in ("l2", "standardize"):
        att = normalize_attributes(data.attributes, norm)
        rows += [(c, "pass") for c in check_v2(linear, att, z, setting=f"linear, AN={norm}, Eq.10",
                                              num_inits=num_inits, generator=g)]

    att = normalize_attributes(data.attributes, "l2_sqrt")
    for depth in depths:
        deep = EmbedderConfig(d_a, d_z, hidden_dims=(width,) * depth, cn_layers=(), final_init="eq10", bias=False)
        rows += [(c, "fail") for c in check_v3(deep, att, z, setting=f"depth {depth}, no CN (vs linear value)",
                                              num_inits=num_inits, generator=g)]
        cn = replace(deep, cn_layers=(-1,))
        rows += [(c, "pass") for c in check_v4(cn, att, z, setting=f"depth {depth}, CN",
                                              num_inits=num_inits, generator=g)]

    # V5 on the hidden pre-standardization activations of a CN embedder at init
    h = att.double() @ torch.empty(width, d_a, dtype=torch.float64).uniform_(-1, 1, generator=g).T / d_a**0.5
    upstream = torch.randn(h.shape, dtype=torch.float64, generator=g)
    rows += [(c, "pass") for c in check_v5(h, upstream, eps=0.0)]
    return [ClaimRow(data.name, data.source, c, expected) for c, expected in rows]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def format_variance_table(rows: list[ClaimRow]) -> str:
    """Fixed-width table: data, claim, setting, predicted, measured ± stderr, verdict."""
    header = ("data", "claim", "setting", "predicted", "measured ± stderr", "z", "verdict")
    lines = [(r.dataset, r.check.claim, r.check.setting, _fmt(r.check.predicted),
              f"{_fmt(r.check.measured)} ± {r.check.stderr:.2g}",
              f"{r.check.z:+.1f}" if r.check.stderr > 0 else "exact",
              r.check.verdict + ("" if r.confirmed else f" (expected {r.expected})")
              + (" = claim confirmed" if r.expected == "fail" and r.confirmed else ""))
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines]
    return "\n".join(out)
