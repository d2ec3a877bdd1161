"""Lanczos against power iteration for the top Hessian eigenvalue, in one run.

On the reference CN model (3.3 M parameters) with one batch of 256 synthetic AWA1-shaped
images and the 40 seen classes, at initialization and after ``--epochs`` of training:

1. a float64 reference top eigenvalue (``lanczos_top_eigenvalues`` in float64, tol 1e-10);
2. in float32, the number of Hessian-vector products and the wall time each method needs
   before its estimate is within ``--rel-tol`` (1e-3) of the reference: Lanczos (largest
   Ritz value of ``T_m`` after each step, full reorthogonalization) and power iteration
   (Rayleigh quotient after each product);
3. the seconds per Hessian-vector product.

Both methods share the matvec, the start vector and the stopping rule (distance to the
reference), so the comparison is of iterations only.

    python bench/landscape_speed.py [--epochs 5] [--rel-tol 1e-3] [--max-power 600] [--device cuda]
                                    [--json landscape_speed.json]

On a GPU every timed product ends in a host read of its Rayleigh quotient (a ``float()``),
which synchronizes the device, so the recorded wall times are complete.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from analysis import TrainConfig, load_dataset, preset_config, resolve_device, train
from analysis.io import environment_info, refuse_to_overwrite, write_json
from analysis.training import build_model
from landscape.hvp import HessianOperator
from landscape.lanczos import lanczos_tridiagonal
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Objective, zsl_batches


class TimedMatvec:
    """Wraps a matvec; records the wall time after each product and the Rayleigh quotient."""

    def __init__(self, matvec):
        self.matvec, self.times, self.rayleigh = matvec, [], []
        self.start = time.perf_counter()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        w = self.matvec(v)
        self.times.append(time.perf_counter() - self.start)
        self.rayleigh.append(float(v.double() @ w.double() / (v.double() @ v.double())))
        return w


def first_within(estimates: list[float], reference: float, rel_tol: float) -> int | None:
    for i, value in enumerate(estimates):
        if abs(value - reference) <= rel_tol * abs(reference):
            return i
    return None


def measure(model, batch, label: str, args) -> dict:
    # float64 reference
    device = batch.features.device
    model64 = build_model(model.config, 0).double().to(device)
    model64.load_state_dict(model.state_dict())
    batch64 = type(batch)(batch.features.double(), batch.targets, batch.attributes.double())
    obj64 = Objective(model64)
    op64 = HessianOperator(obj64, [batch64])
    reference = float(lanczos_top_eigenvalues(op64.matvec, obj64.num_parameters, tol=1e-10, max_steps=300,
                                              generator=torch.Generator().manual_seed(0)).eigenvalues[0])
    obj = Objective(model)
    op = HessianOperator(obj, [batch])
    n = obj.num_parameters
    start = torch.empty(n).bernoulli_(0.5, generator=torch.Generator().manual_seed(1)).mul_(2).sub_(1).to(device)
    op.matvec(start)  # warm-up: builds the reused gradient graph, so neither method pays for it

    timed = TimedMatvec(op.matvec)
    result = lanczos_tridiagonal(timed, n, args.max_lanczos, start=start, dtype=torch.float32)
    ritz = []
    for m in range(1, result.num_matvecs + 1):
        t = torch.diag(result.alpha[:m]) + torch.diag(result.beta[: m - 1], 1) + torch.diag(result.beta[: m - 1], -1)
        ritz.append(float(torch.linalg.eigvalsh(t)[-1]))
    k_lanczos = first_within(ritz, reference, args.rel_tol)

    timed_power = TimedMatvec(op.matvec)
    v = start / start.norm()
    for _ in range(args.max_power):
        w = timed_power(v)
        if abs(timed_power.rayleigh[-1] - reference) <= args.rel_tol * abs(reference):
            break
        v = w / w.norm()
    k_power = first_within(timed_power.rayleigh, reference, args.rel_tol)

    per_hvp = (timed_power.times[-1]) / len(timed_power.times)
    row = {
        "label": label, "reference": reference,
        "lanczos_hvps": None if k_lanczos is None else k_lanczos + 1,
        "lanczos_seconds": None if k_lanczos is None else timed.times[k_lanczos],
        "power_hvps": None if k_power is None else k_power + 1,
        "power_seconds": None if k_power is None else timed_power.times[k_power],
        "seconds_per_hvp": per_hvp,
    }
    fmt = lambda x, f: "not reached" if x is None else format(x, f)  # noqa: E731
    print(f"  {label:<16} reference {reference:11.5g} | Lanczos {fmt(row['lanczos_hvps'], 'd'):>5} HVPs "
          f"{fmt(row['lanczos_seconds'], '.2f'):>7} s | power {fmt(row['power_hvps'], 'd'):>5} HVPs "
          f"{fmt(row['power_seconds'], '.2f'):>7} s | {per_hvp * 1e3:.1f} ms/HVP")
    if row["lanczos_hvps"] and row["power_hvps"]:
        print(f"  {'':<16} Lanczos / power: {row['lanczos_hvps'] / row['power_hvps']:.3f} of the HVPs, "
              f"{row['lanczos_seconds'] / row['power_seconds']:.3f} of the time")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rel-tol", type=float, default=1e-3)
    parser.add_argument("--max-lanczos", type=int, default=60)
    parser.add_argument("--max-power", type=int, default=600)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (refuses to overwrite)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.json is not None:
        refuse_to_overwrite(args.json.parent, [args.json.name])
    data = load_dataset("AWA1").to(device)
    model = build_model(preset_config("cn", data.attribute_dim, data.feature_dim), 1).to(device)
    batch = zsl_batches(data, batch_size=256)[0]
    print(f"AWA1 (synthetic) · reference CN model ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
          f"parameters) · batch {batch.size} · {batch.attributes.shape[0]} seen classes · {device} · "
          f"{torch.get_num_threads()} threads · target: relative error <= {args.rel_tol:g}")
    rows = [measure(model, batch, "initialization", args)]
    train(model, data, TrainConfig(epochs=args.epochs, progress=False, device=str(device)))
    rows.append(measure(model, batch, f"after {args.epochs} epochs", args))
    if args.json is not None:
        write_json(args.json, {"config": vars(args), "environment": environment_info(str(device)), "rows": rows})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
