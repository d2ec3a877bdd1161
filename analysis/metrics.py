"""Zero-shot metrics (docs/science.md section 3.2): per-class accuracies on logits.

Definitions (every function computes in float64 and returns a fraction in [0, 1]):

* **Per-class mean top-1 accuracy** (Xian et al., GBU): for predictions ``ŷ`` and
  labels ``y`` over the K classes *present in* ``y``, with ``N_c`` samples of class c,
  ``acc = (1/K) Σ_c (1/N_c) Σ_{n: y_n = c} [ŷ_n = y_n] = Σ_n w_n [ŷ_n = y_n]``,
  with sample weight ``w_n = 1 / (K · N_{y_n})``.
* **ZSL accuracy**: logits ``[n, C]`` over all classes, a candidate list ``classes``;
  ``ŷ_n = argmax_{c ∈ classes} logit_{n,c}``, then the per-class mean accuracy.
* **Calibrated prediction** (GZSL): seen logits are scaled by ``s = seen_logit_scale``
  (the authors use 0.95) *away from the unseen ones*: ``s·ℓ`` for ``ℓ ≥ 0`` and ``ℓ/s``
  for ``ℓ < 0``, so ``s < 1`` lowers every seen score whatever its sign (a plain product
  would raise negative logits); on the authors' non-negative ``γ² cos`` logits this is
  their ``s·ℓ``.  The unseen columns get ``+ unseen_bias``; ``ŷ_n = argmax`` over all C.
* **GZSL** (seen S, unseen U, harmonic H): calibrated predictions over all C classes
  (unseen = every column not in ``seen_classes``), per-class mean accuracy on the
  seen-test and on the unseen-test split; ``H = 2 S U / (S + U)``, ``H = 0`` if ``S + U = 0``.
* **AUSUC** (Chao et al. 2016): calibration adds ``γ ∈ R`` to every unseen logit.  With
  ``δ_n = max_{seen c} logit_{n,c} - max_{unseen c} logit_{n,c}``, a seen-test sample is
  correct at γ iff ``γ < δ_n`` and its label is the argmax within the seen columns; an
  unseen-test sample iff ``γ > δ_n`` and its label is the argmax within the unseen
  columns (at ``γ = δ_n`` both are wrong).  ``S(γ) = Σ w_n`` over correct seen-test
  samples, ``U(γ)`` likewise; as γ goes from -∞ to +∞ the curve runs from
  ``(U, S) = (0, S_max)`` to ``(U_max, 0)``, where ``S_max`` (``U_max``) is the ZSL
  accuracy of the seen-test (unseen-test) split restricted to its own classes, and
  ``AUSUC = ∫ S dU = Σ_{n unseen-correct} Σ_{m seen-correct} w_n w_m [δ_m > δ_n]``
  (ties count zero) ``≤ S_max · U_max``, computed exactly by sorting in O(n log n).
  Columns in neither class list are ignored.  CZSL's mAUC (docs/science.md section 6.3) averages it.

Ties: an argmax tie goes to the lowest class index (``torch.argmax`` keeps the first
maximum; class lists are sorted before use).  Weights count the classes present in the
labels of each split, as in GBU where every test class has samples.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "GZSLResult",
    "per_class_accuracy",
    "zsl_accuracy",
    "calibrated_predictions",
    "harmonic_mean",
    "gzsl_accuracies",
    "ausuc",
]


@dataclass(frozen=True)
class GZSLResult:
    """Generalized zero-shot accuracies, fractions in [0, 1]."""

    seen: float  # S: per-class mean accuracy on the seen-test split
    unseen: float  # U: per-class mean accuracy on the unseen-test split
    harmonic: float  # H = 2SU / (S + U), 0 when S + U = 0


# -- validation ------------------------------------------------------------------------
def _index_vector(x: Tensor, name: str) -> Tensor:
    is_int = isinstance(x, Tensor) and not (x.dtype.is_floating_point or x.dtype == torch.bool)
    if not is_int or x.ndim != 1:
        got = type(x).__name__
        if isinstance(x, Tensor):
            got = f"dtype {x.dtype}, shape {tuple(x.shape)}"
        raise TypeError(
            f"{name} must be a 1-D integer tensor, got {got}; "
            "use torch.as_tensor(x).reshape(-1).long()"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty; pass at least one entry")
    return x


def _logits(logits: Tensor, name: str) -> Tensor:
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"{name} must be a 2-D [n, C] tensor, got shape {got}; "
            "add a batch axis with .unsqueeze(0)"
        )
    if logits.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(logits.shape)}); pass at least one row and one column"
        )
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(
            f"{name} holds NaN or infinite values; mask classes by dropping columns instead"
        )
    return logits.double()  # float64: calibration products and δ differences


def _labels(labels: Tensor, logits: Tensor, lname: str, yname: str) -> Tensor:
    labels = _index_vector(labels, yname).to(logits.device)
    if labels.numel() != logits.shape[0]:
        raise ValueError(
            f"{yname} has {labels.numel()} entries but {lname} has {logits.shape[0]} rows; "
            "pass one label per row"
        )
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= logits.shape[1]:
        raise ValueError(
            f"{yname} holds class {lo if lo < 0 else hi}, outside the {logits.shape[1]} "
            f"columns of {lname}; labels are 0-based column indices"
        )
    return labels


def _classes(classes: Tensor, num_columns: int, name: str, device: torch.device) -> Tensor:
    classes = _index_vector(classes, name).to(device)
    lo, hi = int(classes.min()), int(classes.max())
    if lo < 0 or hi >= num_columns:
        raise ValueError(
            f"{name} holds class {lo if lo < 0 else hi}, outside the {num_columns} logit "
            "columns; use 0-based column indices"
        )
    classes = torch.sort(classes).values  # sorted: argmax ties go to the lowest class index
    if classes.numel() > 1 and bool((classes[1:] == classes[:-1]).any()):
        raise ValueError(
            f"{name} repeats a class ({classes.tolist()}); pass each class once, "
            f"e.g. torch.unique({name})"
        )
    return classes


def _members(labels: Tensor, classes: Tensor, yname: str, cname: str, inside: bool = True) -> None:
    wrong = torch.isin(labels, classes) != inside
    if bool(wrong.any()):
        raise ValueError(
            f"{yname} holds class {int(labels[wrong][0])}, which is {'not in' if inside else 'in'} "
            f"{cname}; pass each test split with its own class list"
        )


def _two_splits(
    logits_s: Tensor, labels_s: Tensor, logits_u: Tensor, labels_u: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validated float64 logits and labels of the seen-test and unseen-test splits."""
    ls, lu = _logits(logits_s, "logits_seen_test"), _logits(logits_u, "logits_unseen_test")
    if ls.shape[1] != lu.shape[1]:
        raise ValueError(
            f"logits_seen_test has {ls.shape[1]} columns but logits_unseen_test has "
            f"{lu.shape[1]}; both must score all classes"
        )
    lu = lu.to(ls.device)
    ys = _labels(labels_s, ls, "logits_seen_test", "labels_seen_test")
    yu = _labels(labels_u, lu, "logits_unseen_test", "labels_unseen_test")
    return ls, ys, lu, yu


def _class_weights(labels: Tensor) -> Tensor:
    """``w_n = 1 / (K · N_{y_n})``, ``[n]`` float64: per-class mean = Σ w_n [correct_n]."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (counts.numel() * counts.double())[inverse]


# -- accuracies ------------------------------------------------------------------------
def per_class_accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Per-class mean top-1 accuracy ``(1/K) Σ_c (1/N_c) Σ_{y_n = c} [ŷ_n = y_n]``.

    Args:
        predictions: ``[n]`` integer predicted classes.
        labels: ``[n]`` integer true classes; K counts the classes present here.

    Returns:
        The accuracy as a fraction in [0, 1].

    Raises:
        TypeError: if an input is not a 1-D integer tensor.
        ValueError: if an input is empty or the lengths differ.
    """
    predictions, labels = _index_vector(predictions, "predictions"), _index_vector(labels, "labels")
    if predictions.numel() != labels.numel():
        raise ValueError(
            f"predictions has {predictions.numel()} entries but labels has {labels.numel()}; "
            "pass one prediction per label"
        )
    correct = (predictions.to(labels.device) == labels).double()
    # mean over classes of hits_c / N_c (not Σ w_n): a perfect score is exactly 1.0
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    hits = correct.new_zeros(counts.numel()).index_add_(0, inverse, correct)  # [K]
    return float((hits / counts).mean())


def zsl_accuracy(logits: Tensor, labels: Tensor, classes: Tensor) -> float:
    """ZSL accuracy: ``ŷ_n = argmax_{c ∈ classes} logits[n, c]``, per-class mean accuracy.

    Args:
        logits: ``[n, C]`` scores over all classes.
        labels: ``[n]`` true classes, each in ``classes``.
        classes: ``[K]`` candidate column indices (e.g. the unseen classes).

    Returns:
        The per-class mean accuracy, a fraction in [0, 1].

    Raises:
        TypeError, ValueError: on malformed inputs or a label not in ``classes``.
    """
    logits = _logits(logits, "logits")
    labels = _labels(labels, logits, "logits", "labels")
    classes = _classes(classes, logits.shape[1], "classes", logits.device)
    _members(labels, classes, "labels", "classes")
    predictions = classes[logits[:, classes].argmax(dim=1)]  # [n]
    return per_class_accuracy(predictions, labels)


def calibrated_predictions(
    logits: Tensor, seen_classes: Tensor, seen_logit_scale: float = 1.0, unseen_bias: float = 0.0
) -> Tensor:
    """Calibrated GZSL prediction ``ŷ_n = argmax_{c < C} ℓ'_{n,c}`` over all classes.

    For seen c, ``ℓ'_{n,c} = s ℓ_{n,c}`` if ``ℓ_{n,c} ≥ 0`` and ``ℓ_{n,c} / s`` otherwise
    (``s = seen_logit_scale``): increasing in ``ℓ`` for every ``s > 0``, and ``s < 1``
    lowers every seen score, negative ones included; on the authors' non-negative
    ``γ² cos`` logits it is their ``s ℓ``.  Unseen c: ``ℓ_{n,c} + unseen_bias``.  float64,
    argmax ties go to the lowest column.

    Args:
        logits: ``[n, C]`` scores over all classes (not modified).
        seen_classes: ``[K_s]`` seen column indices; every other column is unseen.
        seen_logit_scale: finite positive factor for the seen columns (authors: 0.95).
        unseen_bias: finite shift added to the unseen columns.

    Returns:
        ``[n]`` int64 predicted column indices.

    Raises:
        TypeError, ValueError: on malformed inputs, a non-positive or NaN scale, or a
            non-finite bias.
    """
    scale, bias = seen_logit_scale, unseen_bias
    if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"seen_logit_scale must be a finite positive number, got {scale!r}; "
            "use 1.0 for no calibration (authors: 0.95)"
        )
    if not (isinstance(bias, numbers.Real) and math.isfinite(bias)):
        raise ValueError(f"unseen_bias must be a finite number, got {bias!r}; use 0.0 for no shift")
    scores = _logits(logits, "logits").clone()  # float64 copy
    seen = _classes(seen_classes, scores.shape[1], "seen_classes", scores.device)
    is_seen = torch.zeros(scores.shape[1], dtype=torch.bool, device=scores.device)
    is_seen[seen] = True
    seen_scores = scores[:, is_seen]
    scores[:, is_seen] = torch.where(seen_scores >= 0, seen_scores * scale, seen_scores / scale)
    scores[:, ~is_seen] += bias
    return scores.argmax(dim=1)


def harmonic_mean(seen: float, unseen: float) -> float:
    """Harmonic mean ``H = 2 S U / (S + U)``, defined as 0 when ``S + U = 0``.

    Args:
        seen, unseen: accuracies S and U (fractions).

    Returns:
        H, between min(S, U) and max(S, U).

    Raises:
        ValueError: if an accuracy is negative or NaN.
    """
    for name, value in (("seen", seen), ("unseen", unseen)):
        if not value >= 0:  # also catches NaN
            raise ValueError(
                f"{name} accuracy must be >= 0, got {value!r}; pass fractions in [0, 1]"
            )
    total = seen + unseen
    return 0.0 if total == 0 else 2.0 * seen * unseen / total


def gzsl_accuracies(
    logits_seen_test: Tensor,
    labels_seen_test: Tensor,
    logits_unseen_test: Tensor,
    labels_unseen_test: Tensor,
    seen_classes: Tensor,
    seen_logit_scale: float = 1.0,
) -> GZSLResult:
    """Generalized ZSL: calibrated argmax over all C classes, per-class mean on each split.

    Args:
        logits_seen_test, logits_unseen_test: ``[n_s, C]``, ``[n_u, C]`` scores over all classes.
        labels_seen_test: ``[n_s]`` labels, each in ``seen_classes``.
        labels_unseen_test: ``[n_u]`` labels, none in ``seen_classes``.
        seen_classes: ``[K_s]`` seen column indices; the other columns are unseen.
        seen_logit_scale: factor on seen logits (see :func:`calibrated_predictions`).

    Returns:
        :class:`GZSLResult` with S, U and H = 2SU/(S+U).

    Raises:
        TypeError, ValueError: on malformed inputs, mismatched column counts, or a label
            on the wrong side of ``seen_classes``.
    """
    ls, ys, lu, yu = _two_splits(
        logits_seen_test, labels_seen_test, logits_unseen_test, labels_unseen_test
    )
    seen = _classes(seen_classes, ls.shape[1], "seen_classes", ls.device)
    _members(ys, seen, "labels_seen_test", "seen_classes")
    _members(yu, seen, "labels_unseen_test", "seen_classes", inside=False)
    s = per_class_accuracy(calibrated_predictions(ls, seen, seen_logit_scale), ys)
    u = per_class_accuracy(calibrated_predictions(lu, seen, seen_logit_scale), yu)
    return GZSLResult(seen=s, unseen=u, harmonic=harmonic_mean(s, u))


# -- AUSUC -----------------------------------------------------------------------------
def _margin(
    logits: Tensor, labels: Tensor, seen: Tensor, unseen: Tensor, own: Tensor
) -> tuple[Tensor, Tensor]:
    """``δ = max_seen - max_unseen`` and whether the label wins within ``own`` columns."""
    seen_max, unseen_max = logits[:, seen].max(dim=1).values, logits[:, unseen].max(dim=1).values
    correct = own[logits[:, own].argmax(dim=1)] == labels  # first maximum: lowest class
    return seen_max - unseen_max, correct


def ausuc(
    logits_seen_test: Tensor,
    labels_seen_test: Tensor,
    logits_unseen_test: Tensor,
    labels_unseen_test: Tensor,
    seen_classes: Tensor,
    unseen_classes: Tensor,
) -> float:
    """Area under the seen-unseen accuracy curve, exact (Chao et al. 2016; module docstring).

    ``AUSUC = Σ_{n unseen-correct} Σ_{m seen-correct} w_n w_m [δ_m > δ_n]``: sort the δ of
    the seen-correct samples, take suffix sums of their weights, and look up each
    unseen-correct δ_n with a right-sided ``searchsorted`` (ties count zero).
    O((n_s + n_u) log n_s), float64.  ``AUSUC ≤ S_max · U_max``, equal for separable logits.

    Args:
        logits_seen_test, logits_unseen_test: ``[n_s, C]``, ``[n_u, C]`` scores.
        labels_seen_test, labels_unseen_test: labels in ``seen_classes`` / ``unseen_classes``.
        seen_classes, unseen_classes: disjoint column index lists; other columns are ignored.

    Returns:
        The area, a fraction in [0, 1].

    Raises:
        TypeError, ValueError: on malformed inputs, overlapping class lists, mismatched
            column counts, or a label not in its split's class list.
    """
    ls, ys, lu, yu = _two_splits(
        logits_seen_test, labels_seen_test, logits_unseen_test, labels_unseen_test
    )
    seen = _classes(seen_classes, ls.shape[1], "seen_classes", ls.device)
    unseen = _classes(unseen_classes, ls.shape[1], "unseen_classes", ls.device)
    overlap = seen[torch.isin(seen, unseen)]
    if overlap.numel() > 0:
        raise ValueError(
            f"seen_classes and unseen_classes share classes {overlap.tolist()}; "
            "the two lists must be disjoint"
        )
    _members(ys, seen, "labels_seen_test", "seen_classes")
    _members(yu, unseen, "labels_unseen_test", "unseen_classes")

    delta_s, ok_s = _margin(ls, ys, seen, unseen, own=seen)
    delta_u, ok_u = _margin(lu, yu, seen, unseen, own=unseen)
    d_sorted, order = torch.sort(delta_s[ok_s])  # [m] seen-correct thresholds, ascending
    w_sorted = _class_weights(ys)[ok_s][order]
    # suffix[i] = Σ_{j ≥ i} w_sorted[j]; suffix[m] = 0.  [m + 1]
    suffix = torch.cat([w_sorted.flip(0).cumsum(0).flip(0), w_sorted.new_zeros(1)])
    above = suffix[torch.searchsorted(d_sorted, delta_u[ok_u], right=True)]  # Σ w_m [δ_m > δ_n]
    area = float((_class_weights(yu)[ok_u] * above).sum())
    return min(area, 1.0)  # Σ of products of weights can round a perfect 1 up by an ulp
