"""The GPU fast path against the authors' loop, in one run, self-checking (issue: "Fast on the GPU").

Rows, all on the same device, data (synthetic AWA1-shaped) and recipe (reference CN
model, 50 epochs, batch 256):

    (a) the authors' loop, as rebuilt in bench/train_speed.py (DataLoader over a list)
    (b) the plain device-resident loop            (analysis.training.train, fast_path="plain")
    (c) the fast path: whole epochs as CUDA graphs (fast_path="auto" -> "graph" on CUDA)
    (d) S = 1, 8, 64 seeds as one vectorized model (analysis.seed_ensemble.train_seeds)
    (e) seconds per Hessian-vector product and for the top eigenvalue to 1e-3 (Lanczos)

and prints seconds, the ratio against (a), and the peak GPU memory of each row; writes
everything to ``--json``.  It checks its own results and exits with status 1, after
printing the table, when one disagrees: (c) against (b) (per-epoch loss to ``--rtol``,
ZSL and GZSL-H accuracy within ``--acc-tol`` points), the seed-1 member of every (d) run
against (c), and the Lanczos eigenvalue against a float64 reference.

    python bench/gpu_speed.py [--epochs 50] [--seeds 1,8,64] [--json gpu_speed.json]
    python bench/gpu_speed.py --device cpu --epochs 1 --seeds 1,2   # a smoke run without a GPU

Targets (issue 5): (c) at least 20x faster than (a); 64 seeds at most 3x the time of one.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from analysis import TrainConfig, build_model, evaluate, load_dataset, preset_config, resolve_device, train
from analysis.io import environment_info, refuse_to_overwrite, write_json
from analysis.seed_ensemble import train_seeds
from landscape.hvp import HessianOperator
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Objective, zsl_batches

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed import authors_loop  # noqa: E402  (the baseline is defined once, in train_speed.py)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _accuracies(model, data) -> dict[str, float]:
    scores = evaluate(model, data).percent()
    return {"zsl_unseen": scores["zsl_unseen"], "gzsl_harmonic": scores["gzsl_harmonic"]}


def _agree(name: str, loss, ref_loss, acc, ref_acc, args, failures: list[str]) -> None:
    loss, ref_loss = torch.tensor(loss), torch.tensor(ref_loss)
    worst = float(((loss - ref_loss).abs() / ref_loss.abs()).max())
    if worst > args.rtol:
        failures.append(f"{name}: per-epoch loss differs from the reference by {worst:.2e} relative (> {args.rtol:g})")
    for key in acc:
        if abs(acc[key] - ref_acc[key]) > args.acc_tol:
            failures.append(f"{name}: {key} {acc[key]:.2f} % against {ref_acc[key]:.2f} % (> {args.acc_tol} points)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="AWA1")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", default="1,8,64", help="ensemble sizes S for row (d)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rtol", type=float, default=1e-3, help="per-epoch loss agreement (float32 runs)")
    parser.add_argument("--acc-tol", type=float, default=1.0, help="accuracy agreement, percentage points")
    parser.add_argument("--json", type=Path, default=Path("gpu_speed.json"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    refuse_to_overwrite(args.json.parent, [args.json.name], args.overwrite)
    device = resolve_device(args.device)
    sizes = [int(s) for s in args.seeds.split(",")]
    data = load_dataset(args.dataset)
    config = preset_config("cn", data.attribute_dim, data.feature_dim)
    recipe = TrainConfig(epochs=args.epochs, device=str(device), progress=False)
    failures: list[str] = []
    rows: list[dict] = []

    # warm-up (CUDA context, cuBLAS handles, allocator): one short run of each kind, not timed
    warm = replace(recipe, epochs=min(2, args.epochs))
    authors_loop(data, warm, "cn")
    train(build_model(config, 1), data, replace(warm, fast_path="plain"))
    train(build_model(config, 1), data, warm)
    train_seeds(config, data, warm, [1, 2])

    _reset_peak(device)
    rows.append({"row": "(a) authors' loop", "seconds": authors_loop(data, recipe, "cn"), "peak_mib": _peak_mib(device)})

    _reset_peak(device)
    plain_model = build_model(config, 1)
    plain = train(plain_model, data, replace(recipe, fast_path="plain"))
    rows.append({"row": "(b) plain device-resident loop", "seconds": plain.seconds, "peak_mib": _peak_mib(device)})
    plain_acc = _accuracies(plain_model, data)

    _reset_peak(device)
    fast_model = build_model(config, 1)
    fast = train(fast_model, data, recipe)
    rows.append({"row": f"(c) fast path ({fast.path})", "seconds": fast.seconds, "peak_mib": _peak_mib(device)})
    fast_acc = _accuracies(fast_model, data)
    if device.type == "cuda" and fast.path != "graph":
        failures.append(f"(c) ran the {fast.path!r} path on CUDA; expected 'graph'")
    _agree("(c) fast path vs (b) plain", fast.loss, plain.loss, fast_acc, plain_acc, args, failures)

    ensemble_seconds = {}
    for s in sizes:
        _reset_peak(device)
        models, histories = train_seeds(config, data, recipe, list(range(1, s + 1)))
        ensemble_seconds[s] = histories[0].seconds
        rows.append({"row": f"(d) {s} seed{'s' if s > 1 else ''} vectorized ({histories[0].path})",
                     "seconds": histories[0].seconds, "peak_mib": _peak_mib(device),
                     "seconds_per_seed": histories[0].seconds / s})
        _agree(f"(d) S={s}, seed 1 vs (c)", histories[0].loss, fast.loss, _accuracies(models[0], data), fast_acc,
               args, failures)
        del models

    # (e) HVP and top eigenvalue of the trained CN model, one batch of 256
    batch = zsl_batches(data.to(device), batch_size=256)[0]
    objective = Objective(fast_model)
    operator = HessianOperator(objective, [batch])
    n = objective.num_parameters
    v = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(device)
    operator.matvec(v)  # builds the reused gradient graph
    _reset_peak(device)
    start = time.perf_counter()
    for _ in range(20):
        operator.matvec(v)
    _sync(device)
    per_hvp = (time.perf_counter() - start) / 20
    rows.append({"row": "(e) one Hessian-vector product", "seconds": per_hvp, "peak_mib": _peak_mib(device)})
    _reset_peak(device)
    start = time.perf_counter()
    top = lanczos_top_eigenvalues(operator.matvec, n, tol=1e-3, generator=torch.Generator().manual_seed(1),
                                  dtype=torch.float32, device=device)
    _sync(device)
    rows.append({"row": f"(e) top eigenvalue to 1e-3 ({top.num_matvecs} HVPs)", "seconds": time.perf_counter() - start,
                 "peak_mib": _peak_mib(device)})
    model64 = build_model(config, 1).double().to(device)
    model64.load_state_dict(fast_model.state_dict())
    batch64 = type(batch)(batch.features.double(), batch.targets, batch.attributes.double())
    op64 = HessianOperator(Objective(model64), [batch64])
    reference = float(lanczos_top_eigenvalues(op64.matvec, n, tol=1e-10, max_steps=300, dtype=torch.float64,
                                              device=device, generator=torch.Generator().manual_seed(0)).eigenvalues[0])
    error = abs(float(top.eigenvalues[0]) - reference) / abs(reference)
    if not error <= 2e-3:  # 1e-3 residual tolerance; float32 HVPs add their rounding
        failures.append(f"(e) top eigenvalue {float(top.eigenvalues[0]):.6g} vs float64 {reference:.6g}: "
                        f"relative error {error:.2e}")

    base = rows[0]["seconds"]
    print(f"{args.dataset} (synthetic, {data.trainval.numel()} trainval images) · CN model "
          f"({objective.num_parameters / 1e6:.2f} M parameters) · {args.epochs} epochs · "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}")
    print(f"  {'row':<44}{'seconds':>10}{'(a) / row':>11}{'peak MiB':>10}")
    for row in rows:
        ratio = base / row["seconds"] if row["row"][:3] in ("(a)", "(b)", "(c)", "(d)") else None
        row["speedup_vs_a"] = ratio
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(f"  {row['row']:<44}{row['seconds']:>10.3f}{'' if ratio is None else f'{ratio:.1f}x':>11}{peak:>10}")
    targets = {"fast_path_speedup": base / fast.seconds}
    if 1 in ensemble_seconds and 64 in ensemble_seconds:
        targets["seeds64_over_seeds1"] = ensemble_seconds[64] / ensemble_seconds[1]
    print("  targets: fast path >= 20x the authors' loop: "
          f"{targets['fast_path_speedup']:.1f}x" + (f"; 64 seeds <= 3x one seed: {targets['seeds64_over_seeds1']:.2f}x"
                                                     if "seeds64_over_seeds1" in targets else ""))
    print(f"  top eigenvalue {float(top.eigenvalues[0]):.6g} (float64 reference {reference:.6g}, error {error:.1e})")
    write_json(args.json, {"args": vars(args), "rows": rows, "targets": targets, "failures": failures,
                           "environment": environment_info(device)})
    print(f"wrote {args.json}")
    if failures:
        print("SELF-CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("self-checks passed: fast path = plain loop, members = single runs, eigenvalue = float64 reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
