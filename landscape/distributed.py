"""Full-data curvature probes sharded over processes with ``torch.distributed`` (docs/science.md section 5.2).

Process ``r`` of ``W`` holds only its shard of the data, batches ``b`` of ``n_b`` samples
(``n_r = sum_{b in r} n_b`` samples in all, ``N = sum_r n_r``).  The full-data objective
and its derivatives are sums of per-rank shares,

    L(theta)  = sum_r s_r,   s_r = sum_{b in r} n_b L_b(theta) / N          []
    g(theta)  = sum_r sum_{b in r} n_b grad L_b(theta) / N                  [n]
    H(theta) v = sum_r sum_{b in r} n_b H_b(theta) v / N                    [n]

so :class:`ShardedObjective` overrides the two hooks of :class:`landscape.objective.Objective`
every probe goes through: ``N`` is the all-reduced sample count, and each share is
all-reduced (``SUM``) before the probe sees it.  Every probe built on an objective or a
:class:`~landscape.hvp.HessianOperator` (gradient norms, Hessian-vector products, Lanczos
top eigenvalues, Hutchinson, Hutch++, XTrace, SLQ, Santurkar's measurements, slices) then
computes the full-data quantity, unchanged.

**Why the Krylov iterations agree on every rank.**  An all-reduce hands every rank the same
reduced bytes (gloo and NCCL reduce each chunk once and broadcast it), so every product is
bitwise the same on every rank; the Krylov methods (Lanczos, trace estimators, SLQ) then
run the same deterministic arithmetic on the same vectors, provided each rank draws its
start vectors and probes from a generator seeded identically (``torch.Generator`` on the
CPU: the same draws on every device).  Ranks therefore take the same number of steps and
stop together; each holds the whole result, and one of them (rank 0) reports it.  This
needs ranks that compute alike (one torch build; identical CPUs or GPUs): ranks whose own
arithmetic differs could take different branches, and the collective they then miss ends
in a :class:`ShardFailure` after the group's timeout instead of a hang.

**Assumptions.**  ``loss_fn`` is a mean over samples and per-sample losses are
independent given the parameters: true for every model of the toolkit, whose CN and
BatchNorm layers normalize over the classes passed in, not over the images
(:mod:`landscape.objective`); a model that normalized over the images of a batch would see
its objective change with the sharding, as it already does with the batching.  Every rank
holds the same model (parameters and buffers) and the same class set.  The sum over ranks
is exact in exact arithmetic; in floating point it differs from the single-process sum by
round-off (``tests/test_distributed.py``: float64 to ~1e-13, float32 to 1e-5 relative).

Example (run under ``torchrun --nproc-per-node 2``; a relation, not a value)::

    with distributed_session("cpu", timeout=60) as session:
        batches = zsl_batches(data, shard=(session.rank, session.world_size))
        objective = ShardedObjective(model)
        H = HessianOperator(objective, batches)
        top = lanczos_top_eigenvalues(H.matvec, objective.num_parameters, k=5,
                                      generator=torch.Generator().manual_seed(0))
        # top.eigenvalues: the same on every rank, equal to the single-process run on all the data
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from analysis.training import resolve_device
from landscape.objective import Batch, LossFn, Objective, check_batches

__all__ = ["Session", "SetupFailed", "ShardFailure", "ShardedObjective", "distributed_session"]


class ShardFailure(RuntimeError):
    """A collective failed: another process exited, or did not answer within the process
    group's timeout.  The process that failed first printed why."""


class SetupFailed(RuntimeError):
    """A step every process checks together (:meth:`Session.agree`) failed on one process or more.

    Attributes:
        status: the exit status to end with (2: bad input).
        quiet: ``True`` on the processes that should not print it: the message is printed
            once, by the lowest failed rank (its own error, the ``__cause__``) and by rank 0.
    """

    def __init__(self, message: str, status: int, *, quiet: bool) -> None:
        super().__init__(message)
        self.status, self.quiet = status, quiet


def _first_line(err: BaseException) -> str:
    """The gist of a backend's message: its first sentence, without the source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip())
    text = (text.splitlines() or [type(err).__name__])[0]
    return text.split(". ")[0].rstrip(".")


def _all_reduce(tensor: Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None, what: str) -> Tensor:
    """``tensor`` all-reduced in place with ``op``; a failed collective becomes a :class:`ShardFailure`.

    gloo reduces CPU tensors only: a CUDA tensor under gloo goes through a CPU copy.
    """
    staged = tensor.cpu() if tensor.is_cuda and dist.get_backend(group) == "gloo" else tensor
    try:
        dist.all_reduce(staged, op=op, group=group)
    except RuntimeError as err:  # DistBackendError, DistNetworkError, gloo's timeouts: all RuntimeErrors
        raise ShardFailure(
            f"rank {dist.get_rank(group)} of {dist.get_world_size(group)}: the all-reduce of {what} failed: another "
            f"process exited or did not answer within the process group's timeout ({_first_line(err)})"
        ) from err
    if staged is not tensor:
        tensor.copy_(staged)
    return tensor


class ShardedObjective(Objective):
    """The full-data objective when each process holds a shard of the data (module docstring).

    Arguments are those of :class:`~landscape.objective.Objective`, plus the process group.
    Every process of the group must build it on the same model and call the same probes in
    the same order with the same seeds (each probe's collectives must match).

    Args:
        model, loss_fn, parameters, statistics: as for :class:`~landscape.objective.Objective`.
        group: the ``torch.distributed`` process group (``None``: the default group).

    Attributes:
        rank, world_size, backend: of the group.
        num_collectives: all-reduces issued so far (one per product, gradient or loss, and
            one per sample count).

    Raises:
        ValueError: no process group is initialized (as well as the errors of ``Objective``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn = nn.functional.cross_entropy,
        *,
        parameters: Sequence[str] | None = None,
        statistics: str = "batch",
        group: dist.ProcessGroup | None = None,
    ) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("ShardedObjective needs an initialized torch.distributed process group: launch with "
                             "torchrun and call torch.distributed.init_process_group (or use distributed_session)")
        super().__init__(model, loss_fn, parameters=parameters, statistics=statistics)
        self.group = group
        self.rank: int = dist.get_rank(group)
        self.world_size: int = dist.get_world_size(group)
        self.backend: str = str(dist.get_backend(group))
        self.num_collectives = 0

    def shard_sizes(self, batches: Sequence[Batch]) -> list[int]:
        """``[n_0, ..., n_{W-1}]``, the samples each process holds (one all-reduce).

        Raises:
            ValueError: ``batches`` is empty (a process without data; on that process).
        """
        local = sum(b.size for b in check_batches(batches))
        counts = torch.zeros(self.world_size, dtype=torch.int64, device=self.device)
        counts[self.rank] = local
        self.num_collectives += 1
        return [int(c) for c in _all_reduce(counts, dist.ReduceOp.SUM, self.group, "the sample counts")]

    def total_samples(self, batches: Sequence[Batch]) -> int:
        """``N = sum_r n_r``, every process's samples (one all-reduce)."""
        return sum(self.shard_sizes(batches))

    def sum_over_shards(self, local: Tensor) -> Tensor:
        """``sum_r local_r`` over the group's processes (an all-reduce).

        A tensor without a graph is reduced in place and returned.  A differentiable one
        (``mean_loss`` under autograd) comes back as ``local + (sum_r local_r - local)``
        with the bracket detached: its value is the full-data sum, its gradient this
        process's share, so that summing the gradients over processes (as
        :meth:`~landscape.objective.Objective.gradient` does) gives the full-data gradient.
        """
        self.num_collectives += 1
        if not local.requires_grad:
            return _all_reduce(local, dist.ReduceOp.SUM, self.group, "a probe's share")
        reduced = _all_reduce(local.detach().clone(), dist.ReduceOp.SUM, self.group, "a probe's share")
        return local + (reduced - local.detach())

    def __repr__(self) -> str:
        return (f"ShardedObjective({type(self.model).__name__}, statistics={self.statistics!r}, "
                f"{len(self.names)} tensors, {self.num_parameters} parameters, rank {self.rank} of "
                f"{self.world_size}, {self.backend})")


@dataclass(frozen=True)
class Session:
    """Where this process stands: rank ``rank`` of ``world_size`` (``local_rank`` on its
    machine), computing on ``device``; ``backend`` is ``None`` for a single process."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    timeout: float

    @property
    def sharded(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that prints and writes files."""
        return self.rank == 0

    def agree(self, error: BaseException | None, status: int = 2) -> None:
        """A step every process checks together: stop every process if one failed.

        Each process passes the exception its step raised (or ``None``); one all-reduce tells
        every process which failed, so that none is left waiting in a later collective.  A
        single process re-raises its error.  Under several processes every one raises
        :class:`SetupFailed`: the lowest failed rank with its own message (the error is the
        ``__cause__``), rank 0 (if it did not fail) naming the failed ranks, the others quiet.

        Raises:
            SetupFailed (or a single process's own error).
        """
        if not self.sharded:
            if error is not None:
                raise error
            return
        flags = torch.zeros(self.world_size, dtype=torch.int64,
                            device=self.device if self.backend == "nccl" else "cpu")
        flags[self.rank] = 0 if error is None else status
        _all_reduce(flags, dist.ReduceOp.SUM, None, "the setup status")
        failed = [r for r in range(self.world_size) if int(flags[r])]
        if not failed:
            return
        code = max(int(flags[r]) for r in failed)
        if error is not None and self.rank == failed[0]:
            raise SetupFailed(str(error), code, quiet=False) from error
        raise SetupFailed(f"rank(s) {failed} of {self.world_size} failed before any product (the first one "
                          f"printed why)", code, quiet=self.rank != 0 or error is not None)


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer (torchrun sets it)") from None


@contextmanager
def distributed_session(device: str | torch.device = "auto", *, timeout: float = 600.0) -> Iterator[Session]:
    """The process group of a ``torchrun`` launch, for a ``with`` block, destroyed at its end.

    A block that ends normally ends with one more all-reduce, so no process tears the group
    down while another (rank 0 writing its files) is still inside the block.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by ``torchrun``, also across
    machines with ``--nnodes``; ``MASTER_ADDR`` and ``MASTER_PORT`` locate rank 0).  With
    ``WORLD_SIZE`` absent or 1 no group is made: a single process, rank 0 of 1.  Otherwise
    ``init_process_group`` with backend ``nccl`` on CUDA (one device per local rank,
    ``cuda:LOCAL_RANK``) and ``gloo`` on the CPU, and ``timeout`` seconds for every
    collective: a process whose peer has died or hangs raises instead of waiting forever.

    Args:
        device: ``"auto"`` (CUDA when present, else the CPU), ``"cpu"`` or ``"cuda"``; under
            several processes ``"cuda"`` means ``cuda:LOCAL_RANK``.
        timeout: seconds a collective (and the rendezvous) may wait, > 0.

    Yields:
        The :class:`Session`.

    Raises:
        ValueError: a bad ``timeout`` or device, an explicit ``cuda:N`` under several
            processes, fewer CUDA devices than local ranks, malformed torchrun variables.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    world_size = _environment_int("WORLD_SIZE", 1)
    rank = _environment_int("RANK", 0)
    local_rank = _environment_int("LOCAL_RANK", 0)
    resolved = resolve_device(device)
    if world_size <= 1:
        yield Session(0, 1, 0, resolved, None, float(timeout))
        return
    if resolved.type == "cuda":
        if str(device) not in ("auto", "cuda"):
            raise ValueError(f"--device {device} names one GPU, but {world_size} processes run: pass --device cuda "
                             "(each process takes cuda:LOCAL_RANK)")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                             "start at most that many processes per machine (--nproc-per-node)")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
        backend = "nccl"
    else:
        backend = "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)),
                                **({"device_id": resolved} if backend == "nccl" else {}))
    except RuntimeError as err:  # the rendezvous with rank 0 (MASTER_ADDR:MASTER_PORT) failed or timed out
        raise ShardFailure(f"rank {rank} of {world_size}: joining the process group failed within {timeout:g} s "
                           f"({_first_line(err)}); check that every process started and can reach "
                           f"MASTER_ADDR={os.environ.get('MASTER_ADDR')!r}") from err
    session = Session(dist.get_rank(), dist.get_world_size(), local_rank, resolved, backend, float(timeout))
    try:
        yield session
        # Every process leaves together: rank 0 may still be writing files while the others
        # are done, and a gloo group torn down under a peer that still holds its connections
        # has aborted a process (SIGABRT, "terminate called without an active exception") on
        # a loaded machine.  After an error there is no such wait: the failed process exits
        # and torchrun stops the others; and if this last wait fails (a peer already gone, a
        # group broken by an earlier failure the caller caught), the block's work is done and
        # nothing is lost: the group is torn down all the same.
        try:
            _all_reduce(torch.zeros(1, device=resolved if backend == "nccl" else "cpu"), dist.ReduceOp.SUM, None,
                        "the end of the run")
        except ShardFailure:
            pass
    finally:
        dist.destroy_process_group()
