"""Evaluate a trained model of the protocol ``model(features, attributes) -> logits`` on a
:class:`~analysis.data.ZSLData`: ZSL unseen accuracy, GZSL S / U / H with the seen-logit
calibration factor, and AUSUC (definitions in :mod:`analysis.metrics`).

Logits are computed in eval mode (class standardization uses its running statistics, so
scoring all C classes at once is inductive), over every class with the attributes
normalized as in training.  The model's ``training`` flag is restored afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from analysis.data import ZSLData
from analysis.metrics import ausuc, gzsl_accuracies, zsl_accuracy
from analysis.normalization import normalize_attributes
from analysis.probe_mode import probe_mode

__all__ = ["ZSLEvaluation", "class_logits", "default_seen_logit_scale", "evaluate"]

# The authors' notebook multiplies seen logits by 0.95 at test time, by 1.0 on CUB.
_SEEN_LOGIT_SCALE = {"CUB": 1.0}


def default_seen_logit_scale(dataset: str) -> float:
    """The authors' calibration factor for ``dataset``: 1.0 on CUB, 0.95 elsewhere."""
    return _SEEN_LOGIT_SCALE.get(dataset.upper(), 0.95)


@dataclass(frozen=True)
class ZSLEvaluation:
    """Accuracies as fractions in [0, 1] (per-class means), and the calibration used."""

    zsl_unseen: float
    gzsl_unseen: float
    gzsl_seen: float
    gzsl_harmonic: float
    ausuc: float
    seen_logit_scale: float

    def percent(self) -> dict[str, float]:
        """The metrics in percent (the calibration factor unchanged)."""
        return {k: (v if k == "seen_logit_scale" else 100.0 * v) for k, v in asdict(self).items()}


@torch.no_grad()
def class_logits(
    model: nn.Module, features: Tensor, attributes: Tensor, *, batch_size: int = 8192
) -> Tensor:
    """Eval-mode logits ``[n, K]`` of ``features`` [n, d_z] against ``attributes`` [K, d_a],
    in chunks of ``batch_size`` rows, without gradients.

    Runs under :func:`analysis.probe_mode.probe_mode` with ``statistics="running"``: every
    submodule in eval mode (running statistics, dropout off), nothing updated, and every
    submodule's own ``training`` flag restored afterwards (a model with a submodule the
    user put in eval mode comes back as it was)."""
    with torch.no_grad(), probe_mode(model, "running"):
        return torch.cat([model(chunk, attributes) for chunk in features.split(batch_size)])


def evaluate(
    model: nn.Module,
    data: ZSLData,
    *,
    attribute_norm: str = "l2_sqrt",
    seen_logit_scale: float | None = None,
) -> ZSLEvaluation:
    """ZSL, GZSL and AUSUC of ``model`` on ``data.test_seen`` and ``data.test_unseen``.

    Args:
        model: a trained attribute-embedder model (on any device; data is moved to it).
        data: the data set it was trained on.
        attribute_norm: the attribute normalization used in training.
        seen_logit_scale: GZSL calibration factor; ``None`` takes
            :func:`default_seen_logit_scale` of ``data.name``.
    """
    if seen_logit_scale is None:
        seen_logit_scale = default_seen_logit_scale(data.name)
    device = next(model.parameters()).device
    data = data.to(device)
    attributes = normalize_attributes(data.attributes, attribute_norm)
    logits_s = class_logits(model, data.features[data.test_seen], attributes)
    logits_u = class_logits(model, data.features[data.test_unseen], attributes)
    labels_s, labels_u = data.labels[data.test_seen], data.labels[data.test_unseen]
    seen, unseen = data.seen_classes, data.unseen_classes
    gzsl = gzsl_accuracies(logits_s, labels_s, logits_u, labels_u, seen, seen_logit_scale)
    return ZSLEvaluation(
        zsl_unseen=zsl_accuracy(logits_u, labels_u, unseen),
        gzsl_unseen=gzsl.unseen,
        gzsl_seen=gzsl.seen,
        gzsl_harmonic=gzsl.harmonic,
        ausuc=ausuc(logits_s, labels_s, logits_u, labels_u, seen, unseen),
        seen_logit_scale=seen_logit_scale,
    )
