"""Sharded Hessian spectra: HVP time and whole-spectrum time against the number of processes.

The reference CN model (3.3 M parameters, seed 1, at init: the cost of a product does not
depend on the weights) on the synthetic AWA2 preset's trainval images (``--samples``, all
23 527 by default), with the 40 seen classes.  For each configuration ``PxT`` (``P``
processes of ``T`` threads each; default ``1x1,2x1,1x2`` on the CPU), ``P`` processes are
started with ``torch.multiprocessing`` and a gloo group (nccl, one GPU per process, with
``--device cuda``), exactly as ``torchrun`` would start them, each holding its rank-strided
shard in one batch (``landscape.distributed.ShardedObjective``), and rank 0 times

1. a full-data Hessian-vector product (median of ``--repeats``, after one warm-up);
2. a whole spectrum with the budgets of ``cnzsl spectrum`` scaled down: top-``k`` Lanczos
   (``--top-k``, tol 1e-3), Hutchinson with ``--trace-matvecs`` probes, SLQ with
   ``--density-probes`` x ``--density-steps``.

It prints one row per configuration with the speed-up over the first one and checks that
every configuration found the same top eigenvalue and trace (relative 1e-4 in float32).
What is sharded: the per-sample part of each product (the ``[B, d_z] x [d_z, K]`` logits and
their derivatives).  What is not: the embedder's pass over the ``K`` class attributes and
the Krylov arithmetic on ``n``-vectors (Lanczos reorthogonalization), which every process
repeats; so the speed-up of the whole spectrum is below that of a product (Amdahl).

    python bench/spectrum_scaling.py [--samples 23527] [--configs 1x1,2x1,1x2] [--device cpu]
    python bench/spectrum_scaling.py --device cuda --configs 1x1,2x1,4x1,8x1     # GPUs of one machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from analysis.datasets import load_dataset
from analysis.model import preset_config
from analysis.training import build_model
from landscape.distributed import ShardedObjective, distributed_session
from landscape.hutchinson import hutchinson_trace
from landscape.hvp import HessianOperator
from landscape.objective import Objective, zsl_batches
from landscape.spectral_density import spectral_density
from landscape.top_eigenvalues import lanczos_top_eigenvalues


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def worker(rank: int, world_size: int, threads: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    with distributed_session(args.device, timeout=1800) as session:
        data = load_dataset("AWA2")
        data = dataclasses.replace(data, trainval=data.trainval[: args.samples])
        model = build_model(preset_config("cn", data.attribute_dim, data.feature_dim), seed=1).to(session.device)
        shard = (session.rank, session.world_size) if session.sharded else None
        batches = [b.to(session.device) for b in zsl_batches(data, shard=shard)]
        del data
        objective = ShardedObjective(model) if session.sharded else Objective(model)
        shard_sizes = objective.shard_sizes(batches) if session.sharded else [batches[0].size]
        op = HessianOperator(objective, batches)
        n = objective.num_parameters
        v = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(session.device)
        op.matvec(v)  # warm-up
        times = []
        for _ in range(args.repeats):
            _sync(session.device)
            start = time.perf_counter()
            op.matvec(v)
            _sync(session.device)
            times.append(time.perf_counter() - start)
        _sync(session.device)
        start = time.perf_counter()
        kw = {"dtype": objective.dtype, "device": objective.device}
        top = lanczos_top_eigenvalues(op.matvec, n, k=args.top_k, generator=torch.Generator().manual_seed(0), **kw)
        trace = hutchinson_trace(op.matvec, n, args.trace_matvecs, generator=torch.Generator().manual_seed(1), **kw)
        spectral_density(op.matvec, n, num_probes=args.density_probes, num_steps=args.density_steps,
                         generator=torch.Generator().manual_seed(2), **kw)
        _sync(session.device)
        seconds = time.perf_counter() - start
        if session.is_main:
            Path(out).write_text(json.dumps({
                "hvp_seconds": statistics.median(times), "spectrum_seconds": seconds,
                "products": top.num_matvecs + args.trace_matvecs + args.density_probes * args.density_steps,
                "top_eigenvalues": top.eigenvalues.tolist(), "trace": trace.value, "parameters": n,
                "shard_sizes": shard_sizes,
            }))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=23527, help="trainval images (AWA2 has 23 527)")
    parser.add_argument("--configs", default=None, help="PxT list: P processes of T threads (CPU default 1x1,2x1,1x2)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per process)")
    parser.add_argument("--repeats", type=int, default=5, help="timed products per configuration")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--trace-matvecs", type=int, default=20)
    parser.add_argument("--density-probes", type=int, default=2)
    parser.add_argument("--density-steps", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    default = "1x1,2x1,1x2" if args.device == "cpu" else f"1x1,{max(torch.cuda.device_count(), 1)}x1"
    configs = [tuple(int(x) for x in c.split("x")) for c in (args.configs or default).split(",")]
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
               + (f", {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}" if args.device == "cuda" else ""))
    print(f"{machine}; reference CN model, synthetic AWA2, {args.samples} images, device {args.device}")
    print(f"{'config':>8}{'shards':>16}{'HVP s':>10}{'speed-up':>10}{'spectrum s':>12}{'speed-up':>10}"
          f"{'products':>10}{'top eigenvalue':>16}{'trace':>12}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes, threads in configs:
            out = str(Path(tmp) / f"{processes}x{threads}.json")
            mp.spawn(worker, args=(processes, threads, _free_port(), args, out), nprocs=processes, join=True)
            row = {"processes": processes, "threads": threads, **json.loads(Path(out).read_text())}
            rows.append(row)
            base = rows[0]
            print(f"{processes}x{threads:<6}{str(row['shard_sizes']):>16}{row['hvp_seconds']:>10.3f}"
                  f"{base['hvp_seconds'] / row['hvp_seconds']:>9.2f}x{row['spectrum_seconds']:>12.1f}"
                  f"{base['spectrum_seconds'] / row['spectrum_seconds']:>9.2f}x{row['products']:>10}"
                  f"{row['top_eigenvalues'][0]:>16.7g}{row['trace']:>12.5g}", flush=True)
    for row in rows[1:]:  # the same spectrum whatever the sharding (float32 round-off)
        for key, value in (("top eigenvalue", row["top_eigenvalues"][0]), ("trace", row["trace"])):
            ref = rows[0]["top_eigenvalues"][0] if key == "top eigenvalue" else rows[0]["trace"]
            if abs(value - ref) > 1e-4 * abs(ref):
                raise SystemExit(f"{row['processes']}x{row['threads']}: {key} {value} differs from {ref}")
    print("every configuration found the same top eigenvalue and trace (relative 1e-4)")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
