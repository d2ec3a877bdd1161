"""Tests for analysis.czsl.metrics: a hand-computed 3-task run, edge cases, consistency
with analysis.metrics, and every error path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.czsl.metrics import CZSLSummary, TaskEvaluation, evaluate_time_step, forgetting_authors, summarize
from analysis.metrics import ausuc, gzsl_accuracies

T = torch.tensor
NAN = math.nan

# -- a hand-computed run: T = 3 tasks, C = 6 classes -----------------------------------
# Tasks {0, 1}, {2, 3}, {4, 5}; 7 test samples, class 0 twice (per-class weights differ
# from per-sample ones).  "pred" is the argmax over all 6 columns, "restr" the argmax
# within the sample's own task.
TASKS = [T([0, 1]), T([2, 3]), T([4, 5])]
LABELS = T([0, 0, 1, 2, 3, 4, 5])
LOGITS = {
    1: T([[5.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # y0 pred 0 ok    restr 0 ok   δ = 5 - 0 = 5
          [1.0, 5.0, 0.0, 0.0, 0.0, 0.0],  # y0 pred 1 wrong restr 1 wrong
          [1.0, 5.0, 0.0, 0.0, 0.0, 0.0],  # y1 pred 1 ok    restr 1 ok   δ = 5
          [4.0, 0.0, 3.0, 1.0, 0.0, 0.0],  # y2 pred 0 wrong; within U: 2 ok, δ = 4 - 3 = 1
          [0.0, 0.0, 1.0, 2.0, 0.0, 0.0],  # y3 pred 3 ok;    within U: 3 ok, δ = 0 - 2 = -2
          [0.0, 0.0, 0.0, 0.0, 1.0, 2.0],  # y4 pred 5 wrong; within U: 5 wrong
          [3.0, 0.0, 0.0, 0.0, 0.0, 2.0]]),  # y5 pred 0 wrong; within U: 5 ok, δ = 3 - 2 = 1
    2: T([[5.0, 0.0, 1.0, 0.0, 0.0, 0.0],  # y0 pred 0 ok    restr 0 ok   δ = 5 - 0 = 5
          [3.0, 1.0, 4.0, 0.0, 0.0, 0.0],  # y0 pred 2 wrong restr 0 ok; within S: 2 wrong
          [0.0, 2.0, 1.0, 0.0, 0.0, 0.0],  # y1 pred 1 ok    restr 1 ok   δ = 2 - 0 = 2
          [0.0, 0.0, 2.0, 3.0, 0.0, 0.0],  # y2 pred 3 wrong restr 3 wrong
          [0.0, 0.0, 0.0, 4.0, 0.0, 1.0],  # y3 pred 3 ok    restr 3 ok   δ = 4 - 1 = 3
          [0.0, 0.0, 0.0, 1.0, 2.0, 0.0],  # y4 pred 4 ok;   within U: 4 ok, δ = 1 - 2 = -1
          [0.0, 0.0, 0.0, 3.0, 0.0, 1.0]]),  # y5 pred 3 wrong; within U: 5 ok, δ = 3 - 1 = 2
    3: T([[1.0, 2.0, 0.0, 0.0, 0.0, 3.0],  # y0 pred 5 wrong restr 1 wrong
          [2.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # y0 pred 0 ok    restr 0 ok
          [2.0, 1.0, 0.0, 0.0, 0.0, 0.0],  # y1 pred 0 wrong restr 0 wrong
          [0.0, 0.0, 1.0, 2.0, 3.0, 0.0],  # y2 pred 4 wrong restr 3 wrong
          [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # y3 pred 3 ok    restr 3 ok
          [0.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # y4 pred 4 ok    restr 4 ok
          [0.0, 0.0, 0.0, 0.0, 2.0, 1.0]]),  # y5 pred 4 wrong restr 4 wrong
}


def _evaluate(t: int) -> TaskEvaluation:
    return evaluate_time_step(LOGITS[t], LABELS, TASKS, t)


def test_time_step_1_by_hand() -> None:
    ev = _evaluate(1)
    # S_1 = {0, 1}: class 0 1/2, class 1 1/1 -> SA = 3/4
    # U_1 = {2..5}: classes 2, 3, 4, 5 -> 0, 1, 0, 0 -> UA = 1/4;  H = 2·(3/16)/1 = 3/8
    # all six classes: 1/2, 1, 0, 1, 0, 0 -> JA = 5/2 / 6 = 5/12
    # task 1 restricted to {0, 1}: class 0 1/2, class 1 1 -> 3/4
    assert ev.seen_accuracy == pytest.approx(3 / 4, abs=1e-15)
    assert ev.unseen_accuracy == pytest.approx(1 / 4, abs=1e-15)
    assert ev.harmonic == pytest.approx(3 / 8, abs=1e-15)
    assert ev.joint_accuracy == pytest.approx(5 / 12, abs=1e-15)
    assert ev.task_accuracies == pytest.approx([3 / 4], abs=1e-15)
    assert ev.time_step == 1
    # AUSUC: seen-correct rows 0 (w 1/4, δ 5) and 2 (w 1/2, δ 5); unseen-correct rows 3, 4, 6
    # (w 1/4 each, δ 1, -2, 1), all below 5: separable, AUSUC = S_max·U_max = 3/4 · 3/4
    assert ev.ausuc == pytest.approx(9 / 16, abs=1e-15)


def test_time_step_2_by_hand() -> None:
    ev = _evaluate(2)
    # S_2 = {0..3}: class 0 1/2, class 1 1, class 2 0, class 3 1 -> SA = 5/2 / 4 = 5/8
    # U_2 = {4, 5}: class 4 1, class 5 0 -> UA = 1/2;  H = 2·(5/16)/(9/8) = 5/9
    # all: 1/2, 1, 0, 1, 1, 0 -> JA = 7/2 / 6 = 7/12
    # task 1 restricted: both class-0 rows right, class 1 right -> 1;  task 2: 0, 1 -> 1/2
    assert ev.seen_accuracy == pytest.approx(5 / 8, abs=1e-15)
    assert ev.unseen_accuracy == pytest.approx(1 / 2, abs=1e-15)
    assert ev.harmonic == pytest.approx(5 / 9, abs=1e-15)
    assert ev.joint_accuracy == pytest.approx(7 / 12, abs=1e-15)
    assert ev.task_accuracies == pytest.approx([1.0, 1 / 2], abs=1e-15)
    # AUSUC: seen weights 1/8 (class 0 rows), 1/4 (classes 1..3); seen-correct within S:
    # row 0 (1/8, δ 5), row 2 (1/4, δ 2), row 4 (1/4, δ 3).  Unseen-correct: row 5 (1/2,
    # δ -1) beats all three: 5/8; row 6 (1/2, δ 2) only δ 5 and 3 (δ 2 ties, counts 0): 3/8.
    # AUSUC = 1/2 · 5/8 + 1/2 · 3/8 = 1/2
    assert ev.ausuc == pytest.approx(1 / 2, abs=1e-15)


def test_time_step_T_has_no_unseen_classes() -> None:
    ev = _evaluate(3)
    # all seen: 1/2, 0, 0, 1, 1, 0 -> SA = JA = 5/12;  U_3 empty -> UA, H, AUSUC NaN
    # tasks restricted: task 1 class 0 1/2, class 1 0 -> 1/4; task 2 0, 1 -> 1/2; task 3 1, 0 -> 1/2
    assert ev.seen_accuracy == pytest.approx(5 / 12, abs=1e-15)
    assert ev.joint_accuracy == pytest.approx(5 / 12, abs=1e-15)
    assert math.isnan(ev.unseen_accuracy) and math.isnan(ev.harmonic) and math.isnan(ev.ausuc)
    assert ev.task_accuracies == pytest.approx([1 / 4, 1 / 2, 1 / 2], abs=1e-15)


def test_time_step_0_has_no_seen_classes() -> None:
    ev = evaluate_time_step(LOGITS[1], LABELS, TASKS, 0)
    # S_0 empty: SA, H, AUSUC NaN; every class unseen: UA = JA = 5/12 (as at t = 1)
    assert math.isnan(ev.seen_accuracy) and math.isnan(ev.harmonic) and math.isnan(ev.ausuc)
    assert ev.unseen_accuracy == pytest.approx(5 / 12, abs=1e-15)
    assert ev.joint_accuracy == ev.unseen_accuracy
    assert ev.task_accuracies == [] and ev.time_step == 0


def test_summarize_the_hand_computed_run() -> None:
    s = summarize([_evaluate(t) for t in (1, 2, 3)])
    # mSA = (3/4 + 5/8 + 5/12) / 3 = (18 + 15 + 10)/24 / 3 = 43/72
    # mUA = (1/4 + 1/2) / 2 = 3/8;  mH = (3/8 + 5/9) / 2 = 67/144;  mAUC = (9/16 + 1/2)/2 = 17/32
    # mJA = (5/12 + 7/12 + 5/12) / 3 = 17/36
    # forgetting: task 1 max(3/4, 1) - 1/4 = 3/4 (best at the intermediate t = 2);
    # task 2 max(1/2) - 1/2 = 0  ->  (3/4 + 0) / 2 = 3/8
    expected = (43 / 72, 3 / 8, 67 / 144, 17 / 32, 17 / 36, 3 / 8)
    assert dataclasses.astuple(s)[:6] == pytest.approx(expected, abs=1e-15)
    assert math.isnan(s.mUA_from_0) and math.isnan(s.mAUC_from_0)  # no t = 0 evaluation given


def test_the_authors_variants_of_the_hand_computed_run() -> None:
    """Generalized sample-mean accuracy per task (rows of LOGITS by hand):
    t = 1: task 1 2/3 (y0 ok, y0 wrong, y1 ok), task 2 1/2, task 3 0;
    t = 2: 2/3, 1/2, 1/2;   t = 3: 1/3, 1/2, 1/2.
    forgetting_authors: t = 2: max(2/3) - 2/3 = 0;  t = 3: task 1 max(2/3, 2/3) - 1/3 = 1/3,
    task 2 max(1/2, 1/2) - 1/2 = 0 -> 1/6;  mean over t = 2, 3: 1/12.
    With LOGITS[1] as the t = 0 evaluation (UA_0 = 5/12, test_time_step_0_has_no_seen_classes):
    mUA_from_0 = (5/12 + 1/4 + 1/2) / 3 = 7/18;  mAUC_from_0 = (5/12 + 9/16 + 1/2) / 3 = 71/144."""
    evs = [_evaluate(t) for t in (1, 2, 3)]
    assert [a for ev in evs for a in ev.generalized_task_accuracies] == pytest.approx(
        [2 / 3, 1 / 2, 0.0, 2 / 3, 1 / 2, 1 / 2, 1 / 3, 1 / 2, 1 / 2], abs=1e-15)
    s = summarize(evs, before=evaluate_time_step(LOGITS[1], LABELS, TASKS, 0))
    assert s.forgetting_authors == pytest.approx(1 / 12, abs=1e-15)
    assert s.mUA_from_0 == pytest.approx(7 / 18, abs=1e-15)
    assert s.mAUC_from_0 == pytest.approx(71 / 144, abs=1e-15)
    assert s.forgetting == pytest.approx(3 / 8, abs=1e-15)  # the toolkit's, unchanged
    with pytest.raises(ValueError, match="before must be the TaskEvaluation at t = 0"):
        summarize(evs, before=evs[0])


# -- the authors' sample means ---------------------------------------------------------------
# T = 2 tasks {0, 1}, {2, 3}; class 0 has 3 test samples, class 1 one, class 2 one, class 3
# three: per-class and sample means differ.  Logits are one-hot on the prediction.
UNBALANCED_TASKS = [T([0, 1]), T([2, 3])]
UNBALANCED_LABELS = T([0, 0, 0, 1, 2, 3, 3, 3])
UNBALANCED_PREDICTIONS = {
    0: [0, 0, 0, 0, 1, 3, 3, 3],  # c0 3/3, c1 0/1, c2 0/1, c3 3/3
    1: [0, 0, 0, 0, 2, 3, 0, 0],  # c0 3/3, c1 0/1 | c2 1/1, c3 1/3
    2: [0, 0, 0, 0, 2, 3, 3, 3],  # c0 3/3, c1 0/1, c2 1/1, c3 3/3
}


def _unbalanced(t: int) -> TaskEvaluation:
    logits = torch.nn.functional.one_hot(T(UNBALANCED_PREDICTIONS[t]), 4).double()
    return evaluate_time_step(logits, UNBALANCED_LABELS, UNBALANCED_TASKS, t)


def test_sample_means_by_hand_where_they_differ_from_per_class_means() -> None:
    """t = 0: every class unseen: per class (1 + 0 + 0 + 1)/4 = 1/2, samples 6/8 = 3/4.
    t = 1: seen {0, 1}: per class (1 + 0)/2 = 1/2, samples 3/4 (class 0's three right, class 1's
    one wrong); unseen {2, 3}: per class (1 + 1/3)/2 = 2/3, samples 2/4 = 1/2;
    H per class 2·(1/2)(2/3)/(7/6) = 4/7, H samples 2·(3/4)(1/2)/(5/4) = 3/5.
    t = 2: all seen: per class (1 + 0 + 1 + 1)/4 = 3/4, samples 7/8."""
    e0, e1, e2 = (_unbalanced(t) for t in (0, 1, 2))
    assert (e0.unseen_accuracy, e0.unseen_accuracy_samples) == (1 / 2, 3 / 4)
    assert math.isnan(e0.seen_accuracy_samples) and math.isnan(e0.harmonic_samples)
    assert (e1.seen_accuracy, e1.seen_accuracy_samples) == (1 / 2, 3 / 4)
    assert e1.unseen_accuracy == pytest.approx(2 / 3, abs=1e-15) and e1.unseen_accuracy_samples == 1 / 2
    assert e1.harmonic == pytest.approx(4 / 7, abs=1e-15) and e1.harmonic_samples == 3 / 5
    assert (e2.seen_accuracy, e2.seen_accuracy_samples) == (3 / 4, 7 / 8)
    assert math.isnan(e2.unseen_accuracy_samples) and math.isnan(e2.harmonic_samples)
    # mSA_samples = (3/4 + 7/8)/2 = 13/16 (per class (1/2 + 3/4)/2 = 5/8)
    # mUA_from_0_samples = (UA_0 + UA_1)/2 = (3/4 + 1/2)/2 = 5/8 (per class (1/2 + 2/3)/2 = 7/12)
    # mH_samples = H_1 = 3/5, the only step t = 1..T-1 (per class 4/7)
    s = summarize([e1, e2], before=e0)
    assert (s.mSA_samples, s.mUA_from_0_samples, s.mH_samples) == (13 / 16, 5 / 8, 3 / 5)
    assert (s.mSA, s.mUA_from_0, s.mH) == pytest.approx((5 / 8, 7 / 12, 4 / 7), abs=1e-15)  # unchanged
    assert s.percent()["mSA_samples"] == 100 * 13 / 16
    without_before = summarize([e1, e2])  # the unseen range starts at t = 0: NaN without it
    assert math.isnan(without_before.mUA_from_0_samples) and without_before.mH_samples == 3 / 5


def test_sample_means_of_the_hand_computed_run() -> None:
    """Rows of LOGITS, correct or not under the argmax over all 6 columns:
    t = 1: seen rows 0-2 ok, wrong, ok -> 2/3; unseen rows 3-6 wrong, ok, wrong, wrong -> 1/4;
           H = 2·(2/3)(1/4)/(11/12) = 4/11.
    t = 2: seen rows 0-4 ok, wrong, ok, wrong, ok -> 3/5; unseen rows 5, 6 ok, wrong -> 1/2;
           H = 2·(3/10)/(11/10) = 6/11.
    t = 3: all rows: wrong, ok, wrong, wrong, ok, ok, wrong -> 3/7.
    t = 0 (LOGITS[1]): all rows unseen: ok, wrong, ok, wrong, ok, wrong, wrong -> 3/7.
    mSA_samples = (2/3 + 3/5 + 3/7)/3 = 178/315;  mUA_from_0_samples = (3/7 + 1/4 + 1/2)/3
    = 11/28;  mH_samples = (4/11 + 6/11)/2 = 5/11."""
    evs = [_evaluate(t) for t in (1, 2, 3)]
    assert [ev.seen_accuracy_samples for ev in evs] == pytest.approx([2 / 3, 3 / 5, 3 / 7], abs=1e-15)
    assert [ev.unseen_accuracy_samples for ev in evs[:2]] == pytest.approx([1 / 4, 1 / 2], abs=1e-15)
    assert [ev.harmonic_samples for ev in evs[:2]] == pytest.approx([4 / 11, 6 / 11], abs=1e-15)
    s = summarize(evs, before=evaluate_time_step(LOGITS[1], LABELS, TASKS, 0))
    assert (s.mSA_samples, s.mUA_from_0_samples, s.mH_samples) == pytest.approx(
        (178 / 315, 11 / 28, 5 / 11), abs=1e-15)


@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(1, 4), per_class=st.integers(1, 3))
def test_sample_means_equal_the_per_class_means_when_the_classes_are_balanced(
        seed: int, num_tasks: int, per_class: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_classes = 2 * num_tasks
    tasks = list(torch.randperm(num_classes, generator=g).split(2))
    labels = torch.arange(num_classes).repeat(per_class)  # every class per_class times
    evaluations = [  # fresh logits at every step t = 0..T, small integers: ties
        evaluate_time_step(torch.randint(0, 4, (labels.numel(), num_classes), generator=g).float(), labels, tasks, t)
        for t in range(num_tasks + 1)]
    for ev in evaluations:
        pairs = [(ev.seen_accuracy, ev.seen_accuracy_samples), (ev.unseen_accuracy, ev.unseen_accuracy_samples),
                 (ev.harmonic, ev.harmonic_samples)]
        for per_class_mean, sample_mean in pairs:
            assert sample_mean == pytest.approx(per_class_mean, abs=1e-12, nan_ok=True)
    s = summarize(evaluations[1:], before=evaluations[0])
    assert (s.mSA_samples, s.mUA_from_0_samples, s.mH_samples) == pytest.approx(
        (s.mSA, s.mUA_from_0, s.mH), abs=1e-12, nan_ok=True)


def test_forgetting_authors_takes_the_maximum_over_every_earlier_step() -> None:
    """Task 2 scores 0.9 at t = 1, before it is learned: the authors' maximum includes that
    step (0.9 - 0.4 = 0.5 at t = 3, not 0.5 - 0.4 = 0.1).  t = 2: task 1 0.8 - 0.6 = 0.2;
    t = 3: task 1 max(0.8, 0.6) - 0.7 = 0.1, task 2 0.5 -> 0.3;  mean (0.2 + 0.3) / 2 = 0.25."""
    history = [[0.8, 0.9, 0.1], [0.6, 0.5, 0.2], [0.7, 0.4, 0.9]]
    assert forgetting_authors(history) == pytest.approx(0.25, abs=1e-15)
    assert forgetting_authors([[0.4]]) == 0.0
    with pytest.raises(ValueError, match="square T x T table"):
        forgetting_authors([[0.1, 0.2], [0.3]])


def _ev(seen: float, unseen: float, harmonic: float, auc: float, joint: float,
        tasks: list[float]) -> TaskEvaluation:
    return TaskEvaluation(seen, unseen, harmonic, auc, joint, tasks)


def test_summarize_hand_built_evaluations() -> None:
    evs = [
        _ev(0.8, 0.1, 0.2, 0.05, 0.3, [0.9]),
        _ev(0.6, 0.3, 0.4, 0.15, 0.5, [0.5, 0.8]),
        _ev(0.5, 0.2, 0.3, 0.10, 0.4, [0.7, 0.6, 0.7]),
        _ev(0.4, NAN, NAN, NAN, 0.4, [0.6, 0.6, 0.5, 0.9]),
    ]
    s = summarize(evs)
    # mSA = (0.8 + 0.6 + 0.5 + 0.4)/4 = 0.575;  mUA over t = 1..3: 0.6/3 = 0.2
    # mH = (0.2 + 0.4 + 0.3)/3 = 0.3;  mAUC = 0.3/3 = 0.1;  mJA = 1.6/4 = 0.4
    # forgetting (a_{T,i} = 0.6, 0.6, 0.5): task 1 max(0.9, 0.5, 0.7) - 0.6 = 0.3;
    # task 2 max(0.8, 0.6) - 0.6 = 0.2; task 3 max(0.7) - 0.5 = 0.2 -> 0.7/3
    expected = (0.575, 0.2, 0.3, 0.1, 0.4, 0.7 / 3)
    assert dataclasses.astuple(s)[:6] == pytest.approx(expected, abs=1e-12)
    assert math.isnan(s.forgetting_authors)  # built by hand without generalized task accuracies
    assert s.percent() == pytest.approx(
        {"mSA": 57.5, "mUA": 20.0, "mH": 30.0, "mAUC": 10.0, "mJA": 40.0, "forgetting": 70 / 3,
         "mUA_from_0": NAN, "mAUC_from_0": NAN, "forgetting_authors": NAN, "mSA_samples": NAN,
         "mUA_from_0_samples": NAN, "mH_samples": NAN}, abs=1e-10, nan_ok=True)


def test_forgetting_uses_the_best_intermediate_step_and_can_be_negative() -> None:
    # task 1: 0.2 at t = 1, best 0.9 at t = 2, 0.4 at the end: f_1 = 0.9 - 0.4 = 0.5
    evs = [_ev(0.5, 0.5, 0.5, 0.2, 0.5, [0.2]), _ev(0.5, 0.5, 0.5, 0.2, 0.5, [0.9, 0.3]),
           _ev(0.5, NAN, NAN, NAN, 0.5, [0.4, 0.3, 0.5])]
    # task 2: max(0.3) - 0.3 = 0  ->  forgetting = 0.5 / 2 = 0.25
    assert summarize(evs).forgetting == pytest.approx(0.25, abs=1e-15)
    # backward transfer: task 1 ends at 0.6 > its earlier best 0.4: f_1 = -0.2 (not clipped)
    evs = [_ev(0.5, 0.5, 0.5, 0.2, 0.5, [0.4]), _ev(0.5, NAN, NAN, NAN, 0.5, [0.6, 0.5])]
    assert summarize(evs).forgetting == pytest.approx(-0.2, abs=1e-15)


def test_single_task() -> None:
    # T = 1: t = 1 = T has no unseen classes; mUA, mH, mAUC average no step (NaN); no forgetting
    logits, labels = T([[2.0, 1.0], [2.0, 3.0], [0.0, 1.0]]), T([0, 1, 0])
    ev = evaluate_time_step(logits, labels, [T([0, 1])], 1)
    # preds 0, 1, 1: class 0 1/2, class 1 1 -> 3/4 (seen = joint = its own task)
    assert (ev.seen_accuracy, ev.joint_accuracy) == pytest.approx((3 / 4, 3 / 4), abs=1e-15)
    assert ev.task_accuracies == pytest.approx([3 / 4], abs=1e-15)
    assert math.isnan(ev.unseen_accuracy) and math.isnan(ev.ausuc)
    s = summarize([ev])
    assert s.mSA == s.mJA == pytest.approx(3 / 4, abs=1e-15)
    assert math.isnan(s.mUA) and math.isnan(s.mH) and math.isnan(s.mAUC)
    assert s.forgetting == 0.0


def test_dataclasses_are_frozen() -> None:
    ev, s = _evaluate(1), CZSLSummary(0.1, 0.2, 0.3, 0.4, 0.5, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.seen_accuracy = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.mSA = 0.0  # type: ignore[misc]


# -- consistency with analysis.metrics ---------------------------------------------------
@pytest.mark.parametrize("t", [1, 2])
def test_matches_gzsl_accuracies_and_ausuc_on_the_example(t: int) -> None:
    _check_against_analysis_metrics(LOGITS[t], LABELS, TASKS, t)


@given(seed=st.integers(0, 2**31 - 1), num_tasks=st.integers(2, 4), t=st.integers(1, 3))
def test_matches_gzsl_accuracies_and_ausuc_on_random_runs(seed: int, num_tasks: int, t: int) -> None:
    g = torch.Generator().manual_seed(seed)
    num_classes = 2 * num_tasks
    tasks = list(torch.randperm(num_classes, generator=g).split(2))  # unsorted, shuffled
    labels = torch.cat([torch.arange(num_classes), torch.randint(num_classes, (12,), generator=g)])
    logits = torch.randint(0, 4, (labels.numel(), num_classes), generator=g).float()  # ties
    _check_against_analysis_metrics(logits, labels, tasks, min(t, num_tasks - 1))


def _check_against_analysis_metrics(
    logits: torch.Tensor, labels: torch.Tensor, tasks: list[torch.Tensor], t: int
) -> None:
    ev = evaluate_time_step(logits, labels, tasks, t)
    seen, unseen = torch.cat(tasks[:t]), torch.cat(tasks[t:])
    s = torch.isin(labels, seen)
    args = (logits[s], labels[s], logits[~s], labels[~s])
    ref = gzsl_accuracies(*args, seen, seen_logit_scale=1.0)
    assert (ev.seen_accuracy, ev.unseen_accuracy, ev.harmonic) == (ref.seen, ref.unseen, ref.harmonic)
    assert ev.ausuc == ausuc(*args, seen, unseen)


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("logits", "labels", "tasks", "t", "error", "match"), [
    (T([1.0, 2.0]), T([0, 1]), TASKS, 1, ValueError, r"logits must be a 2-D \[n, C\] tensor.*got \(2,\)"),
    ([[1.0, 2.0]], T([0]), TASKS, 1, ValueError, r"logits must be a 2-D .* got list"),
    (torch.zeros(0, 6), T([], dtype=torch.int64), TASKS, 1, ValueError, r"logits is empty \(shape \(0, 6\)\)"),
    (torch.full((7, 6), NAN), LABELS, TASKS, 1, ValueError, r"logits holds NaN or infinite"),
    (LOGITS[1], LABELS.float(), TASKS, 1, TypeError, r"labels must be a 1-D integer tensor.*torch.float32"),
    (LOGITS[1], LABELS[:5], TASKS, 1, ValueError, r"labels has 5 entries but logits has 7 rows"),
    (LOGITS[1], LABELS, [], 1, ValueError, r"task_classes must be a non-empty list"),
    (LOGITS[1], LABELS, T([0, 1]), 1, ValueError, r"task_classes must be a non-empty list"),
    (LOGITS[1], LABELS, [T([0, 1]), [2, 3], T([4, 5])], 1, TypeError,
     r"task_classes\[1\] must be a 1-D integer tensor, got list"),
    (LOGITS[1], LABELS, [T([0, 1]), T([2, 3]), T([4, 5]), T([], dtype=torch.int64)], 1, ValueError,
     r"task_classes\[3\] is empty"),
    (LOGITS[1], LABELS, [T([0, 1]), T([2, 3]), T([4, 6])], 1, ValueError,
     r"task_classes\[2\] holds class 6, outside the 6 logit columns"),
    (LOGITS[1], LABELS, [T([0, 1]), T([1, 2, 3]), T([4, 5])], 1, ValueError,
     r"class 1 is in task_classes\[0\] and task_classes\[1\]; tasks must be disjoint"),
    (LOGITS[1], LABELS, [T([0, 1]), T([2, 3, 3]), T([4, 5])], 1, ValueError,
     r"class 3 is in task_classes\[1\] \(twice\)"),
    (LOGITS[1], LABELS, [T([0, 1]), T([2, 3]), T([5])], 1, ValueError,
     r"classes \[4\] of the 6 logit columns are in no task"),
    (LOGITS[1], T([0, 0, 1, 2, 3, 4, 6]), TASKS, 1, ValueError, r"labels holds class 6, which is in no task"),
    (LOGITS[1], T([0, 0, 1, 2, 3, 4, -1]), TASKS, 1, ValueError, r"labels holds class -1, which is in no task"),
    (LOGITS[1], T([0, 0, 1, 2, 3, 5, 5]), [T([0, 1]), T([2, 3]), T([4]), T([5])], 1, ValueError,
     r"task 3 \(task_classes\[2\]\) has no test sample"),
    (LOGITS[1], LABELS, TASKS, 1.0, TypeError, r"t must be an int .* got float 1.0"),
    (LOGITS[1], LABELS, TASKS, True, TypeError, r"t must be an int .* got bool"),
    (LOGITS[1], LABELS, TASKS, 4, ValueError, r"t = 4 is outside \[0, 3\]"),
    (LOGITS[1], LABELS, TASKS, -1, ValueError, r"t = -1 is outside \[0, 3\]"),
])
def test_evaluate_time_step_errors(
    logits: object, labels: object, tasks: object, t: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        evaluate_time_step(logits, labels, tasks, t)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"seen_accuracy": 75.0}, r"seen_accuracy must be a fraction in \[0, 1\] or NaN, got 75.0; .*not percent"),
    ({"ausuc": -0.1}, r"ausuc must be a fraction in \[0, 1\] or NaN, got -0.1"),
    ({"joint_accuracy": NAN}, r"joint_accuracy must be a fraction in \[0, 1\], got nan"),
    ({"seen_accuracy_samples": 75.0}, r"seen_accuracy_samples must be a fraction in \[0, 1\] or NaN, got 75.0"),
    ({"harmonic_samples": -0.5}, r"harmonic_samples must be a fraction in \[0, 1\] or NaN, got -0.5"),
    ({"task_accuracies": [0.5, 1.5]}, r"task_accuracies\[1\] must be a fraction in \[0, 1\], got 1.5"),
])
def test_task_evaluation_rejects_out_of_range_values(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"seen_accuracy": 0.5, "unseen_accuracy": 0.5, "harmonic": 0.5,
                               "ausuc": 0.2, "joint_accuracy": 0.5, "task_accuracies": [0.5]}
    with pytest.raises(ValueError, match=match):
        TaskEvaluation(**{**base, **kwargs})  # type: ignore[arg-type]


def test_summarize_errors() -> None:
    e1, e2, e3 = (_evaluate(t) for t in (1, 2, 3))
    with pytest.raises(ValueError, match=r"evaluations is empty; pass the TaskEvaluation of each"):
        summarize([])
    with pytest.raises(TypeError, match=r"evaluations must be a list of TaskEvaluation, got TaskEvaluation"):
        summarize(e1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"evaluations\[1\] is a dict, not a TaskEvaluation"):
        summarize([e1, {}])  # type: ignore[list-item]
    e0 = evaluate_time_step(LOGITS[1], LABELS, TASKS, 0)
    with pytest.raises(ValueError, match=r"evaluations\[0\] is at time step t = 0 .*expected t = 1.*without t = 0"):
        summarize([e0, e1, e2, e3])
    with pytest.raises(ValueError, match=r"evaluations\[1\] is at time step t = 3 .*expected t = 2"):
        summarize([e1, e3, e2])
    with pytest.raises(ValueError, match=r"the last evaluation \(t = 2\) still has unseen classes"):
        summarize([e1, e2])  # stops before T = 3
    no_auc = dataclasses.replace(e2, ausuc=NAN)
    with pytest.raises(ValueError, match=r"evaluations\[1\] \(t = 2 of T = 3\) has ausuc = nan"):
        summarize([e1, no_auc, e3])
    no_seen = dataclasses.replace(e3, seen_accuracy=NAN)
    with pytest.raises(ValueError, match=r"evaluations\[2\] \(t = 3 of T = 3\) has seen_accuracy = nan"):
        summarize([e1, e2, no_seen])
