"""Shared cases of the sharded-probe tests: a tiny model, its data, the probes, and the
worker that ``torch.multiprocessing.spawn`` runs on each process (kept out of the test
module so that a spawned process imports little)."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path

import torch
from torch import Tensor

from analysis.model import AttributeEmbedderModel, preset_config
from analysis.synthetic import make_synthetic
from tests.conftest import TINY_SPEC
from landscape.distributed import SetupFailed, ShardFailure, ShardedObjective, distributed_session
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from landscape.hvp import HessianOperator, gradient_norms_by_layer, hessian_vector_product
from landscape.objective import Objective, zsl_batches
from landscape.spectral_density import spectral_density
from landscape.top_eigenvalues import lanczos_top_eigenvalues

DTYPES = {"float64": torch.float64, "float32": torch.float32}
# (name, dtype, trainval samples kept, batch size on each process: None = one batch, graph reuse)
CASES = (
    ("float64-even", "float64", 240, None),
    ("float64-uneven", "float64", 239, None),
    ("float64-uneven-batched", "float64", 239, 37),
    ("float32-even", "float32", 240, None),
    ("float32-uneven", "float32", 239, None),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(dtype: torch.dtype) -> AttributeEmbedderModel:
    """CN embedder 12 -> 8 -> 8 -> 32 (464 parameters) with moved running statistics."""
    gen = torch.Generator().manual_seed(3)
    model = AttributeEmbedderModel(preset_config("cn", 12, 32, hidden_dims=(8, 8)), generator=gen).to(dtype)
    with torch.no_grad():
        model(torch.rand(4, 32, generator=gen).to(dtype), torch.randn(7, 12, generator=gen).to(dtype))
    return model


def tiny_data(samples: int):
    data = make_synthetic(TINY_SPEC, seed=0)
    return dataclasses.replace(data, trainval=data.trainval[:samples])


def probe_all(objective: Objective, batches: list) -> dict[str, object]:
    """Every probe on ``objective``, each from its own seeded generator."""
    n, kw = objective.num_parameters, {"dtype": objective.dtype}
    op = HessianOperator(objective, batches)
    v = torch.randn(n, generator=torch.Generator().manual_seed(11), dtype=torch.float64).to(objective.dtype)
    top = lanczos_top_eigenvalues(op.matvec, n, k=3, generator=torch.Generator().manual_seed(0))
    density = spectral_density(op.matvec, n, num_probes=2, num_steps=12, generator=torch.Generator().manual_seed(2),
                               **kw)
    leaves = tuple(p.requires_grad_(True) for p in objective.params())
    share = objective.flatten(torch.autograd.grad(objective.mean_loss(leaves, batches), leaves))
    if isinstance(objective, ShardedObjective):  # differentiating the sharded loss gives this rank's share
        torch.distributed.all_reduce(share)
    return {
        "autograd_gradient": share,
        "loss": float(objective.mean_loss(objective.params(), batches)),
        "gradient": objective.flatten(objective.gradient(objective.params(), batches)).clone(),
        "gradient_norms": gradient_norms_by_layer(objective.model, batches, objective=objective),
        "hvp": hessian_vector_product(objective, objective.params(), v, batches).clone(),
        "top_eigenvalues": top.eigenvalues, "residuals": top.residuals, "lanczos_matvecs": top.num_matvecs,
        "hutchinson": hutchinson_trace(op.matvec, n, 8, generator=torch.Generator().manual_seed(1), **kw).value,
        "hutchpp": hutchpp_trace(op.matvec, n, 9, generator=torch.Generator().manual_seed(1), **kw).value,
        "density_nodes": density.nodes, "density_weights": density.weights,
    }


def single_process(case: tuple) -> dict[str, object]:
    """The reference: one process, every sample in one batch."""
    _, dtype, samples, _ = case
    model = tiny_model(DTYPES[dtype])
    batches = [b.to(dtype=DTYPES[dtype]) for b in zsl_batches(tiny_data(samples))]
    return probe_all(Objective(model), batches)


def _set_environment(rank: int, world_size: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))


def sharded_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """Every case sharded over the group, then an agreed setup failure; results to ``out``."""
    torch.set_num_threads(1)
    _set_environment(rank, world_size, port)
    results: dict[str, object] = {}
    with distributed_session("cpu", timeout=60) as session:
        for case in CASES:
            name, dtype, samples, batch_size = case
            model = tiny_model(DTYPES[dtype])
            batches = [b.to(dtype=DTYPES[dtype]) for b in zsl_batches(
                tiny_data(samples), batch_size=batch_size, shard=(session.rank, session.world_size))]
            objective = ShardedObjective(model)
            results[name] = {**probe_all(objective, batches), "shard_sizes": objective.shard_sizes(batches)}
        try:  # rank 1 fails a step checked together; nobody may be left waiting
            session.agree(ValueError("bad input on rank 1") if rank == 1 else None)
        except SetupFailed as err:
            results["agree"] = {"message": str(err), "quiet": err.quiet, "status": err.status,
                                "cause": repr(err.__cause__)}
        if rank == 0:  # rank 0 "writes its files" while rank 1 is done: nobody may leave before it
            time.sleep(1.0)
            results["finished_writing"] = time.time()
    results["left_the_group"] = time.time()
    torch.save(results, Path(out) / f"rank{rank}.pt")


def hanging_worker(rank: int, world_size: int, port: int, out: str, timeout: float) -> None:
    """Rank 1 stops answering after the rendezvous; rank 0 must fail within ``timeout``."""
    torch.set_num_threads(1)
    _set_environment(rank, world_size, port)
    with distributed_session("cpu", timeout=timeout) as session:
        model = tiny_model(torch.float64)
        batches = zsl_batches(tiny_data(240), shard=(session.rank, session.world_size))
        objective = ShardedObjective(model)
        op = HessianOperator(objective, [b.to(dtype=torch.float64) for b in batches])
        if rank == 1:
            time.sleep(timeout + 1)  # alive but silent: only the timeout can end rank 0's wait
            return
        start = time.perf_counter()
        try:
            lanczos_top_eigenvalues(op.matvec, objective.num_parameters, k=1,
                                    generator=torch.Generator().manual_seed(0))
            outcome = {"error": None}
        except ShardFailure as err:
            outcome = {"error": str(err)}
        outcome["seconds"] = time.perf_counter() - start
    torch.save(outcome, Path(out) / "rank0.pt")


def as_float(value: Tensor | float) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)
