"""What ``cnzsl landscape`` costs: its budgets (the default and ``--fast``), the work a budget
implies, and the expected run time from unit costs measured at the start of the run.

The run trains each model for ``S = epochs x ceil(n_trainval / batch_size)`` steps, probes
it ``P = ceil(S / probe_every)`` times along training (a Santurkar measurement and one
Lanczos run of at most ``L = lanczos_max_steps`` Hessian-vector products, stopped at
``lanczos_tol``) and evaluates ``K = slice_points^2`` slice points.
:func:`measure_unit_costs` times each kind of work once on the actual model and data (a
throwaway copy of the model, six training steps, one probe), :func:`work_counts` turns the
budget into counts, :func:`expected_seconds` multiplies, and :func:`expected_time_line` is
the line the command prints before the long work starts.

Budgets (issue 18: the old default, 5 epochs and 21 x 21 slice points, took 3.3 min on a
loaded 2-core VM for synthetic AWA2, 127 CPU-seconds; ``bench/RESULTS.md``):
:data:`DEFAULT_BUDGET` aims at 1-2 minutes on two CPU cores for AWA2, :data:`FAST_BUDGET`
at a smoke run well under a minute.  An entry given explicitly (an option on the command
line) always wins over either.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from analysis.data import ZSLData
from analysis.training import StepInfo, TrainConfig, train
from landscape.hvp import HessianOperator
from landscape.objective import Batch, Objective
from landscape.santurkar import santurkar_measure
from landscape.slices import loss_slice_2d
from landscape.top_eigenvalues import lanczos_top_eigenvalues

__all__ = ["DEFAULT_BUDGET", "FAST_BUDGET", "LandscapeEstimate", "UnitCosts", "WorkCounts", "expected_seconds",
           "expected_time_line", "format_duration", "measure_unit_costs", "work_counts"]

# The entries of LandscapeRun that set the cost (and the cnzsl landscape options of the same names).
# Before issue 18 the default was epochs 5, slice_points 21 (the rest as below).
DEFAULT_BUDGET: dict[str, int] = {"epochs": 2, "probe_every": 25, "lanczos_max_steps": 40, "slice_points": 15,
                                  "slice_samples": 2048}
# --fast: one epoch (92 steps on AWA2: 4 probes per model), short Lanczos runs, a 5 x 5 slice
FAST_BUDGET: dict[str, int] = {"epochs": 1, "probe_every": 30, "lanczos_max_steps": 12, "slice_points": 5,
                               "slice_samples": 512}

_CALIBRATION_STEPS = 4  # training steps timed (after two warm-up steps); their median is t_step
_CALIBRATION_POINTS = 3  # slice points timed; their median is t_point


@dataclass(frozen=True)
class WorkCounts:
    """The work one model's share of a run implies (module docstring)."""

    steps: int  # training steps, S
    probes: int  # trajectory probes, P (steps 0, probe_every, ...)
    hvps: int  # Hessian-vector products, P x k (k: the Lanczos steps of the measured probe, <= L)
    slice_points: int  # K


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per unit of work, measured on one model (:func:`measure_unit_costs`)."""

    step: float  # one training step: forward, backward, Adam
    probe: float  # one Santurkar measurement and the Hessian operator's set-up, on a step's batch
    hvp: float  # one Lanczos step: a Hessian-vector product and its reorthogonalization
    slice_point: float  # one loss on the slice samples


@dataclass(frozen=True)
class LandscapeEstimate:
    """What a run is expected to cost, per model (keys: the model kinds)."""

    counts: dict[str, WorkCounts]
    unit_seconds: dict[str, UnitCosts]
    seconds: float  # expected_seconds(counts, unit_seconds)


def work_counts(*, epochs: int, steps_per_epoch: int, probe_every: int, lanczos_steps: int,
                slice_points: int) -> WorkCounts:
    """The counts of one model: ``S = epochs x steps_per_epoch``, ``P = ceil(S / probe_every)``
    (steps ``0, probe_every, ...``), ``H = P x lanczos_steps``, ``K = slice_points^2``.

    ``lanczos_steps`` is what one top-eigenvalue probe took when :func:`measure_unit_costs`
    ran it (to ``lanczos_tol``, at most ``lanczos_max_steps``).  The probes along training
    may need more or fewer (synthetic AWA2, tol 1e-3: 11-14 at the start of training, 10-22
    later), so ``H`` is an expectation, not a bound; ``P x lanczos_max_steps`` is the bound.

    Example: ``work_counts(epochs=2, steps_per_epoch=92, probe_every=25, lanczos_steps=15,
    slice_points=15)`` is ``WorkCounts(184, 8, 120, 225)``.
    """
    steps = epochs * steps_per_epoch
    probes = -(-steps // probe_every)
    return WorkCounts(steps, probes, probes * lanczos_steps, slice_points**2)


def expected_seconds(counts: Mapping[str, WorkCounts], costs: Mapping[str, UnitCosts]) -> float:
    """The expected run time of the work after the measurement:

        T = sum_m  S_m t_step,m + P_m t_probe,m + H_m t_hvp,m + K_m t_point,m

    over the models ``m`` (``counts`` and ``costs`` share their keys; :func:`work_counts`
    for ``S, P, H, K``, :class:`UnitCosts` for the ``t``).  Data loading, the measurement
    itself and plotting are not counted.

    Raises:
        ValueError: the keys of ``counts`` and ``costs`` differ.

    Example: one model with ``WorkCounts(10, 2, 8, 4)`` and ``UnitCosts(1, 10, 100, 1000)``
    gives ``10 + 20 + 800 + 4000 = 4830`` seconds.
    """
    if set(counts) != set(costs):
        raise ValueError(f"counts and costs must name the same models, got {sorted(counts)} and {sorted(costs)}")
    return sum(c.steps * u.step + c.probes * u.probe + c.hvps * u.hvp + c.slice_points * u.slice_point
               for c, u in ((counts[m], costs[m]) for m in counts))


def format_duration(seconds: float) -> str:
    """``"42 s"`` below 90 s, ``"1.5 min"`` below 90 min, else ``"2.1 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def expected_time_line(estimate: LandscapeEstimate, epochs: int, fast: bool) -> str:
    """The line printed before the long work (the counts summed over the models)."""
    counts = estimate.counts.values()
    hvps = sum(c.hvps for c in counts)
    points = sum(c.slice_points for c in counts)
    hint = " (--fast budget)" if fast else "; --fast for a smoke run"
    return (f"cnzsl landscape: about {format_duration(estimate.seconds)} expected on this machine "
            f"({len(estimate.counts)} models x {epochs} training epochs, about {hvps:,} Hessian-vector products, "
            f"{points:,} slice points){hint}")


class _Stop(Exception):
    """Ends the calibration's training run once everything is timed."""


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait before reading the clock
        torch.cuda.synchronize(device)


def measure_unit_costs(
    model: nn.Module,
    data: ZSLData,
    config: TrainConfig,
    slice_batches: list[Batch],
    etas: tuple[float, ...],
    *,
    lanczos_max_steps: int,
    lanczos_tol: float = 1e-3,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[UnitCosts, int]:
    """Time each unit of :class:`UnitCosts` once on a copy of ``model`` (``model`` is untouched).

    A training run of the recipe ``config`` on the copy is stopped after its sixth step:
    ``t_step`` is the median of steps 2-5 (0-based; steps 0 and 1 warm up).  On step 5's
    batch and parameters, one trajectory probe as :class:`~landscape.comparison.TrajectoryProbe`
    makes it: ``t_probe`` is :func:`santurkar_measure` with ``etas`` plus the
    :class:`HessianOperator` set-up, ``t_hvp`` the top-eigenvalue Lanczos run (``lanczos_tol``,
    at most ``lanczos_max_steps`` steps) over its products; ``t_point`` is the median of 3
    slice points on ``slice_batches``.  The medians shrug off a single preempted sample;
    under a changing load the estimate still moves with it.

    Args:
        timer: the clock (seconds); tests pass a fake one.

    Returns:
        The :class:`UnitCosts` of ``model`` on this machine, and the Lanczos steps the probe took.
    """
    device = next(model.parameters()).device
    probe_copy = copy.deepcopy(model)
    marks: list[float] = []
    found: dict[str, float] = {}
    lanczos_steps: list[int] = []

    def clock() -> float:
        _synchronize(device)
        return timer()

    def on_step(info: StepInfo) -> None:
        if info.step >= 1:
            marks.append(clock())
        if info.step < 1 + _CALIBRATION_STEPS:
            return
        objective = Objective(info.model)
        batch = Batch(info.features, info.targets, info.attributes)
        theta = objective.params()
        start = clock()
        santurkar_measure(objective, batch, etas, params=theta)
        hessian = HessianOperator(objective, [batch], theta)
        probed = clock()
        top = lanczos_top_eigenvalues(hessian.matvec, objective.num_parameters, k=1, tol=lanczos_tol,
                                      max_steps=min(lanczos_max_steps, objective.num_parameters),
                                      generator=torch.Generator().manual_seed(0),
                                      dtype=objective.dtype, device=objective.device)
        points = [clock()]
        zero = torch.zeros(objective.num_parameters, dtype=objective.dtype, device=objective.device)
        loss_slice_2d(objective, slice_batches, zero, zero, torch.zeros(_CALIBRATION_POINTS), torch.zeros(1),
                      params=theta, on_point=lambda: points.append(clock()))
        found.update(probe=probed - start, hvp=(points[0] - probed) / top.num_matvecs,
                     slice_point=statistics.median(b - a for a, b in zip(points, points[1:])))
        lanczos_steps.append(int(top.num_matvecs))
        raise _Stop

    try:  # enough epochs for all the steps even when an epoch is one step
        train(probe_copy, data, replace(config, epochs=2 + _CALIBRATION_STEPS, progress=False), on_step=on_step)
    except _Stop:
        pass
    step = statistics.median(b - a for a, b in zip(marks, marks[1:]))
    return UnitCosts(step=step, **found), lanczos_steps[0]
