"""Tests for analysis.metrics: hand-computed cases, a slow AUSUC oracle, properties, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.metrics import (
    GZSLResult,
    ausuc,
    calibrated_predictions,
    gzsl_accuracies,
    harmonic_mean,
    per_class_accuracy,
    zsl_accuracy,
)

T = torch.tensor


# -- hand-computed cases ---------------------------------------------------------------
def test_per_class_differs_from_per_sample_on_imbalanced_labels() -> None:
    labels, predictions = T([0, 0, 0, 1]), T([0, 0, 0, 0])
    # per sample: 3 of 4 right = 0.75; per class: class 0 3/3 = 1, class 1 0/1 = 0 -> 0.5
    assert (predictions == labels).double().mean().item() == 0.75
    assert per_class_accuracy(predictions, labels) == 0.5


def test_per_class_accuracy_averages_only_present_classes() -> None:
    # classes 0 and 7 present (class 7 never predicted right): (1/2 + 0) / 2 = 1/4
    assert per_class_accuracy(T([0, 3, 1]), T([0, 0, 7])) == 0.25


def test_zsl_accuracy_restricts_argmax_to_candidate_classes() -> None:
    logits = T([[9.0, 0.0, 1.0, 2.0], [0.0, 9.0, 5.0, 4.0]])
    # full argmax is 0 and 1 (both wrong); restricted to columns {2, 3}:
    # row 0 max(1, 2) -> 3 (right), row 1 max(5, 4) -> 2 (wrong); one class: 1/2
    assert zsl_accuracy(logits, T([3, 3]), T([3, 2])) == 0.5
    assert calibrated_predictions(logits, T([0, 1])).tolist() == [0, 1]


def test_zsl_accuracy_ties_go_to_lowest_class_whatever_the_list_order() -> None:
    logits = T([[0.0, 1.0, 1.0]])  # columns 1 and 2 tie: class 1 wins
    assert zsl_accuracy(logits, T([1]), T([2, 1])) == 1.0
    assert zsl_accuracy(logits, T([2]), T([2, 1])) == 0.0


def test_calibration_factor_flips_a_prediction() -> None:
    logits = T([[10.0, 9.6]], dtype=torch.float64)  # class 0 seen, class 1 unseen
    assert calibrated_predictions(logits, T([0])).tolist() == [0]  # 10 > 9.6
    assert calibrated_predictions(logits, T([0]), 0.95).tolist() == [1]  # 9.5 < 9.6
    assert calibrated_predictions(logits, T([0]), unseen_bias=0.5).tolist() == [1]  # 10 < 10.1
    assert logits.tolist() == [[10.0, 9.6]]  # input untouched (float64: no copy on entry)


def test_harmonic_mean() -> None:
    assert harmonic_mean(0.5, 0.25) == pytest.approx(1 / 3, abs=1e-15)  # 2·0.125/0.75
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(0.4, 0.4) == pytest.approx(0.4, abs=1e-15)


def _gzsl_example() -> tuple[torch.Tensor, ...]:
    # seen classes {0, 1}, unseen {2, 3}
    logits_s = T([[5.0, 1.0, 2.0, 3.0], [1.0, 2.0, 0.0, 0.0], [0.0, 4.0, 3.9, 0.0]])
    labels_s = T([0, 0, 1])
    logits_u = T([[0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 1.0],
                  [0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 3.0, 1.0]])
    labels_u = T([2, 3, 3, 3])
    return logits_s, labels_s, logits_u, labels_u


def test_gzsl_by_hand() -> None:
    ls, ys, lu, yu = _gzsl_example()
    # scale 1: seen predictions 0 (right), 1 (wrong), 1 (right): S = (1/2 + 1) / 2 = 3/4
    # unseen predictions 2 (right), 0, 3 (right), 2: U = (1 + 1/3) / 2 = 2/3
    # H = 2 (3/4)(2/3) / (3/4 + 2/3) = 1 / (17/12) = 12/17
    r = gzsl_accuracies(ls, ys, lu, yu, T([0, 1]))
    assert isinstance(r, GZSLResult)
    assert r.seen == pytest.approx(3 / 4, abs=1e-15)
    assert r.unseen == pytest.approx(2 / 3, abs=1e-15)
    assert r.harmonic == pytest.approx(12 / 17, abs=1e-15)
    # scale 0.95: seen row 0: 4.75 > 3 still right; row 2: 3.8 < 3.9 -> 2, wrong: S = 1/4
    # unseen row 1: 1.9 > 1 still 0: U = 2/3;  H = (1/3) / (11/12) = 4/11
    r = gzsl_accuracies(ls, ys, lu, yu, T([0, 1]), seen_logit_scale=0.95)
    assert (r.seen, r.unseen) == pytest.approx((1 / 4, 2 / 3), abs=1e-15)
    assert r.harmonic == pytest.approx(4 / 11, abs=1e-15)


def test_ausuc_by_hand_with_ties() -> None:
    # seen {0, 1}, unseen {2}.  Seen-test labels [0, 0, 1]: w = 1/4, 1/4, 1/2.
    logits_s = T([[3.0, 0.0, 1.0],  # seen argmax 0 right, δ = 3 - 1 = 2
                  [1.0, 0.0, 2.0],  # seen argmax 0 right, δ = 1 - 2 = -1
                  [5.0, 1.0, 0.0]])  # seen argmax 0, label 1: never right
    # Unseen-test labels [2, 2]: w = 1/2 each (one column: always right within unseen).
    logits_u = T([[0.0, 0.0, 1.0],  # δ = 0 - 1 = -1
                  [2.0, 1.0, 0.0]])  # δ = 2 - 0 = 2
    # Σ w_n w_m [δ_m > δ_n]: n1 (δ -1) with m1 (2 > -1): 1/2 · 1/4 = 1/8; with m2 a tie
    # (-1 = -1): 0.  n2 (δ 2): m1 ties, m2 below: 0.  AUSUC = 1/8 (3/8 if ties counted).
    # Curve: γ < -1 (S, U) = (1/2, 0); -1 < γ < 2: (1/4, 1/2); γ > 2: (0, 1): area 1/4 · 1/2.
    args = (logits_s, T([0, 0, 1]), logits_u, T([2, 2]), T([0, 1]), T([2]))
    assert ausuc(*args) == 0.125
    assert ausuc(*args) == pytest.approx(_ausuc_oracle(*args), abs=1e-15)


# -- slow, independent AUSUC oracle ----------------------------------------------------
def _split_accuracy(
    logits: np.ndarray, labels: np.ndarray, seen: set[int], cols: list[int], gamma: float
) -> float:
    """Per-class mean accuracy at calibration γ by full argmax over ``cols``."""
    hits: dict[int, list[bool]] = {}
    for row, y in zip(logits, labels):
        scores = {c: row[c] + (0.0 if c in seen else gamma) for c in cols}
        best = max(scores.values())
        winners = [c for c in cols if scores[c] == best]
        mixed = any(c in seen for c in winners) and any(c not in seen for c in winners)
        # a tie between the best seen and the best shifted unseen logit: wrong for both
        hits.setdefault(int(y), []).append(not mixed and min(winners) == y)
    return sum(sum(h) / len(h) for h in hits.values()) / len(hits)


def _ausuc_oracle(
    logits_s: torch.Tensor,
    labels_s: torch.Tensor,
    logits_u: torch.Tensor,
    labels_u: torch.Tensor,
    seen_classes: torch.Tensor,
    unseen_classes: torch.Tensor,
) -> float:
    """∫ S dU of the brute-force polyline through every δ, the midpoints and ±∞ stand-ins."""
    ls, lu = logits_s.double().numpy(), logits_u.double().numpy()
    ys, yu = labels_s.numpy(), labels_u.numpy()
    seen, cols = set(seen_classes.tolist()), sorted(seen_classes.tolist() + unseen_classes.tolist())
    s_cols, u_cols = sorted(seen), sorted(set(cols) - seen)
    deltas = sorted({float(r[s_cols].max() - r[u_cols].max()) for r in np.concatenate([ls, lu])})
    # ±∞ stand-ins: beyond every threshold the state is that of ±∞ (and +inf itself would
    # make every unseen column equal); then every δ and the midpoints between them.
    gammas = [deltas[0] - 1.0]
    for a, b in zip(deltas, deltas[1:]):
        gammas += [a, (a + b) / 2]
    gammas += [deltas[-1], deltas[-1] + 1.0]
    S = [_split_accuracy(ls, ys, seen, cols, g) for g in gammas]
    U = [_split_accuracy(lu, yu, seen, cols, g) for g in gammas]
    assert U[0] == 0.0 and S[-1] == 0.0
    area = 0.0
    for k in range(len(gammas) - 1):
        assert S[k + 1] == S[k] or U[k + 1] == U[k], "a step moved both coordinates"
        assert S[k + 1] <= S[k] and U[k + 1] >= U[k], "the curve is monotone"
        area += (U[k + 1] - U[k]) * S[k + 1]
    return area


def _random_case(seed: int, integer: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    k_s, k_u, k_x = draw(1, 5), draw(1, 5), draw(0, 3)  # seen, unseen, ignored columns
    perm = torch.randperm(k_s + k_u + k_x, generator=g)  # seen / unseen / ignored columns, shuffled
    seen, unseen = perm[:k_s], perm[k_s : k_s + k_u]
    n_s, n_u = draw(1, 13), draw(1, 13)
    ys = seen[torch.randint(0, k_s, (n_s,), generator=g)]
    yu = unseen[torch.randint(0, k_u, (n_u,), generator=g)]
    shape = lambda n: (n, k_s + k_u + k_x)  # noqa: E731
    if integer:  # few distinct values: ties within rows and equal δ across samples
        ls, lu = (torch.randint(-2, 3, shape(n), generator=g).double() for n in (n_s, n_u))
    else:
        ls, lu = (torch.randn(shape(n), generator=g, dtype=torch.float64) for n in (n_s, n_u))
    return ls, ys, lu, yu, seen, unseen


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), integer=st.booleans())
def test_ausuc_matches_slow_oracle(seed: int, integer: bool) -> None:
    case = _random_case(seed, integer)
    assert abs(ausuc(*case) - _ausuc_oracle(*case)) <= 1e-12


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), integer=st.booleans())
def test_ausuc_bounded_by_restricted_accuracies(seed: int, integer: bool) -> None:
    ls, ys, lu, yu, seen, unseen = _random_case(seed, integer)
    s_max, u_max = zsl_accuracy(ls, ys, seen), zsl_accuracy(lu, yu, unseen)
    assert 0.0 <= ausuc(ls, ys, lu, yu, seen, unseen) <= s_max * u_max + 1e-12


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ausuc_invariant_to_row_constants(seed: int) -> None:
    ls, ys, lu, yu, seen, unseen = _random_case(seed, integer=True)
    g = torch.Generator().manual_seed(seed + 1)
    shift = lambda x: x + torch.randint(-50, 50, (len(x), 1), generator=g).double()  # noqa: E731
    # integer logits and shifts: δ = max_s - max_u is unchanged exactly, ties included
    assert ausuc(shift(ls), ys, shift(lu), yu, seen, unseen) == ausuc(ls, ys, lu, yu, seen, unseen)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ausuc_of_separable_logits_is_product_of_maxima(seed: int) -> None:
    ls, ys, lu, yu, seen, unseen = _random_case(seed, integer=False)
    ls[:, unseen] -= 10.0  # seen-test: every seen logit above every unseen one (δ > 0)
    lu[:, seen] -= 10.0  # unseen-test: δ < 0
    ls[torch.arange(len(ys)), ys] += 20.0  # the label wins within its split
    lu[torch.arange(len(yu)), yu] += 20.0
    s_max, u_max = zsl_accuracy(ls, ys, seen), zsl_accuracy(lu, yu, unseen)
    assert s_max == 1.0 and u_max == 1.0
    assert ausuc(ls, ys, lu, yu, seen, unseen) == pytest.approx(s_max * u_max, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_gzsl_matches_brute_force_at_zero_calibration(seed: int) -> None:
    ls, ys, lu, yu, seen, unseen = _random_case(seed, integer=False)
    cols = sorted(seen.tolist() + unseen.tolist())
    ls, lu = ls[:, cols], lu[:, cols]  # GZSL scores every column: drop the ignored ones
    remap = {c: i for i, c in enumerate(cols)}
    relabel = lambda t: torch.tensor([remap[int(c)] for c in t])  # noqa: E731
    ys, yu, seen, unseen = relabel(ys), relabel(yu), relabel(seen), relabel(unseen)
    r = gzsl_accuracies(ls, ys, lu, yu, seen)
    s_set, all_cols = set(seen.tolist()), list(range(len(cols)))
    brute = lambda x, y: _split_accuracy(x.numpy(), y.numpy(), s_set, all_cols, 0.0)  # noqa: E731
    assert r.seen == pytest.approx(brute(ls, ys), abs=1e-12)
    assert r.unseen == pytest.approx(brute(lu, yu), abs=1e-12)
    assert r.harmonic == harmonic_mean(r.seen, r.unseen)


def test_float32_logits_are_accepted() -> None:
    ls, ys, lu, yu = _gzsl_example()
    r64 = gzsl_accuracies(ls.double(), ys, lu.double(), yu, T([0, 1]))
    assert gzsl_accuracies(ls.float(), ys, lu.float(), yu, T([0, 1])) == r64


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    case = _random_case(0, integer=True)
    on_gpu = [t.cuda() for t in case]
    assert ausuc(*on_gpu) == ausuc(*case)
    ls, ys, lu, yu, seen, _ = on_gpu
    assert zsl_accuracy(ls, ys, seen) == zsl_accuracy(*(t.cpu() for t in (ls, ys, seen)))


# -- errors ----------------------------------------------------------------------------
def test_per_class_accuracy_errors() -> None:
    with pytest.raises(ValueError, match=r"predictions has 2 entries but labels has 3"):
        per_class_accuracy(T([0, 1]), T([0, 1, 1]))
    with pytest.raises(ValueError, match=r"predictions is empty"):
        per_class_accuracy(T([], dtype=torch.int64), T([], dtype=torch.int64))
    with pytest.raises(
        TypeError, match=r"labels must be a 1-D integer tensor, got dtype torch.float32"
    ):
        per_class_accuracy(T([0]), T([0.0]))
    with pytest.raises(TypeError, match=r"predictions must be a 1-D integer tensor, got list"):
        per_class_accuracy([0], T([0]))  # type: ignore[arg-type]


def test_logit_and_label_errors() -> None:
    with pytest.raises(ValueError, match=r"logits must be a 2-D \[n, C\] tensor, got shape \(3,\)"):
        zsl_accuracy(T([1.0, 2.0, 3.0]), T([0]), T([0]))
    with pytest.raises(ValueError, match=r"logits is empty \(shape \(0, 3\)\)"):
        zsl_accuracy(torch.zeros(0, 3), T([0]), T([0]))
    with pytest.raises(ValueError, match=r"logits holds NaN or infinite"):
        zsl_accuracy(T([[0.0, math.nan]]), T([0]), T([0]))
    with pytest.raises(ValueError, match=r"labels has 2 entries but logits has 1 rows"):
        zsl_accuracy(T([[0.0, 1.0]]), T([0, 1]), T([0, 1]))
    with pytest.raises(ValueError, match=r"labels holds class 2, outside the 2 columns"):
        zsl_accuracy(T([[0.0, 1.0]]), T([2]), T([0, 1]))
    with pytest.raises(ValueError, match=r"labels holds class -1, outside"):
        zsl_accuracy(T([[0.0, 1.0]]), T([-1]), T([0, 1]))
    with pytest.raises(ValueError, match=r"labels holds class 0, which is not in classes"):
        zsl_accuracy(T([[0.0, 1.0]]), T([0]), T([1]))


def test_class_list_errors() -> None:
    logits = T([[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"classes holds class 5, outside the 3 logit columns"):
        zsl_accuracy(logits, T([0]), T([0, 5]))
    with pytest.raises(ValueError, match=r"classes repeats a class \(\[0, 0\]\)"):
        zsl_accuracy(logits, T([0]), T([0, 0]))
    with pytest.raises(ValueError, match=r"classes is empty"):
        zsl_accuracy(logits, T([0]), T([], dtype=torch.int64))


def test_calibration_errors() -> None:
    logits = T([[1.0, 2.0]])
    for bad in (0.0, -0.95, math.nan, math.inf):
        with pytest.raises(
            ValueError, match=rf"seen_logit_scale must be a finite positive number, got {bad!r}"
        ):
            calibrated_predictions(logits, T([0]), bad)
    with pytest.raises(ValueError, match=r"unseen_bias must be a finite number, got nan"):
        calibrated_predictions(logits, T([0]), unseen_bias=math.nan)
    ls, ys, lu, yu = _gzsl_example()
    with pytest.raises(
        ValueError, match=r"seen_logit_scale must be a finite positive number, got 0"
    ):
        gzsl_accuracies(ls, ys, lu, yu, T([0, 1]), seen_logit_scale=0)


def test_harmonic_mean_errors() -> None:
    with pytest.raises(ValueError, match=r"seen accuracy must be >= 0, got -0.1"):
        harmonic_mean(-0.1, 0.5)
    with pytest.raises(ValueError, match=r"unseen accuracy must be >= 0, got nan"):
        harmonic_mean(0.5, math.nan)


def test_gzsl_errors() -> None:
    ls, ys, lu, yu = _gzsl_example()
    with pytest.raises(
        ValueError, match=r"logits_seen_test has 4 columns but logits_unseen_test has 3"
    ):
        gzsl_accuracies(ls, ys, lu[:, :3], yu, T([0, 1]))
    with pytest.raises(
        ValueError, match=r"labels_seen_test holds class 2, which is not in seen_classes"
    ):
        gzsl_accuracies(ls, T([0, 2, 1]), lu, yu, T([0, 1]))
    with pytest.raises(
        ValueError, match=r"labels_unseen_test holds class 1, which is in seen_classes"
    ):
        gzsl_accuracies(ls, ys, lu, T([2, 1, 3, 3]), T([0, 1]))
    with pytest.raises(
        ValueError, match=r"labels_unseen_test has 3 entries but logits_unseen_test has 4 rows"
    ):
        gzsl_accuracies(ls, ys, lu, yu[:3], T([0, 1]))


def test_ausuc_errors() -> None:
    ls, ys, lu, yu = _gzsl_example()
    seen, unseen = T([0, 1]), T([2, 3])
    with pytest.raises(ValueError, match=r"seen_classes and unseen_classes share classes \[1\]"):
        ausuc(ls, ys, lu, yu, seen, T([1, 2, 3]))
    with pytest.raises(
        ValueError, match=r"labels_unseen_test holds class 3, which is not in unseen_classes"
    ):
        ausuc(ls, ys, lu, yu, seen, T([2]))
    with pytest.raises(
        ValueError, match=r"labels_seen_test holds class 1, which is not in seen_classes"
    ):
        ausuc(ls, ys, lu, yu, T([0]), unseen)
    with pytest.raises(
        ValueError, match=r"logits_seen_test has 4 columns but logits_unseen_test has 5"
    ):
        ausuc(ls, ys, torch.cat([lu, lu[:, :1]], 1), yu, seen, unseen)
    with pytest.raises(ValueError, match=r"logits_unseen_test must be a 2-D"):
        ausuc(ls, ys, lu[0], yu, seen, unseen)


def test_seen_calibration_lowers_seen_scores_of_either_sign():
    """s < 1 must favour the unseen classes for negative logits too (a plain product would
    raise a negative seen logit); on non-negative logits it is the authors' s * logit."""
    import torch

    from analysis.metrics import calibrated_predictions

    seen = torch.tensor([0])
    negative = torch.tensor([[-1.0, -1.02]])  # seen column 0 slightly ahead
    assert int(calibrated_predictions(negative, seen, 1.0)[0]) == 0
    assert int(calibrated_predictions(negative, seen, 0.95)[0]) == 1  # -1/0.95 = -1.053 < -1.02
    positive = torch.tensor([[1.0, 0.96]])
    assert int(calibrated_predictions(positive, seen, 0.95)[0]) == 1  # 0.95 < 0.96
    assert int(calibrated_predictions(positive, seen, 0.97)[0]) == 0  # 0.97 > 0.96: s * logit exactly
    # s > 1 raises seen scores of either sign
    assert int(calibrated_predictions(torch.tensor([[-1.0, -0.98]]), seen, 1.05)[0]) == 0


def test_calibration_of_positive_logits_below_one_multiplies():
    """0 < logit < 1 is non-negative: s * logit (not logit / s)."""
    seen = torch.tensor([0])
    small = torch.tensor([[0.5, 0.48]])  # 0.95 * 0.5 = 0.475 < 0.48; 0.5 / 0.95 = 0.526 would keep class 0
    assert int(calibrated_predictions(small, seen, 0.95)[0]) == 1
    assert int(calibrated_predictions(small, seen, 1.0)[0]) == 0


def test_gzsl_calibrates_the_unseen_test_split_too():
    """The calibration factor acts on both test splits: here it moves one unseen image from a
    seen class to its own, U goes from 0 to 1 (and S stays 1)."""
    seen = torch.tensor([0])
    logits_s, labels_s = torch.tensor([[2.0, 1.0]]), torch.tensor([0])
    logits_u, labels_u = torch.tensor([[1.0, 0.96]]), torch.tensor([1])
    plain = gzsl_accuracies(logits_s, labels_s, logits_u, labels_u, seen)
    calibrated = gzsl_accuracies(logits_s, labels_s, logits_u, labels_u, seen, seen_logit_scale=0.95)
    assert (plain.seen, plain.unseen) == (1.0, 0.0)
    assert (calibrated.seen, calibrated.unseen) == (1.0, 1.0)
