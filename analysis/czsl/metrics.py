"""CZSL metrics (docs/science.md section 6.3): mSA, mUA, mH, mAUC, mJA and forgetting of a single-head model,
per-class means and the authors' sample means.

Setting: ``T`` tasks, each a disjoint set of classes, together covering all ``C`` logit
columns.  After learning tasks ``1..t`` the model scores the test samples of **every**
class over all ``C`` classes (``logits [n, C]``); with ``S_t`` = classes of tasks ``1..t``
(seen) and ``U_t`` = classes of tasks ``t+1..T`` (unseen):

* **generalized prediction** ``ŷ_n = argmax_{c < C} logit_{n,c}`` (full label space, no
  calibration: the same as :func:`analysis.metrics.gzsl_accuracies` with
  ``seen_logit_scale=1.0``; ties go to the lowest class index);
* **seen accuracy** ``SA_t``: per-class mean accuracy of ``ŷ`` on the test samples of
  ``S_t`` (:func:`analysis.metrics.per_class_accuracy`); **unseen accuracy** ``UA_t``
  likewise on ``U_t``; ``H_t = harmonic_mean(SA_t, UA_t)``;
* **AUSUC** ``AUC_t``: :func:`analysis.metrics.ausuc` with seen ``S_t``, unseen ``U_t``;
* **joint accuracy** ``JA_t``: per-class mean accuracy of ``ŷ`` on all test samples;
* **task-restricted accuracy** ``a_{t,i}`` (``i ≤ t``): accuracy on task i's test samples
  with the argmax restricted to task i's classes (:func:`analysis.metrics.zsl_accuracy`).

At ``t = 0`` (before training) ``S_0`` is empty: ``SA``, ``H`` and ``AUC`` are NaN and
``UA_0 = JA_0``.  At ``t = T`` ``U_T`` is empty: ``UA``, ``H`` and ``AUC`` are NaN and
``SA_T = JA_T``.  :func:`summarize` averages over the time steps where each is defined::

    mSA = mean_{t=1..T} SA_t         mUA  = mean_{t=1..T-1} UA_t
    mH  = mean_{t=1..T-1} H_t        mAUC = mean_{t=1..T-1} AUC_t
    mJA = mean_{t=1..T} JA_t
    forgetting = mean_{i=1..T-1} ( max_{l=i..T-1} a_{l,i} - a_{T,i} )   (Chaudhry et al. 2018)

With ``T = 1`` mUA, mH and mAUC average over no time step and are NaN; forgetting is 0.

The authors' code (universome/class-norm, ``src/utils/metrics.py`` and
``src/trainers/lll_trainer.py``) defines two of these differently; both variants are
reported, under their own names:

* **averaging range**: it also evaluates the model before any training (``t = 0``) and
  averages unseen accuracy and AUSUC over ``t = 0..T-1``: ``mUA_from_0`` and
  ``mAUC_from_0``, with ``AUC_0 = UA_0`` (with no seen class the seen-unseen curve is the
  single point (UA_0, 0) joined to (0, 1)... its area is UA_0, as in their ``compute_ausuc``);
* **forgetting** on *generalized* accuracies ``A_{l,j}`` (argmax over all C classes,
  sample mean over task j's test samples; :attr:`TaskEvaluation.generalized_task_accuracies`),
  against the maximum over **all** earlier steps, averaged over time::

      forgetting_authors = mean_{t=2..T} mean_{j=1..t-1} ( max_{l=1..t-1} A_{l,j} - A_{t,j} )

  (0 when T = 1).  The maximum also runs over steps before task j was learned, as theirs does.

* **sample means**: their seen and unseen accuracies (``compute_acc_for_classes`` with
  ``restrict_space=False``) are the fraction of correctly classified test samples, with no
  per-class balancing.  From the same generalized predictions ``ŷ`` as ``SA_t`` and
  ``UA_t``, with ``n_S`` and ``n_U`` the numbers of test samples of the classes in ``S_t``
  and ``U_t``::

      SA_t^sample = (1/n_S) Σ_{n: y_n ∈ S_t} [ŷ_n = y_n]     t = 1..T    (NaN at t = 0)
      UA_t^sample = (1/n_U) Σ_{n: y_n ∈ U_t} [ŷ_n = y_n]     t = 0..T-1  (NaN at t = T)
      H_t^sample  = harmonic_mean(SA_t^sample, UA_t^sample)  t = 1..T-1

      mSA_samples        = mean_{t=1..T}   SA_t^sample
      mUA_from_0_samples = mean_{t=0..T-1} UA_t^sample
      mH_samples         = mean_{t=1..T-1} H_t^sample

  Ranges and order as in their ``LLLTrainer`` (universome/class-norm, commit 0a4cdd6):
  the unseen accuracies come from the logits saved before every task, ``t = 0..T-1``,
  and the printed mean runs over those T values (hence ``_from_0``, as ``mUA_from_0``);
  the seen accuracies come from the logits after every task, ``t = 1..T``.  The harmonic
  mean is taken **per step**, from the two sample means at the same ``t = 1..T-1``
  (``compute_harmonic_mean_accuracy``), **then** averaged over the steps (``np.mean`` in
  ``src/run.py``): the order of the toolkit's ``mH``.  Their code never averages the seen
  accuracies; ``mSA_samples`` takes the range where they are defined, as ``mSA`` does.
  Their harmonic mean adds 1e-8 to the denominator, which is left out here (a relative
  difference below ``1e-8 / (SA + UA)``; both give 0 when SA = UA = 0).  With equally
  many test samples in every class each sample mean equals its per-class mean.  AUSUC and
  joint accuracy have no sample-mean variant here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from analysis.metrics import ausuc, harmonic_mean, per_class_accuracy, zsl_accuracy

__all__ = ["CZSLSummary", "TaskEvaluation", "evaluate_time_step", "forgetting_authors", "summarize"]


@dataclass(frozen=True)
class TaskEvaluation:
    """Metrics after learning tasks ``1..t``, fractions in [0, 1] (definitions: module docstring).

    The time step is ``t = len(task_accuracies)`` (:attr:`time_step`).

    Raises:
        ValueError: if a metric lies outside [0, 1], or is NaN where it is always defined
            (``joint_accuracy`` and every task accuracy).
    """

    seen_accuracy: float  # SA_t on S_t = tasks 1..t, argmax over all C; NaN at t = 0
    unseen_accuracy: float  # UA_t on U_t = tasks t+1..T, argmax over all C; NaN at t = T
    harmonic: float  # H_t = 2 SA UA / (SA + UA); NaN when SA_t or UA_t is NaN
    ausuc: float  # AUC_t between S_t and U_t; NaN when either is empty (t = 0 or T)
    joint_accuracy: float  # JA_t on all test samples, argmax over all C
    task_accuracies: list[float]  # [t] a_{t,i}, i = 1..t: argmax restricted to task i
    # [T] A_{t,j}, j = 1..T: argmax over all C, sample mean over task j's test samples (the
    # authors' forgetting); empty when the evaluation was built by hand without them
    generalized_task_accuracies: list[float] = field(default_factory=list)
    # the authors' sample means (module docstring) from the same predictions: fraction of
    # correct test samples, no per-class balancing; NaN where the per-class one is NaN, or
    # when the evaluation was built by hand without them
    seen_accuracy_samples: float = math.nan  # SA_t^sample on the samples of S_t
    unseen_accuracy_samples: float = math.nan  # UA_t^sample on the samples of U_t
    harmonic_samples: float = math.nan  # H_t^sample = harmonic mean of the two sample means

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_accuracies", [float(a) for a in self.task_accuracies])
        object.__setattr__(self, "generalized_task_accuracies", [float(a) for a in self.generalized_task_accuracies])
        for f in fields(self):
            values = getattr(self, f.name)
            nan_ok = f.name in ("seen_accuracy", "unseen_accuracy", "harmonic", "ausuc", "seen_accuracy_samples",
                                "unseen_accuracy_samples", "harmonic_samples")
            for k, v in enumerate(values if isinstance(values, list) else [values]):
                name = f"{f.name}[{k}]" if isinstance(values, list) else f.name
                if not ((nan_ok and math.isnan(v)) or 0.0 <= v <= 1.0):
                    raise ValueError(
                        f"{name} must be a fraction in [0, 1]{' or NaN' if nan_ok else ''}, "
                        f"got {v!r}; pass accuracies as fractions, not percent"
                    )

    @property
    def time_step(self) -> int:
        """``t``, the number of tasks learned: one task-restricted accuracy per learned task."""
        return len(self.task_accuracies)


@dataclass(frozen=True)
class CZSLSummary:
    """Time-step averages of a CZSL run, fractions (definitions: module docstring).

    ``forgetting`` lies in [-1, 1]: it is negative when later tasks *raised* the final
    task-restricted accuracy of earlier tasks above their best earlier value (Chaudhry
    et al. 2018 do not clip it).  mUA, mH, mAUC and mH_samples are NaN for a single task.
    """

    mSA: float  # mean_{t=1..T} seen accuracy
    mUA: float  # mean_{t=1..T-1} unseen accuracy
    mH: float  # mean_{t=1..T-1} harmonic mean
    mAUC: float  # mean_{t=1..T-1} AUSUC
    mJA: float  # mean_{t=1..T} joint accuracy
    forgetting: float  # mean_{i<T} max_{i<=l<T} a_{l,i} - a_{T,i}; 0 when T = 1
    # the authors' definitions (module docstring); NaN when the inputs they need are missing
    mUA_from_0: float = math.nan  # mean_{t=0..T-1} unseen accuracy
    mAUC_from_0: float = math.nan  # mean_{t=0..T-1} AUSUC, AUC_0 = UA_0
    forgetting_authors: float = math.nan  # generalized accuracies, max over all earlier steps, mean over t
    mSA_samples: float = math.nan  # mean_{t=1..T} SA_t^sample (sample mean, not per class)
    mUA_from_0_samples: float = math.nan  # mean_{t=0..T-1} UA_t^sample
    mH_samples: float = math.nan  # mean_{t=1..T-1} H_t^sample (harmonic per step, then the mean)

    def percent(self) -> dict[str, float]:
        """Every metric times 100, keyed by field name (the paper prints forgetting as a
        fraction, e.g. 0.17, which is 17 here)."""
        return {f.name: 100.0 * getattr(self, f.name) for f in fields(self)}


# -- validation ------------------------------------------------------------------------
def _is_index_vector(x: object) -> bool:
    return (
        isinstance(x, Tensor) and x.ndim == 1
        and not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool)
    )


def _check_inputs(
    logits: Tensor, labels: Tensor, task_classes: Sequence[Tensor], t: int
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """Validated float64 logits, labels, tasks (sorted, on the logits' device) and ``[n]``
    task index (0-based) of every test sample."""
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"logits must be a 2-D [n, C] tensor over all C classes, got {got}; "
            "score every test sample against every class"
        )
    if logits.numel() == 0:
        raise ValueError(f"logits is empty (shape {tuple(logits.shape)}); pass at least one sample")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits holds NaN or infinite values; check the model's outputs")
    n, num_classes = logits.shape
    device = logits.device
    if not _is_index_vector(labels):
        got = f"shape {tuple(labels.shape)}, dtype {labels.dtype}" if isinstance(labels, Tensor) \
            else type(labels).__name__
        raise TypeError(f"labels must be a 1-D integer tensor, got {got}; use labels.reshape(-1).long()")
    if labels.numel() != n:
        raise ValueError(
            f"labels has {labels.numel()} entries but logits has {n} rows; pass one label per row"
        )
    if isinstance(task_classes, Tensor) or not isinstance(task_classes, Sequence) or not task_classes:
        raise ValueError(
            f"task_classes must be a non-empty list of T class-index tensors, got {task_classes!r}; "
            "e.g. ContinualSplit.task_classes"
        )
    tasks: list[Tensor] = []
    for i, c in enumerate(task_classes):
        if not _is_index_vector(c):
            raise TypeError(
                f"task_classes[{i}] must be a 1-D integer tensor, got {type(c).__name__}"
                f"{f' of shape {tuple(c.shape)}, dtype {c.dtype}' if isinstance(c, Tensor) else ''}; "
                "use torch.as_tensor(classes).reshape(-1).long()"
            )
        if c.numel() == 0:
            raise ValueError(f"task_classes[{i}] is empty; every task needs at least one class")
        c = c.to(device).sort().values
        if int(c[0]) < 0 or int(c[-1]) >= num_classes:
            raise ValueError(
                f"task_classes[{i}] holds class {int(c[0]) if int(c[0]) < 0 else int(c[-1])}, "
                f"outside the {num_classes} logit columns; use 0-based column indices"
            )
        tasks.append(c)
    owner = torch.full((num_classes,), -1, dtype=torch.int64, device=device)  # [C] task of class
    for i, c in enumerate(tasks):
        taken = c[owner[c] >= 0]
        if taken.numel() == 0 and c.numel() > 1:
            taken = c[1:][c[1:] == c[:-1]]  # repeated inside the task itself
        if taken.numel() > 0:
            j = int(owner[taken[0]])
            where = f"task_classes[{j}] and task_classes[{i}]" if j >= 0 else f"task_classes[{i}] (twice)"
            raise ValueError(
                f"class {int(taken[0])} is in {where}; tasks must be disjoint class sets"
            )
        owner[c] = i
    missing = (owner < 0).nonzero().flatten()
    if missing.numel() > 0:
        raise ValueError(
            f"classes {missing.tolist()[:10]} of the {num_classes} logit columns are in no task; "
            "the tasks must partition all C classes of the single head"
        )
    labels = labels.to(device).long()
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        raise ValueError(
            f"labels holds class {int(labels[outside][0])}, which is in no task (classes are "
            f"0..{num_classes - 1}); labels are 0-based column indices"
        )
    label_task = owner[labels]  # [n]
    counts = torch.bincount(label_task, minlength=len(tasks))
    empty = (counts == 0).nonzero().flatten()
    if empty.numel() > 0:
        raise ValueError(
            f"task {int(empty[0]) + 1} (task_classes[{int(empty[0])}]) has no test sample; "
            "every task needs test samples for its accuracies"
        )
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"t must be an int (the number of tasks learned), got {type(t).__name__} {t!r}")
    if not 0 <= t <= len(tasks):
        raise ValueError(
            f"t = {t} is outside [0, {len(tasks)}]; t counts the tasks learned so far "
            f"(0 before training, T = {len(tasks)} at the end)"
        )
    return logits.double(), labels, tasks, label_task


# -- per time step -------------------------------------------------------------------------
def evaluate_time_step(
    logits: Tensor, labels: Tensor, task_classes: Sequence[Tensor], t: int
) -> TaskEvaluation:
    """All metrics after learning tasks ``1..t`` (definitions and edge cases: module docstring).

    Args:
        logits: ``[n, C]`` scores of every test sample (of every class) over all C classes.
        labels: ``[n]`` integer classes; every task needs at least one test sample.
        task_classes: ``T`` 1-D integer tensors, disjoint, together all of ``0..C-1``,
            in the order the tasks are learned.
        t: number of tasks learned, ``0..T`` (``S_t`` = tasks ``1..t``).

    Returns:
        :class:`TaskEvaluation` with ``t`` task-restricted accuracies; NaN for ``SA``, ``H``,
        ``AUC`` at ``t = 0`` and for ``UA``, ``H``, ``AUC`` at ``t = T`` (per-class and
        sample means alike).

    Raises:
        TypeError: labels or a task not a 1-D integer tensor; ``t`` not an int.
        ValueError: logits not 2-D, empty or non-finite; a label count that differs from
            the rows; no tasks, an empty task, overlapping tasks, a class outside the
            columns or in no task; a label in no task; a task without test samples;
            ``t`` outside ``[0, T]``.
    """
    logits, labels, tasks, label_task = _check_inputs(logits, labels, task_classes, t)
    predictions = logits.argmax(dim=1)  # [n] full label space; first maximum = lowest class
    is_seen = label_task < t  # [n] sample of a class in S_t
    nan = math.nan
    seen = per_class_accuracy(predictions[is_seen], labels[is_seen]) if t > 0 else nan
    unseen = per_class_accuracy(predictions[~is_seen], labels[~is_seen]) if t < len(tasks) else nan
    defined = 0 < t < len(tasks)
    area = nan
    if defined:
        area = ausuc(logits[is_seen], labels[is_seen], logits[~is_seen], labels[~is_seen],
                     torch.cat(tasks[:t]), torch.cat(tasks[t:]))
    task_accuracies = []
    for i in range(t):
        mine = label_task == i
        task_accuracies.append(zsl_accuracy(logits[mine], labels[mine], tasks[i]))
    hits = (predictions == labels).double()  # [n]
    # the authors' sample means: correct samples over samples, every sample weighs the same
    seen_samples = float(hits[is_seen].mean()) if t > 0 else nan
    unseen_samples = float(hits[~is_seen].mean()) if t < len(tasks) else nan
    generalized = (torch.zeros(len(tasks), dtype=torch.float64, device=hits.device).index_add_(0, label_task, hits)
                   / torch.bincount(label_task, minlength=len(tasks)).double())
    return TaskEvaluation(
        seen_accuracy=seen,
        unseen_accuracy=unseen,
        harmonic=harmonic_mean(seen, unseen) if defined else nan,
        ausuc=area,
        joint_accuracy=per_class_accuracy(predictions, labels),
        task_accuracies=task_accuracies,
        generalized_task_accuracies=generalized.tolist(),
        seen_accuracy_samples=seen_samples,
        unseen_accuracy_samples=unseen_samples,
        harmonic_samples=harmonic_mean(seen_samples, unseen_samples) if defined else nan,
    )


# -- over time steps ---------------------------------------------------------------------
def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def forgetting_authors(history: Sequence[Sequence[float]]) -> float:
    """The authors' forgetting from ``history[t-1][j-1] = A_{t,j}``, ``t, j = 1..T``::

        mean_{t=2..T} mean_{j=1..t-1} ( max_{l=1..t-1} A_{l,j} - A_{t,j} )      (0 when T = 1)

    Raises:
        ValueError: ``history`` is not a square ``T x T`` table.
    """
    num_tasks = len(history)
    if any(len(row) != num_tasks for row in history):
        raise ValueError(f"history must be a square T x T table of generalized task accuracies, got rows of "
                         f"lengths {[len(row) for row in history]} for T = {num_tasks}")
    per_step = [
        _mean([max(history[l][j] for l in range(t)) - history[t][j] for j in range(t)])
        for t in range(1, num_tasks)
    ]
    return _mean(per_step) if per_step else 0.0


def summarize(evaluations: Sequence[TaskEvaluation], *, before: TaskEvaluation | None = None) -> CZSLSummary:
    """Time-step averages of the evaluations after tasks ``t = 1..T`` (module docstring).

    ``before``, the evaluation at ``t = 0`` (untrained model), adds the authors'
    ``mUA_from_0``, ``mAUC_from_0`` and ``mUA_from_0_samples``; ``forgetting_authors`` needs
    every evaluation's :attr:`~TaskEvaluation.generalized_task_accuracies`, the sample-mean
    metrics their ``*_samples`` fields (``evaluate_time_step`` fills both).  Each is NaN
    without its input.

    ``T = len(evaluations)``; ``evaluations[t - 1]`` must be the evaluation at time step
    t (``t`` task accuracies), with ``UA`` defined exactly before the last step.  mSA and
    mJA average ``t = 1..T``; mUA, mH and mAUC average ``t = 1..T-1`` (NaN when T = 1).
    Forgetting, with ``a_{l,i} = evaluations[l-1].task_accuracies[i-1]``, is
    ``mean_{i=1..T-1} (max_{l=i..T-1} a_{l,i} - a_{T,i})``, 0 when T = 1.

    Args:
        evaluations: :class:`TaskEvaluation` at ``t = 1..T`` in order (no ``t = 0`` entry).

    Returns:
        :class:`CZSLSummary` of fractions.

    Raises:
        TypeError: an entry is not a :class:`TaskEvaluation`.
        ValueError: no evaluations; an entry at the wrong time step; a metric NaN where it
            is defined; unseen classes left at the last entry (the list stops before T).
    """
    if isinstance(evaluations, TaskEvaluation) or not isinstance(evaluations, Sequence):
        raise TypeError(
            f"evaluations must be a list of TaskEvaluation, got {type(evaluations).__name__}; "
            "wrap a single one in a list"
        )
    if len(evaluations) == 0:
        raise ValueError("evaluations is empty; pass the TaskEvaluation of each time step t = 1..T")
    num_tasks = len(evaluations)
    for k, ev in enumerate(evaluations):
        if not isinstance(ev, TaskEvaluation):
            raise TypeError(f"evaluations[{k}] is a {type(ev).__name__}, not a TaskEvaluation")
        if ev.time_step != k + 1:
            raise ValueError(
                f"evaluations[{k}] is at time step t = {ev.time_step} ({ev.time_step} task "
                f"accuracies), expected t = {k + 1}; pass the evaluations at t = 1..T in order, "
                "without t = 0"
            )
        last = k == num_tasks - 1
        required = ["seen_accuracy", "joint_accuracy"]
        required += [] if last else ["unseen_accuracy", "harmonic", "ausuc"]
        for name in required:
            if math.isnan(getattr(ev, name)):
                raise ValueError(
                    f"evaluations[{k}] (t = {k + 1} of T = {num_tasks}) has {name} = nan, which "
                    "is defined at this time step; build it with evaluate_time_step"
                )
        if last and not math.isnan(ev.unseen_accuracy):
            raise ValueError(
                f"the last evaluation (t = {num_tasks}) still has unseen classes (unseen_accuracy "
                f"= {ev.unseen_accuracy!r}); the list stops before the last task: pass all T time steps"
            )
    head = evaluations[:-1]  # t = 1..T-1
    final = evaluations[-1].task_accuracies  # a_{T,i}
    forgetting = [
        max(evaluations[l].task_accuracies[i] for l in range(i, num_tasks - 1)) - final[i]
        for i in range(num_tasks - 1)
    ]
    if before is not None:
        if not isinstance(before, TaskEvaluation) or before.time_step != 0:
            raise ValueError(f"before must be the TaskEvaluation at t = 0 (no task accuracies), got "
                             f"{before if not isinstance(before, TaskEvaluation) else f't = {before.time_step}'}")
        ua_from_0 = _mean([before.unseen_accuracy] + [ev.unseen_accuracy for ev in head])
        auc_from_0 = _mean([before.unseen_accuracy] + [ev.ausuc for ev in head])
        ua_from_0_samples = _mean([before.unseen_accuracy_samples] + [ev.unseen_accuracy_samples for ev in head])
    else:
        ua_from_0 = auc_from_0 = ua_from_0_samples = math.nan
    history = [ev.generalized_task_accuracies for ev in evaluations]
    by_authors = forgetting_authors(history) if all(len(row) == num_tasks for row in history) else math.nan
    return CZSLSummary(
        mSA=_mean([ev.seen_accuracy for ev in evaluations]),
        mUA=_mean([ev.unseen_accuracy for ev in head]),
        mH=_mean([ev.harmonic for ev in head]),
        mAUC=_mean([ev.ausuc for ev in head]),
        mJA=_mean([ev.joint_accuracy for ev in evaluations]),
        forgetting=_mean(forgetting) if forgetting else 0.0,
        mUA_from_0=ua_from_0,
        mAUC_from_0=auc_from_0,
        forgetting_authors=by_authors,
        mSA_samples=_mean([ev.seen_accuracy_samples for ev in evaluations]),
        mUA_from_0_samples=ua_from_0_samples,
        mH_samples=_mean([ev.harmonic_samples for ev in head]),
    )
