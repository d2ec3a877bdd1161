"""The training recipe's loop, written once for every model and every device.

:func:`fit` runs the recipe of docs/science.md section 3.1 (Adam with L2 weight decay, StepLR, a
fresh permutation of the ``n`` training rows every epoch, the last smaller batch kept) for
any differentiable ``step_loss(rows) -> loss``: one model (``loss`` is a scalar) or ``S``
models trained at once (``loss`` is ``[S]``, one mean cross-entropy per member; the
gradient of ``loss.sum()`` with respect to member ``s``'s parameters is that of its own
loss, and Adam is element-wise, so each member follows its own trajectory).

Two ways to run the same epochs:

- ``"plain"``: a Python loop over steps; works everywhere, calls ``on_step`` after each
  step.
- ``"graph"`` (CUDA): the optimizer is ``capturable`` with a tensor learning rate, the
  epoch's permutation lives in a static device buffer, and a whole epoch (every
  forward, backward and Adam step of it, the epoch-loss sum included) is captured once in
  a CUDA graph and replayed for every later epoch: one launch per epoch instead of
  thousands of kernel launches and Python dispatches.  Epoch 0 runs eagerly on a side
  stream first (it is the warm-up CUDA graphs need: it allocates the optimizer state and
  the library workspaces) and is a real epoch of the run, so nothing is thrown away.
  StepLR writes the new rate into the captured tensor between replays.  The
  permutations are the same CPU draws as the plain loop's, so both paths compute the
  same run; they agree to float32 rounding (the capturable Adam computes its bias
  correction on the device in float32).  On the CPU the same static-buffer code can run
  eagerly (``graph=False`` of :func:`_fit_static`), which the tests use to check it
  against the plain loop.

``fast_path="auto"`` picks ``"graph"`` on CUDA when no ``on_step`` callback is given (a
callback needs the step in Python), else ``"plain"``.

A loss that becomes NaN or infinite (a learning rate far too large) stops the run with a
:class:`DivergedError` naming the epoch, the step and the last finite loss.  Each step's
loss is kept on the device and looked at only where the loop synchronizes anyway: the
plain loop stops at the end of the epoch in which the loss first became non-finite, the
graph path (which does not synchronize per epoch) after its last epoch; both name the
first non-finite step.  The cross-entropy is never negative, so the epoch sum is
non-finite exactly when one of its steps is: the normal run pays nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["FAST_PATHS", "DivergedError", "EpochLog", "fit", "resolve_fast_path"]

FAST_PATHS = ("auto", "plain", "graph")

StepLoss = Callable[[Tensor], Tensor]  # rows [B] (or [S, B]) -> mean loss, 0-dim (or [S])
OnStep = Callable[[int, int, Tensor, Tensor], None]  # (step, epoch, loss, rows)


class DivergedError(ValueError):
    """The training loss became NaN or infinite: the run stopped (module docstring).

    Attributes (1-based, as printed):
        epoch: the epoch of the first non-finite step loss.
        step: that step's index within its epoch.
        loss: the non-finite value.
        last_finite_loss: the step loss just before it (same seed member), ``None`` when the
            very first step was already non-finite.
    """

    def __init__(self, message: str, *, epoch: int, step: int, loss: float, last_finite_loss: float | None) -> None:
        super().__init__(message)
        self.epoch, self.step, self.loss, self.last_finite_loss = epoch, step, loss, last_finite_loss


def _raise_diverged(epoch: int, steps: Tensor, before: Tensor | None, steps_per_epoch: int, lr: float) -> None:
    """Raise the :class:`DivergedError` of ``epoch`` (0-based), whose step losses ``steps``
    (``[k]`` or ``[k, S]``) hold a non-finite value; ``before`` is the previous epoch's last
    step loss (``None`` in the first epoch)."""
    table = steps.detach().cpu().double().reshape(steps.shape[0], -1)  # [k, S]
    bad = ~torch.isfinite(table)
    k = int(bad.any(dim=1).nonzero()[0])  # first non-finite step of the epoch
    member = int(bad[k].nonzero()[0])
    if k > 0:
        last = float(table[k - 1, member])
    elif before is not None:
        last = float(before.detach().cpu().double().reshape(-1)[member])
    else:
        last = None
    value = float(table[k, member])
    who = f" (seed member {member} of {table.shape[1]} trained at once)" if table.shape[1] > 1 else ""
    previous = (f"the last finite loss was {last:.4g}" if last is not None
                else "the very first step was already non-finite (check the data for NaN or inf too)")
    raise DivergedError(
        f"the training loss diverged: it became {value} at epoch {epoch + 1}, step {k + 1} of {steps_per_epoch} "
        f"(global step {epoch * steps_per_epoch + k + 1}){who}; {previous}; lower the learning rate "
        f"(--lr, now {lr:g})",
        epoch=epoch + 1, step=k + 1, loss=value, last_finite_loss=last)


@dataclass
class EpochLog:
    """What :func:`fit` returns."""

    loss: list[Tensor] = field(default_factory=list)  # per epoch: mean loss, 0-dim or [S] (CPU, float64)
    epoch_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0  # whole loop, device synchronized
    steps: int = 0
    path: str = "plain"


def resolve_fast_path(fast_path: str, device: torch.device, has_callback: bool) -> str:
    """``"auto"`` -> ``"graph"`` on CUDA without a callback, else ``"plain"`` (module docstring)."""
    if fast_path not in FAST_PATHS:
        raise ValueError(f"unknown fast_path {fast_path!r}; choose one of {FAST_PATHS}")
    if fast_path == "auto":
        return "graph" if device.type == "cuda" and not has_callback else "plain"
    if fast_path == "graph" and device.type != "cuda":
        raise ValueError(f"fast_path='graph' captures CUDA graphs and needs a CUDA device, got {device}; "
                         "use fast_path='auto' or 'plain'")
    if fast_path == "graph" and has_callback:
        raise ValueError("fast_path='graph' cannot call on_step inside a captured epoch; "
                         "use fast_path='plain' (or 'auto') with a callback")
    return fast_path


def fit(
    parameters: Iterable[nn.Parameter],
    step_loss: StepLoss,
    draw_order: Callable[[], Tensor],
    n: int,
    config,  # analysis.training.TrainConfig (not imported: training imports this module)
    device: torch.device,
    *,
    on_step: OnStep | None = None,
) -> EpochLog:
    """Run ``config.epochs`` epochs of the recipe on ``step_loss``.

    Args:
        parameters: what Adam updates.
        step_loss: ``rows -> loss`` for a batch of training-row indices (on ``device``):
            ``rows`` are consecutive slices of the epoch's order along its last axis.
        draw_order: a fresh permutation per epoch (CPU, int64): ``[n]`` or ``[S, n]``.
        n: number of training rows.
        config: the recipe (epochs, batch_size, lr, weight_decay, lr_step_epochs,
            lr_decay, fused_optimizer, fast_path, progress).
        device: where the loop runs.
        on_step: called after each optimizer step with ``(step, epoch, loss, rows)``.

    Raises:
        DivergedError: a step loss became NaN or infinite (module docstring).
    """
    parameters = list(parameters)
    path = resolve_fast_path(config.fast_path, device, on_step is not None)
    if path == "graph":
        return _fit_static(parameters, step_loss, draw_order, n, config, device, graph=True)
    return _fit_plain(parameters, step_loss, draw_order, n, config, device, on_step)


def _fit_plain(parameters, step_loss, draw_order, n, config, device, on_step) -> EpochLog:
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                 fused=config.fused_optimizer)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_decay)
    log = EpochLog(path="plain")
    steps_per_epoch = -(-n // config.batch_size)
    previous = None  # the last step loss of the previous epoch (device)
    _synchronize(device)
    start = time.perf_counter()
    for epoch in tqdm(range(config.epochs), desc=getattr(config, "progress_label", "train"), unit="epoch",
                      disable=not config.progress):
        epoch_start = time.perf_counter()
        order = draw_order().to(device)
        total = None
        step_losses = []  # kept on the device: looked at only if the epoch's loss is non-finite
        for rows in order.split(config.batch_size, dim=-1):
            loss = step_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            weighted = loss.detach() * rows.shape[-1]
            total = weighted if total is None else total + weighted
            step_losses.append(loss.detach())
            if on_step is not None:
                on_step(log.steps, epoch, loss.detach(), rows)
            log.steps += 1
        schedule.step()
        log.loss.append(total.cpu().double() / n)  # one device synchronization per epoch
        if not torch.isfinite(log.loss[-1]).all():
            _raise_diverged(epoch, torch.stack(step_losses), previous, steps_per_epoch, config.lr)
        previous = step_losses[-1]
        log.epoch_seconds.append(time.perf_counter() - epoch_start)
    _synchronize(device)
    log.seconds = time.perf_counter() - start
    return log


def _fit_static(parameters, step_loss, draw_order, n, config, device, *, graph: bool) -> EpochLog:
    """Static buffers, capturable Adam, tensor learning rate; whole epochs replayed from a
    CUDA graph when ``graph`` (module docstring), else the same code run eagerly."""
    lr = torch.tensor(config.lr, dtype=torch.float32, device=device)  # StepLR fills it in place
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay,
                                 fused=config.fused_optimizer, capturable=graph)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_decay)
    first = draw_order()
    order = torch.empty(first.shape, dtype=torch.int64, device=device)  # the static permutation
    total = torch.zeros(first.shape[:-1], dtype=torch.float32, device=device)  # epoch loss sum
    steps_per_epoch = -(-n // config.batch_size)
    step_record = torch.zeros((steps_per_epoch, *first.shape[:-1]), dtype=torch.float32, device=device)

    def run_epoch() -> None:
        total.zero_()
        for k, rows in enumerate(order.split(config.batch_size, dim=-1)):
            loss = step_loss(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            total.add_(loss.detach().float(), alpha=rows.shape[-1])
            step_record[k].copy_(loss.detach())  # to name the step if the loss diverges

    log = EpochLog(path="graph" if graph else "static")
    losses, records = [], []
    _synchronize(device)
    clock = _Clock(device)
    captured = None
    for epoch in tqdm(range(config.epochs), desc=getattr(config, "progress_label", "train"), unit="epoch",
                      disable=not config.progress):
        order.copy_(first if epoch == 0 else draw_order())
        if not graph:
            run_epoch()
        elif captured is None:  # epoch 0: eager on a side stream, the warm-up capture needs
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                run_epoch()
            torch.cuda.current_stream(device).wait_stream(side)
        else:
            captured.replay()
        losses.append(total.clone())  # the next epoch reuses `total`
        records.append(step_record.clone())
        if graph and captured is None:
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):  # synchronizes, then records without running
                run_epoch()
        schedule.step()  # fills the captured learning-rate tensor in place
        log.steps += steps_per_epoch
        clock.mark()
    log.seconds = clock.stop()
    log.loss = [x.cpu().double() / n for x in losses]
    for epoch, x in enumerate(log.loss):  # no synchronization per epoch here: looked at once, at the end
        if not torch.isfinite(x).all():
            _raise_diverged(epoch, records[epoch], records[epoch - 1][-1] if epoch else None, steps_per_epoch,
                            config.lr)
    log.epoch_seconds = clock.durations()
    return log


class _Clock:
    """Wall time per epoch without a synchronization per epoch: CUDA events on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = time.perf_counter()
        self.events: list = []
        self.times: list[float] = []
        if device.type == "cuda":
            self.first = torch.cuda.Event(enable_timing=True)
            self.first.record()

    def mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)
        else:
            self.times.append(time.perf_counter() - self.start)

    def stop(self) -> float:
        _synchronize(self.device)
        return time.perf_counter() - self.start

    def durations(self) -> list[float]:
        ends = ([self.first.elapsed_time(e) / 1e3 for e in self.events] if self.device.type == "cuda"
                else self.times)
        return [b - a for a, b in zip([0.0, *ends[:-1]], ends)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
