"""Santurkar et al. (2018) smoothness probes along the gradient direction (docs/science.md section 5.3).

The claim probed: "ZSL models have a more irregular loss surface than traditional
classifiers, and CN partially remedies this", with the probes Santurkar, Tsipras, Ilyas
and Madry (2018), "How does batch normalization help optimization?" (section 3.1,
Figure 4) use to show what BatchNorm does to the landscape.  At parameters ``theta`` with gradient ``g = grad L(theta)``
(on one training batch, or any list of batches), for step sizes ``eta``:

    loss variation            L(theta - eta g)                                  [E]
    gradient predictiveness   ||grad L(theta) - grad L(theta - eta g)||_2       [E]
    effective beta-smoothness max_eta ||grad L(theta) - grad L(theta - eta g)|| / ||eta g||

(Euclidean norms of the flat vectors over the probed parameters).  A smooth,
well-conditioned surface gives a narrow loss range, a small gradient change and a small
effective beta.  For a quadratic ``L = 1/2 x^T A x`` the gradient change is exactly
``eta A g``: predictiveness ``eta ||A g||`` and effective beta ``||A g|| / ||g||``.

**Step sizes.**  Santurkar et al. move along the gradient with a range of step sizes
around the training learning rate.  The default grid here is our convention,
``etas = lr * (0.5, 1, 2, 4)`` (:data:`DEFAULT_MULTIPLIERS`; ``lr`` is the recipe's 5e-4
unless given), fixed over the run so that records of different steps and models are
comparable (the StepLR decays are *not* followed).  The recipe trains with Adam, whose
step is not ``lr g``: the grid is a probe scale along the raw gradient, not the step the
optimizer took; pass ``etas`` (or ``lr``/``multipliers``) to choose another.

**Statistics.**  A CN layer in ``"batch"`` mode (the default, as in the training step)
normalizes with the statistics of the classes passed in and never updates its running
statistics; ``"running"`` probes the eval-mode function (:mod:`landscape.objective`).

Everything here is a pure function of the parameters: nothing is drawn at random, and
the model's parameters, buffers and training flags are left bitwise unchanged, so a
:class:`SanturkarProbe` passed to :func:`analysis.training.train` does not change the run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from analysis.probe_mode import check_statistics
from analysis.training import StepInfo, TrainConfig
from landscape.objective import Batch, LossFn, Objective

__all__ = [
    "DEFAULT_MULTIPLIERS",
    "SanturkarMeasurement",
    "SanturkarProbe",
    "effective_smoothness",
    "gradient_predictiveness",
    "loss_variation",
    "santurkar_measure",
]

DEFAULT_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)  # etas = lr * these (module docstring)

Etas = Sequence[float] | Tensor | np.ndarray


@dataclass(frozen=True)
class SanturkarMeasurement:
    """All three probes at one ``theta`` (CPU tensors; ``E = len(etas)``)."""

    etas: Tensor  # [E] float64
    loss: float  # L(theta)
    gradient_norm: float  # ||g||
    losses: Tensor  # [E] L(theta - eta g)
    predictiveness: Tensor  # [E] ||g - grad L(theta - eta g)||
    effective_beta: float  # max over eta > 0 of predictiveness / (eta ||g||); nan when g = 0 or no eta > 0


def loss_variation(
    objective: Objective, batch: Batch | Sequence[Batch], etas: Etas, *, params: Sequence[Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``L(theta - eta g)`` for each ``eta``, with ``g = grad L(theta)`` (module docstring).

    Args:
        objective: the loss and the probed parameters.
        batch: one :class:`Batch` or a list (``L`` is then the sample-weighted mean).
        etas: ``[E]`` finite step sizes (``0`` gives ``L(theta)``; negative ones step uphill).
        params: ``theta``; ``None``: the model's current parameters.

    Returns:
        ``(etas [E] float64, losses [E])`` on the CPU.

    Raises:
        ValueError: an empty or non-finite ``etas``, empty batches, ``params`` that do not fit.
    """
    batches, theta, grid = _setup(objective, batch, etas, params)
    g = objective.gradient(theta, batches)
    losses = [_loss(objective, _step(theta, g, eta), batches) for eta in grid.tolist()]
    return grid, torch.stack(losses)


def gradient_predictiveness(
    objective: Objective, batch: Batch | Sequence[Batch], etas: Etas, *, params: Sequence[Tensor] | None = None
) -> Tensor:
    """``||grad L(theta) - grad L(theta - eta g)||_2`` for each ``eta`` (module docstring).

    Args:
        objective: the loss and the probed parameters.
        batch: one :class:`Batch` or a list of them.
        etas: ``[E]`` finite step sizes.
        params: ``theta``; ``None``: the model's current parameters.

    Returns:
        ``[E]`` on the CPU, in the objective's dtype.

    Raises:
        ValueError: an empty or non-finite ``etas``, empty batches, ``params`` that do not fit.
    """
    batches, theta, grid = _setup(objective, batch, etas, params)
    g = objective.gradient(theta, batches)
    return torch.stack([_gradient_change(objective, theta, g, eta, batches) for eta in grid.tolist()])


def effective_smoothness(
    objective: Objective, batch: Batch | Sequence[Batch], etas: Etas, *, params: Sequence[Tensor] | None = None
) -> float:
    """Effective beta-smoothness ``max_eta ||grad L(theta) - grad L(theta - eta g)|| / ||eta g||``.

    Args:
        objective: the loss and the probed parameters.
        batch: one :class:`Batch` or a list of them.
        etas: ``[E]`` step sizes, all ``> 0`` (the ratio is a difference quotient).
        params: ``theta``; ``None``: the model's current parameters.

    Returns:
        The maximum ratio; ``nan`` when ``g = 0`` (no step is taken, the ratio is undefined).

    Raises:
        ValueError: an empty, non-finite or non-positive ``etas``, empty batches,
            ``params`` that do not fit.
    """
    grid = _etas(etas)
    if not (grid > 0).all():
        raise ValueError(
            f"effective_smoothness needs step sizes eta > 0 (it divides by ||eta g||), got "
            f"{grid.tolist()}"
        )
    batches, theta, grid = _setup(objective, batch, grid, params)
    g = objective.gradient(theta, batches)
    changes = torch.stack([_gradient_change(objective, theta, g, eta, batches) for eta in grid.tolist()])
    return _effective_beta(grid, changes, float(_norm(g)))


def santurkar_measure(
    objective: Objective, batch: Batch | Sequence[Batch], etas: Etas, *, params: Sequence[Tensor] | None = None
) -> SanturkarMeasurement:
    """The three probes at once, sharing ``g`` and each ``grad L(theta - eta g)``.

    Costs one gradient at ``theta`` plus, per ``eta``, one loss and one gradient.  The
    values equal those of :func:`loss_variation` and :func:`gradient_predictiveness`
    (same computations); ``effective_beta`` uses only the ``eta > 0``.

    Args:
        objective: the loss and the probed parameters.
        batch: one :class:`Batch` or a list of them.
        etas: ``[E]`` finite step sizes.
        params: ``theta``; ``None``: the model's current parameters.

    Returns:
        A :class:`SanturkarMeasurement`.

    Raises:
        ValueError: an empty or non-finite ``etas``, empty batches, ``params`` that do not fit.
    """
    batches, theta, grid = _setup(objective, batch, etas, params)
    loss = _loss(objective, theta, batches)
    g = objective.gradient(theta, batches)
    g_norm = float(_norm(g))
    losses, changes = [], []
    for eta in grid.tolist():
        losses.append(_loss(objective, _step(theta, g, eta), batches))
        changes.append(_gradient_change(objective, theta, g, eta, batches))
    predictiveness = torch.stack(changes)  # [E]
    beta = _effective_beta(grid, predictiveness, g_norm)
    return SanturkarMeasurement(grid, float(loss), g_norm, torch.stack(losses), predictiveness, beta)


class SanturkarProbe:
    """A callback for ``analysis.training.train(on_step=probe)`` recording Santurkar probes.

    At each chosen step, with ``theta_t`` the parameters *after* the optimizer step and
    the step's batch ``Batch(features, targets, attributes)``, it builds
    ``Objective(info.model, loss_fn, parameters=..., statistics=...)`` and records
    :func:`santurkar_measure` on that batch.  Each record (a dict) holds:
    ``step``, ``epoch``, ``loss`` (``L(theta_t)`` on the batch; ``StepInfo.loss`` is the
    loss *before* the step), ``gradient_norm``, ``loss_min``/``loss_max`` (the range of
    ``L(theta_t - eta g)`` over the grid), ``predictiveness_min``/``predictiveness_max``,
    ``effective_beta``, and the per-eta ``losses`` and ``predictiveness`` ``[E]``.

    The run is not disturbed: the probe is pure (no parameter, buffer or training-flag
    change, running statistics frozen) and draws no random numbers.

    Args:
        steps: the 0-based global steps to probe; or
        every: probe steps ``0, every, 2 every, ...``.  Give at most one; neither: every step.
        etas: the step-size grid; ``None``: ``lr * multipliers``.
        lr: the training learning rate the default grid is scaled by (the recipe's).
        multipliers: the default grid in units of ``lr``.
        loss_fn: the training loss (a mean over samples).
        parameters: names of the probed parameters (``None``: all).
        statistics: ``"batch"`` (default, as in training) or ``"running"``.

    Raises:
        ValueError: both ``steps`` and ``every``, a negative step, ``every`` not a positive
            integer, an empty, non-finite or non-positive grid, a non-positive ``lr``, an
            unknown ``statistics``.
        TypeError: ``steps`` is not an iterable of integers.
    """

    def __init__(
        self,
        *,
        steps: Iterable[int] | None = None,
        every: int | None = None,
        etas: Etas | None = None,
        lr: float = TrainConfig.lr,
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS,
        loss_fn: LossFn = nn.functional.cross_entropy,
        parameters: Sequence[str] | None = None,
        statistics: str = "batch",
    ) -> None:
        self.steps, self.every = _steps_spec(steps, every)
        if etas is None:
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                raise ValueError(f"lr must be a positive finite number, got {lr!r}")
            etas = [lr * m for m in multipliers]
        self.etas = _etas(etas)
        if not (self.etas > 0).all():
            raise ValueError(f"the probe's step sizes must all be > 0, got {self.etas.tolist()}")
        check_statistics(statistics)
        self.loss_fn = loss_fn
        self.parameters = None if parameters is None else list(parameters)
        self.statistics = statistics
        self.records: list[dict[str, Any]] = []

    def wants(self, step: int) -> bool:
        """Whether ``step`` is probed."""
        return step in self.steps if self.steps is not None else step % self.every == 0

    def __call__(self, info: StepInfo) -> None:
        if not self.wants(info.step):
            return
        objective = Objective(info.model, self.loss_fn, parameters=self.parameters, statistics=self.statistics)
        batch = Batch(info.features, info.targets, info.attributes)
        m = santurkar_measure(objective, batch, self.etas)
        self.records.append({
            "step": info.step,
            "epoch": info.epoch,
            "loss": m.loss,
            "gradient_norm": m.gradient_norm,
            "loss_min": float(m.losses.min()),
            "loss_max": float(m.losses.max()),
            "predictiveness_min": float(m.predictiveness.min()),
            "predictiveness_max": float(m.predictiveness.max()),
            "effective_beta": m.effective_beta,
            "losses": m.losses.double().numpy(),  # [E]
            "predictiveness": m.predictiveness.double().numpy(),  # [E]
        })

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The records as arrays: ``[T]`` per scalar key (``step``/``epoch`` int64, the rest
        float64), ``losses``/``predictiveness`` ``[T, E]``, and ``etas`` ``[E]``."""
        e = self.etas.numel()
        out: dict[str, np.ndarray] = {"etas": self.etas.numpy().copy()}
        for key in ("step", "epoch"):
            out[key] = np.array([r[key] for r in self.records], dtype=np.int64)
        for key in ("loss", "gradient_norm", "loss_min", "loss_max", "predictiveness_min",
                    "predictiveness_max", "effective_beta"):
            out[key] = np.array([r[key] for r in self.records], dtype=np.float64)
        for key in ("losses", "predictiveness"):
            out[key] = np.array([r[key] for r in self.records], dtype=np.float64).reshape(-1, e)
        return out

    def __repr__(self) -> str:
        when = f"steps={sorted(self.steps)}" if self.steps is not None else f"every={self.every}"
        return f"SanturkarProbe({when}, etas={self.etas.tolist()}, {len(self.records)} records)"


# -- helpers ---------------------------------------------------------------------------
def _setup(
    objective: Objective, batch: Batch | Sequence[Batch], etas: Etas, params: Sequence[Tensor] | None
) -> tuple[list[Batch], tuple[Tensor, ...], Tensor]:
    batches = [batch] if isinstance(batch, Batch) else list(batch)
    if not batches:
        raise ValueError("batch is empty: pass a Batch or a non-empty list of them")
    grid = _etas(etas)
    if params is None:
        theta = objective.params()
    else:
        objective._check_params(params, "params")
        theta = tuple(p.detach().clone() for p in params)
    return batches, theta, grid


def _etas(etas: Etas) -> Tensor:
    """A non-empty, finite, 1-D float64 CPU tensor of step sizes."""
    if isinstance(etas, Tensor):
        grid = etas.detach().to(device="cpu", dtype=torch.float64).clone()
    else:
        grid = torch.as_tensor(np.asarray(etas, dtype=np.float64)).clone()
    if grid.ndim != 1 or grid.numel() == 0:
        raise ValueError(f"etas must be a non-empty 1-D grid of step sizes, got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all():
        raise ValueError(f"etas must be finite, got {grid.tolist()}")
    return grid


def _steps_spec(steps: Iterable[int] | None, every: int | None) -> tuple[frozenset[int] | None, int | None]:
    if steps is not None and every is not None:
        raise ValueError(f"give steps or every, not both (got steps={steps!r}, every={every!r})")
    if steps is not None:
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
            raise TypeError(f"steps must be an iterable of step numbers, e.g. {{0, 10, 100}}, got {steps!r}")
        chosen = list(steps)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in chosen):
            raise TypeError(f"steps must hold integers, got {chosen!r}")
        if any(s < 0 for s in chosen):
            raise ValueError(f"steps are 0-based global step numbers (>= 0), got {sorted(chosen)}")
        return frozenset(int(s) for s in chosen), None
    if every is None:
        return None, 1
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be a positive integer (probe steps 0, every, 2 every, ...), got {every!r}")
    return None, int(every)


def _step(theta: tuple[Tensor, ...], g: tuple[Tensor, ...], eta: float) -> tuple[Tensor, ...]:
    """``theta - eta g`` (``eta = 0``: ``theta`` itself)."""
    return theta if eta == 0.0 else tuple(p - eta * d for p, d in zip(theta, g))


def _loss(objective: Objective, params: tuple[Tensor, ...], batches: list[Batch]) -> Tensor:
    with torch.no_grad():
        return objective.mean_loss(params, batches).detach().cpu()


def _gradient_change(
    objective: Objective, theta: tuple[Tensor, ...], g: tuple[Tensor, ...], eta: float, batches: list[Batch]
) -> Tensor:
    """``||g - grad L(theta - eta g)||`` (0-dim, CPU)."""
    g_eta = objective.gradient(_step(theta, g, eta), batches)
    return _norm(tuple(a - b for a, b in zip(g, g_eta))).cpu()


def _effective_beta(grid: Tensor, predictiveness: Tensor, g_norm: float) -> float:
    """``max over eta > 0 of predictiveness / (eta ||g||)`` (``||eta g|| = eta ||g||``);
    ``nan`` when ``g = 0`` or no ``eta > 0``."""
    positive = grid > 0
    if g_norm == 0.0 or not positive.any():
        return math.nan
    return float((predictiveness.double()[positive] / (grid[positive] * g_norm)).max())


def _norm(tensors: tuple[Tensor, ...]) -> Tensor:
    """Euclidean norm of the concatenated flat vector."""
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in tensors]))
