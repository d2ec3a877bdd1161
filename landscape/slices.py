"""1-D and 2-D loss slices along filter-normalized random directions (docs/science.md section 5.4).

The claim probed: "ZSL models have a more irregular loss surface than traditional
classifiers, and CN partially remedies this", seen here through the plots of Li, Xu,
Taylor, Studer and Goldstein (2018), "Visualizing the loss landscape of neural nets":

    f(alpha)       = L(theta0 + alpha d1)                      (1-D slice)
    f(alpha, beta) = L(theta0 + alpha d1 + beta d2)            (2-D slice)

with ``L`` the sample-weighted mean loss of an :class:`~landscape.objective.Objective`
over a list of batches, ``theta0`` the stored origin (by default the model's current
parameters) and ``d1, d2`` random directions rescaled filter by filter
(:func:`filter_normalized_direction`), so that a step ``alpha = 1`` changes every filter by
as much as its own norm, whatever the scale of the layer.  Filter normalization is what
makes slices of different models (and of scale-invariant layers) comparable.

**Evaluation.**  Every grid point is evaluated on its own from ``theta0``: the point is
``(theta0 + alpha d1) + beta d2`` computed afresh (a zero coefficient skips its term, so the
origin is ``theta0`` itself, bitwise), never by accumulating steps along the grid, so the
values do not depend on the order of the grid and ``f(0) = L(theta0)`` exactly.  The
model is never written to (:class:`~landscape.objective.Objective` is pure); the slices
return their grid coordinates with the values (:class:`Slice1D`, :class:`Slice2D`).

Two random directions in ``n >> 1`` dimensions are nearly orthogonal (as Li et al. note),
so two independent draws of :func:`filter_normalized_direction` (e.g. two successive
draws from one seeded generator) span the plane; they are not orthogonalized here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from analysis.rng import resolve_generator
from landscape.objective import Batch, Objective

if TYPE_CHECKING:  # matplotlib is imported only when drawing
    from matplotlib.axes import Axes
    from matplotlib.colorbar import Colorbar

__all__ = [
    "Slice1D",
    "Slice2D",
    "filter_normalized_direction",
    "loss_slice_1d",
    "loss_slice_2d",
    "plot_slice_1d",
    "plot_slice_2d",
    "plot_slice_panels",
]

Direction = Sequence[Tensor] | Tensor  # shaped like the probed parameters, or flat [n]
Grid = Sequence[float] | Tensor | np.ndarray


@dataclass(frozen=True)
class Slice1D:
    """``losses[i] = L(theta0 + alphas[i] d)``; both ``[A]``, float64 / the objective's dtype, CPU."""

    alphas: Tensor  # [A] float64
    losses: Tensor  # [A]


@dataclass(frozen=True)
class Slice2D:
    """``losses[i, j] = L(theta0 + alphas[i] d1 + betas[j] d2)``: ``[A]``, ``[B]``, ``[A, B]``, CPU."""

    alphas: Tensor  # [A] float64, along direction 1
    betas: Tensor  # [B] float64, along direction 2
    losses: Tensor  # [A, B]


def filter_normalized_direction(
    objective: Objective,
    params: Sequence[Tensor] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, ...]:
    """A Gaussian direction, rescaled filter by filter to the parameters (Li et al. 2018).

    For each probed parameter ``theta`` (in the order of ``objective.names``):

    - ``theta.ndim >= 2`` (a ``Linear`` weight ``[out, in]``, a conv kernel
      ``[out, in, k...]``, a classifier's ``[K, d_z]``): draw ``d ~ N(0, I)`` of the same
      shape; a *filter* ``i`` is the slice ``theta[i]`` along the first axis (one output
      unit / output channel / class row), and it is rescaled as
      ``d_i <- d_i / ||d_i|| * ||theta_i||`` (Frobenius norms of the slices), so that
      ``||d_i|| = ||theta_i||`` for every ``i`` (a zero filter gets a zero direction).
      This is ``net_plotter.normalize_direction(..., norm="filter")`` without its
      ``+ 1e-10`` in the denominator (a Gaussian row has a non-zero norm almost surely).
    - ``theta.ndim <= 1`` (biases, normalization parameters, scalars): ``d = 0``, the
      ``ignore="biasbn"`` option of Li et al. ("we ignore biases and BN parameters").

    The Gaussian entries are drawn on the CPU in float64 from ``generator``, one
    parameter after another in ``objective.names`` order (only for parameters with
    ``ndim >= 2``), the rescaling is done in float64, and the result is cast to the
    objective's dtype and device, so a seed gives the same direction on every device.

    Args:
        objective: selects the parameters (``objective.names``).
        params: ``theta``, shaped like the probed parameters; ``None``: ``objective.params()``.
        generator: a CPU ``torch.Generator``; ``None``: a fresh one seeded from the OS.

    Returns:
        ``d``, one tensor per probed parameter, shaped like it, detached.

    Raises:
        ValueError: ``params`` do not fit the objective.
        TypeError: ``generator`` is not a CPU ``torch.Generator``.

    Example (relation, not a value)::

        d = filter_normalized_direction(obj, generator=torch.Generator().manual_seed(0))
        w = obj.params()[0]                       # a [out, in] weight
        assert torch.allclose(d[0].norm(dim=1), w.norm(dim=1))
    """
    params = _origin(objective, params)
    if generator is None:
        generator = resolve_generator(None)
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise TypeError(
            f"generator must be a CPU torch.Generator (directions are drawn on the CPU so a seed "
            f"means the same direction everywhere), got {generator!r}"
        )
    direction = []
    for theta in params:
        if theta.ndim <= 1:  # biases and normalization parameters: ignored, as in Li et al.
            direction.append(torch.zeros_like(theta))
            continue
        rows = theta.detach().to(device="cpu", dtype=torch.float64).reshape(theta.shape[0], -1)  # [out, rest]
        d = torch.randn(rows.shape, generator=generator, dtype=torch.float64)  # [out, rest]
        d_norm = d.norm(dim=1, keepdim=True)  # [out, 1]
        scale = torch.where(d_norm > 0, rows.norm(dim=1, keepdim=True) / d_norm, torch.zeros_like(d_norm))
        direction.append((d * scale).reshape(theta.shape).to(device=objective.device, dtype=objective.dtype))
    return tuple(direction)


def loss_slice_1d(
    objective: Objective,
    batches: Sequence[Batch],
    direction: Direction,
    alphas: Grid,
    *,
    params: Sequence[Tensor] | None = None,
) -> Slice1D:
    """``f(alpha) = L(theta0 + alpha d)`` on a grid of ``alpha`` (module docstring).

    Args:
        objective: the loss and the probed parameters.
        batches: the data; ``L`` is ``objective.mean_loss`` (sample-weighted mean).
        direction: ``d``, shaped like the probed parameters (a tuple, e.g. from
            :func:`filter_normalized_direction`) or a flat ``[n]`` vector.
        alphas: ``[A]`` finite coordinates, any order, ``A >= 1``.
        params: ``theta0``; ``None``: the model's current parameters.

    Returns:
        :class:`Slice1D` with ``alphas`` (float64) and ``losses`` ``[A]``.

    Raises:
        ValueError: empty or non-finite grid, a direction that does not fit the
            probed parameters, empty ``batches``.
    """
    origin = _origin(objective, params)
    d = _direction(objective, direction, "direction")
    grid = _grid(alphas, "alphas")
    losses = [_loss_at(objective, batches, origin, ((float(a), d),)) for a in grid.tolist()]
    return Slice1D(grid, torch.stack(losses))


def loss_slice_2d(
    objective: Objective,
    batches: Sequence[Batch],
    d1: Direction,
    d2: Direction,
    alphas: Grid,
    betas: Grid,
    *,
    params: Sequence[Tensor] | None = None,
    on_point: Callable[[], None] | None = None,
) -> Slice2D:
    """``f(alpha, beta) = L(theta0 + alpha d1 + beta d2)`` on the grid ``alphas x betas``.

    Each of the ``A * B`` points is evaluated from ``theta0`` (module docstring);
    ``on_point()`` (if given) is called after each one (a progress bar's update).

    Args:
        objective: the loss and the probed parameters.
        batches: the data; ``L`` is ``objective.mean_loss`` (sample-weighted mean).
        d1, d2: the two directions, each shaped like the probed parameters or flat ``[n]``.
        alphas: ``[A]`` finite coordinates along ``d1``.
        betas: ``[B]`` finite coordinates along ``d2``.
        params: ``theta0``; ``None``: the model's current parameters.

    Returns:
        :class:`Slice2D` with ``losses[i, j]`` at ``(alphas[i], betas[j])``, ``[A, B]``.

    Raises:
        ValueError: an empty or non-finite grid, a direction that does not fit the probed
            parameters, empty ``batches``.
    """
    origin = _origin(objective, params)
    u, v = _direction(objective, d1, "d1"), _direction(objective, d2, "d2")
    grid_a, grid_b = _grid(alphas, "alphas"), _grid(betas, "betas")
    tick = on_point if on_point is not None else (lambda: None)

    def point(a: float, b: float) -> Tensor:
        loss = _loss_at(objective, batches, origin, ((a, u), (b, v)))
        tick()
        return loss

    rows = [torch.stack([point(a, b) for b in grid_b.tolist()]) for a in grid_a.tolist()]
    return Slice2D(grid_a, grid_b, torch.stack(rows))  # [A, B]


# -- drawing ---------------------------------------------------------------------------
def plot_slice_1d(slice1d: Slice1D, ax: Axes | None = None, *, log: bool = False) -> Axes:
    """Draw ``f(alpha)`` as a line, with the origin ``alpha = 0`` marked when on the grid.

    Args:
        slice1d: from :func:`loss_slice_1d`.
        ax: where to draw; ``None``: a new figure.
        log: logarithmic loss axis.

    Returns:
        The axes.

    Raises:
        ValueError: ``log=True`` with a non-positive loss.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    alphas, losses = slice1d.alphas.numpy(), slice1d.losses.double().numpy()
    order = np.argsort(alphas, kind="stable")
    if ax is None:
        ax = Figure().add_subplot()
    if log:
        _check_positive(losses)
        ax.set_yscale("log")
    ax.plot(alphas[order], losses[order], marker=".")
    at_origin = alphas == 0
    if at_origin.any():
        ax.plot(0.0, losses[at_origin][0], marker="*", markersize=12, color="k", linestyle="none",
                label="origin")
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("loss")
    return ax


def plot_slice_2d(
    slice2d: Slice2D, ax: Axes | None = None, *, levels: int | Sequence[float] = 20, log: bool = False
) -> Axes:
    """Contour plot of ``f(alpha, beta)`` (alpha on x, beta on y), origin marked by a star.

    Args:
        slice2d: from :func:`loss_slice_2d`; needs at least 2 points along each axis.
        ax: where to draw; ``None``: a new figure.
        levels: number of contour levels, or the levels themselves.
        log: logarithmically spaced levels and colour scale (a number of levels then
            means that many levels geometrically spaced between the min and max loss).

    Returns:
        The axes (with a colorbar labelled "loss").

    Raises:
        ValueError: fewer than 2 grid points along an axis, or ``log=True`` with a
            non-positive loss.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    alphas, betas = slice2d.alphas.numpy(), slice2d.betas.numpy()
    losses = slice2d.losses.double().numpy()  # [A, B]
    if alphas.size < 2 or betas.size < 2:
        raise ValueError(
            f"a contour plot needs at least 2 points along each axis, got {alphas.size} alphas and "
            f"{betas.size} betas; use plot_slice_1d for a line"
        )
    ia, ib = np.argsort(alphas, kind="stable"), np.argsort(betas, kind="stable")
    z = losses[np.ix_(ia, ib)].T  # [B, A]: contour wants rows along y (beta), columns along x (alpha)
    if ax is None:
        ax = Figure().add_subplot()
    kwargs = {}
    if log:
        _check_positive(losses)
        kwargs["norm"] = LogNorm()
        if isinstance(levels, int):
            levels = np.geomspace(losses.min(), losses.max(), levels)
    contours = ax.contour(alphas[ia], betas[ib], z, levels=levels, **kwargs)
    ax.clabel(contours, inline=True, fontsize=7)
    ax.figure.colorbar(contours, ax=ax, label="loss")
    ax.plot(0.0, 0.0, marker="*", markersize=12, color="k", linestyle="none", label="origin")
    ax.set_xlabel("alpha (direction 1)")
    ax.set_ylabel("beta (direction 2)")
    return ax


SLICE_AXIS_LABELS = ("α, direction 1 (dimensionless)", "β, direction 2 (dimensionless)")  # filter-normalized


def plot_slice_panels(
    slices: Sequence[Slice2D], axes: Sequence[Axes], *, titles: Sequence[str] | None = None,
    title_colors: Sequence[object] | None = None, levels: int = 25, unit: str = "nats",
) -> Colorbar:
    """Filled contours of several 2-D slices (one per axes) on **one** logarithmic colour
    scale, so one colour is one loss in every panel, with one colour bar for all of them:

        norm = LogNorm(min_p min f_p, max_p max f_p)      (analysis.plot_style.shared_norm)

    ``levels`` contour levels geometrically spaced over ``[norm.vmin, norm.vmax]`` (white
    lines every third level), the origin ``(0, 0)`` starred, equal aspect, both axes
    labelled with their unit on every panel; the colour bar has a few round ticks
    (:func:`analysis.plot_style.shared_colorbar`).  Used by ``cnzsl landscape`` and by the
    paper figure :mod:`figures.loss_slices`.

    Args:
        slices: from :func:`loss_slice_2d`; at least 2 points along each axis, losses > 0.
        axes: one per slice, in the same figure.
        titles, title_colors: per panel (``None``: no title, default colour).
        levels: number of filled contour levels.
        unit: the loss unit, for the colour bar label.

    Returns:
        The colour bar (``bar.mappable.norm`` is the shared norm).

    Raises:
        ValueError: ``slices`` and ``axes`` (or ``titles``) of different lengths, no slice,
            fewer than 2 points along an axis, or a non-positive loss.
    """
    from analysis.plot_style import shared_colorbar, shared_norm

    slices, axes = list(slices), list(axes)
    if not slices or len(slices) != len(axes) or (titles is not None and len(titles) != len(slices)):
        raise ValueError(f"plot_slice_panels needs one axes (and title) per slice, got {len(slices)} slices, "
                         f"{len(axes)} axes, {'no' if titles is None else len(titles)} titles")
    for s in slices:
        if s.alphas.numel() < 2 or s.betas.numel() < 2:
            raise ValueError(f"a contour plot needs at least 2 points along each axis, got {s.alphas.numel()} "
                             f"alphas and {s.betas.numel()} betas; use plot_slice_1d for a line")
        if not bool((s.losses > 0).all()):
            raise ValueError(f"the shared log colour scale needs positive losses, got a minimum of "
                             f"{float(s.losses.min())!r}; plot such a slice alone with plot_slice_2d")
    norm = shared_norm([s.losses.double().numpy() for s in slices], log=True)
    steps = np.geomspace(norm.vmin, norm.vmax, levels)
    filled = None
    for k, (s, ax) in enumerate(zip(slices, axes)):
        alphas, betas = s.alphas.numpy(), s.betas.numpy()
        ia, ib = np.argsort(alphas, kind="stable"), np.argsort(betas, kind="stable")
        z = s.losses.double().numpy()[np.ix_(ia, ib)].T  # [B, A]: contour wants rows along y (beta)
        filled = ax.contourf(alphas[ia], betas[ib], z, levels=steps, norm=norm, cmap="viridis")
        ax.contour(alphas[ia], betas[ib], z, levels=steps[::3], norm=norm, colors="white", linewidths=0.4,
                   alpha=0.6, linestyles="solid")
        ax.plot(0.0, 0.0, marker="*", markersize=11, color="white", markeredgecolor="black",
                markeredgewidth=0.6, linestyle="none")
        ax.set_aspect("equal")
        ax.grid(False)
        ax.set_xlabel(SLICE_AXIS_LABELS[0])
        ax.set_ylabel(SLICE_AXIS_LABELS[1])
        if titles is not None:
            ax.set_title(titles[k], **({} if title_colors is None else {"color": title_colors[k]}))
    return shared_colorbar(axes[0].figure, filled, axes, f"loss f(α, β) ({unit}, log scale)")


# -- helpers ---------------------------------------------------------------------------
def _origin(objective: Objective, params: Sequence[Tensor] | None) -> tuple[Tensor, ...]:
    """``theta0``: detached copies (a later change by the caller does not move the origin)."""
    if params is None:
        return objective.params()
    objective._check_params(params, "params")
    return tuple(p.detach().clone() for p in params)


def _direction(objective: Objective, direction: Direction, what: str) -> tuple[Tensor, ...]:
    """``direction`` as a tuple shaped like the probed parameters, in their dtype and device."""
    if isinstance(direction, Tensor):
        if direction.ndim != 1 or direction.shape[0] != objective.num_parameters:
            raise ValueError(
                f"{what} as a tensor must be flat with length {objective.num_parameters} (the probed "
                f"parameters {list(objective.names)}), got shape {tuple(direction.shape)}; or pass a "
                f"tuple shaped like the parameters"
            )
        direction = objective.unflatten(direction)
    direction = tuple(direction)
    shapes = [tuple(t.shape) for t in direction]
    expected = [tuple(s) for s in objective.shapes]
    if shapes != expected:
        raise ValueError(
            f"{what} has shapes {shapes} but the probed parameters {list(objective.names)} have "
            f"shapes {expected}; draw it with filter_normalized_direction(objective)"
        )
    return tuple(t.detach().to(device=objective.device, dtype=objective.dtype) for t in direction)


def _grid(values: Grid, what: str) -> Tensor:
    """A non-empty, finite, 1-D float64 CPU tensor of coordinates."""
    if isinstance(values, Tensor):
        grid = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        grid = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if grid.ndim != 1 or grid.numel() == 0:
        raise ValueError(f"{what} must be a non-empty 1-D grid of coordinates, got shape {tuple(grid.shape)}")
    if not torch.isfinite(grid).all():
        raise ValueError(f"{what} must be finite, got {grid.tolist()}")
    return grid.clone()


def _loss_at(
    objective: Objective,
    batches: Sequence[Batch],
    origin: tuple[Tensor, ...],
    terms: tuple[tuple[float, tuple[Tensor, ...]], ...],
) -> Tensor:
    """``L(theta0 + sum_k c_k d_k)``, the sum taken left to right; ``c_k = 0`` skips its term."""
    point = origin
    for coefficient, d in terms:
        if coefficient != 0.0:
            point = tuple(p + coefficient * t for p, t in zip(point, d))
    with torch.no_grad():
        return objective.mean_loss(point, batches).detach().cpu()


def _check_positive(losses: np.ndarray) -> None:
    if not (losses > 0).all():
        raise ValueError(
            f"log=True needs positive losses, got a minimum of {losses.min()!r}; use log=False"
        )

