"""``cnzsl landscape`` and ``cnzsl spectrum``, registered through the ``cnzsl.commands`` entry point.

    cnzsl landscape --dataset AWA2 [--data-root ROOT --synthetic-features] [--fast] [--epochs N]
                    [--probe-every N] [--lanczos-max-steps N] [--slice-points N] [--slice-samples N]
                    --device auto --out DIR
    cnzsl spectrum --checkpoint DIR/model.pt [--data-root ROOT] [--split trainval|test_seen]
                   [--per-layer] --out OUT
    torchrun --no-python --nproc-per-node N cnzsl spectrum ...      (sharded over N processes)

Both live behind the one ``landscape`` entry of the group (``register`` adds both), so the
installed entry points need no change when a command is added here.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from analysis.cli import add_data_options, outcome
from analysis.data import DataError
from analysis.help_format import HelpFormatter, examples
from landscape.budget import DEFAULT_BUDGET, FAST_BUDGET, LandscapeEstimate, expected_time_line
from landscape.comparison import MODEL_KINDS, LandscapeRun, run_landscape
from landscape.distributed import SetupFailed, ShardFailure
from landscape.objective import SPLITS
from landscape.spectrum import DTYPES, TRACE_METHODS, SpectrumRun, run_spectrum

__all__ = ["register"]


def _landscape(args: argparse.Namespace) -> int:
    budget = FAST_BUDGET if args.fast else DEFAULT_BUDGET
    chosen = {name: getattr(args, name) for name in DEFAULT_BUDGET if getattr(args, name) is not None}
    run = LandscapeRun(
        out=args.out, dataset=args.dataset, data_root=args.data_root, synthetic_features=args.synthetic_features,
        data_seed=args.data_seed, seed=args.seed, device=args.device,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()), fast=args.fast,
        overwrite=args.overwrite, progress=not args.no_progress, **{**budget, **chosen},
    )

    def announce(estimate: LandscapeEstimate) -> None:
        print(expected_time_line(estimate, run.epochs, run.fast), file=sys.stderr, flush=True)

    def report(result: dict) -> None:
        data = result["data"]
        print(f"{data['name']} ({data['source']}) · {run.epochs} epochs · probes every {run.probe_every} steps")
        header = f"  {'model':<24}{'median ||g||':>14}{'max top eig.':>14}{'median beta':>14}{'probes':>8}{'final loss':>12}"
        print(header)
        for kind, r in result["models"].items():
            s = r["summary"]
            beta = "nan" if math.isnan(s["median_effective_beta"]) else f"{s['median_effective_beta']:.4g}"
            print(f"  {r['label']:<24}{s['median_gradient_norm']:>14.4g}{s['max_top_eigenvalue']:>14.4g}"
                  f"{beta:>14}{s['probes']:>8}{s['final_train_loss']:>12.4f}", flush=True)
        outcome(args).results_printed = True

    run_landscape(run, report=report, announce=announce)
    print(f"wrote {run.out}/landscape.json, trajectories.png, slices.png")
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    """Rank 0 prints; another rank prints only an error of its own (prefixed with its rank)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    prefix = "cnzsl: error: " + (f"rank {rank}: " if rank else "")
    try:
        run = SpectrumRun(
            checkpoint=args.checkpoint, out=args.out, data_root=args.data_root, dataset=args.dataset,
            synthetic_features=True if args.synthetic_features else None, data_seed=args.data_seed,
            split=args.split, top_k=args.top_k, tol=args.tol, max_steps=args.max_steps,
            trace_method=args.trace_method, trace_matvecs=args.trace_matvecs, density_probes=args.density_probes,
            density_steps=args.density_steps, per_layer=args.per_layer,
            batch_size=None if args.batch_size == 0 else args.batch_size, statistics=args.statistics,
            dtype=args.dtype, seed=args.seed, device=args.device, timeout=args.timeout,
            overwrite=args.overwrite, progress=not args.no_progress,
        )
        def report(result: dict) -> None:
            _print_spectrum(result, run)
            outcome(args).results_printed = True

        result = run_spectrum(run, report=report)
    except SetupFailed as err:  # some rank's setup failed: printed once, by the first failed rank and rank 0
        if not err.quiet:
            print(f"{prefix}{err}", file=sys.stderr)
        return err.status
    except ShardFailure as err:  # a process died or hung: every survivor says so
        print(f"{prefix}{err}", file=sys.stderr)
        return 1
    except (DataError, ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        if isinstance(err, OSError) and outcome(args).results_printed:
            raise  # a failed write after the report: the command's edge says what was kept
        # raised before the processes met, from the same input on every rank: rank 0 speaks for all
        if rank == 0:
            print(f"{prefix}{err}", file=sys.stderr)
        return 2
    if result is not None:  # rank 0 printed before writing
        print(f"wrote {run.out}/spectrum.json, spectrum.png")
    return 0


def _print_spectrum(result: dict, run: SpectrumRun) -> None:
    data, dist = result["data"], result["distributed"]
    where = (f"{dist['world_size']} processes ({dist['backend']}, shards of {min(dist['shard_sizes'])}-"
             f"{max(dist['shard_sizes'])} samples)" if dist["world_size"] > 1 else "1 process")
    print(f"{data['name']} ({data['source']}) {data['split']}: {data['samples']} samples · {result['model']['type']} "
          f"· {result['objective']['dtype']} · {where}")
    print(f"  loss {result['loss']:.6g}   ||grad|| {result['gradient_norm']:.6g}")
    values = "  ".join(f"{v:.6g} (±{r:.1g})" for v, r in zip(result["top_eigenvalues"], result["residuals"]))
    print(f"  top {len(result['top_eigenvalues'])} eigenvalues (residual): {values}"
          + ("" if result["lanczos_converged"] else f"  [not within --tol {run.tol:g} after "
             f"{result['lanczos_matvecs']} steps: raise --max-steps]"))
    t = result["trace"]
    print(f"  trace ({t['method']}, {t['num_matvecs']} products) {t['value']:.6g} ± {t['stderr']:.3g}")
    d = result["density"]
    print(f"  SLQ density: {len(d['nodes'])} probes x {d['steps']} steps; mean eigenvalue "
          f"{d['moment1']['value']:.4g} ± {d['moment1']['stderr']:.2g}")
    for group, layer in result.get("layers", {}).items():
        lt = layer["trace"]
        print(f"  {group:<14} n {layer['parameters']:>9}  top {layer['top_eigenvalues'][0]:<10.5g} trace "
              f"{lt['value']:.4g} ± {lt['stderr']:.2g}  ||grad|| {layer['gradient_norm']:.4g}")
    print(f"  {result['num_hvps']} Hessian-vector products, {result['hvp_seconds_mean']:.3g} s each, "
          f"{result['seconds']:.1f} s in all")


_BUDGET_HELP = {  # what each budget option of landscape.comparison.LandscapeRun sets
    "epochs": "training epochs per model", "probe_every": "training steps between probes",
    "lanczos_max_steps": "most Hessian-vector products (Lanczos steps) per top-eigenvalue probe",
    "slice_points": "grid points per axis of the 2-D slices",
    "slice_samples": "trainval samples the slices are evaluated on",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``landscape`` and ``spectrum`` to the ``cnzsl`` command line."""
    p = subparsers.add_parser(
        "landscape", formatter_class=HelpFormatter,
        help="compare the loss surfaces of a classifier and ZSL MLPs without/with CN",
        description="Train a traditional classifier, the ZSL MLP without CN and with CN on the same data; "
        "record gradient norm, top Hessian eigenvalue and effective beta-smoothness along training and "
        "final 2-D loss slices; write DIR/landscape.json and PNG plots.\n\n"
        "Budget: the default (below) takes about one CPU-minute for AWA2, 1.5 min on a 2-core VM loaded by "
        "other jobs; until 2026-11-29 the default was 5 epochs and 21 slice points per axis (3.3 min there). "
        "--fast is a smoke run (half a CPU-minute, 48 s there). An option given explicitly always wins over "
        "--fast. Before training, the command times each kind of work once on the actual models and data and "
        "prints the expected time.",
        epilog=examples("cnzsl landscape --dataset AWA2 --out runs/landscape",
                        "cnzsl landscape --fast --epochs 2 --out runs/landscape-smoke",
                        "cnzsl landscape --models mlp,cn --probe-every 50 --device cuda --out runs/landscape-gpu"),
    )
    add_data_options(p, default_dataset="AWA2")
    p.add_argument("--fast", action="store_true",
                   help="smoke-test budget for every budget option below that is left unset")
    for name, value in DEFAULT_BUDGET.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, dest=name,
                       help=f"{_BUDGET_HELP[name]} (default: {value}; --fast: {FAST_BUDGET[name]})")
    p.add_argument("--seed", type=int, default=1, help="seed of weights and shuffles (probes: seed + 1, + 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--models", default=",".join(MODEL_KINDS), help="comma-separated subset of the models")
    p.add_argument("--out", type=str, required=True, metavar="DIR",
                   help="output folder for landscape.json, trajectories.png, slices.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=_landscape)

    _register_spectrum(subparsers)


def _register_spectrum(subparsers: argparse._SubParsersAction) -> None:
    defaults = SpectrumRun(checkpoint=Path("model.pt"), out=Path("out"))
    p = subparsers.add_parser(
        "spectrum", formatter_class=HelpFormatter,
        epilog=examples("cnzsl spectrum --checkpoint runs/awa2-cn/model.pt --out runs/spectrum-cn",
                        "torchrun --no-python --standalone --nproc-per-node 2 cnzsl spectrum "
                        "--checkpoint runs/awa2-cn/model.pt --per-layer --out runs/spectrum-cn-2"),
        help="full-data Hessian spectrum of a trained model (sharded under torchrun)",
        description="At the parameters of a model saved by `cnzsl train`, the Hessian of the training objective "
        "on every sample of a split (CN/BatchNorm statistics of the seen classes, never updated): top-k "
        "eigenvalues with residuals (Lanczos), trace ± standard error (Hutchinson or Hutch++), SLQ spectral "
        "density, gradient norm; per layer with --per-layer. Writes OUT/spectrum.json and OUT/spectrum.png. "
        "Under `torchrun --no-python --nproc-per-node N cnzsl spectrum ...` (or --nnodes M across machines) each "
        "process holds a rank-strided shard of the data and every product is all-reduced (gloo on the CPU, "
        "nccl on CUDA): the same numbers, to round-off.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="DIR/model.pt written by `cnzsl train`")
    p.add_argument("--dataset", default=None, help="data set (default: the checkpoint's)")
    p.add_argument("--data-root", type=Path, default=None, help="GBU root (default: the checkpoint's)")
    p.add_argument("--synthetic-features", action="store_true",
                   help="with --data-root: real attributes, synthetic features (default: the checkpoint's)")
    p.add_argument("--data-seed", type=int, default=None, help="seed of synthetic data (default: the checkpoint's)")
    p.add_argument("--split", default=defaults.split, choices=SPLITS, help="the samples of the objective")
    p.add_argument("--top-k", type=int, default=defaults.top_k, help="number of top eigenvalues")
    p.add_argument("--tol", type=float, default=defaults.tol, help="Lanczos: relative tolerance on each eigenvalue")
    p.add_argument("--max-steps", type=int, default=None, help="Lanczos Krylov dimension limit (default 100 + 20 k)")
    p.add_argument("--trace-method", default=defaults.trace_method, choices=TRACE_METHODS, help="trace estimator")
    p.add_argument("--trace-matvecs", type=int, default=defaults.trace_matvecs, help="products spent on the trace")
    p.add_argument("--density-probes", type=int, default=defaults.density_probes, help="SLQ probes")
    p.add_argument("--density-steps", type=int, default=defaults.density_steps, help="Lanczos steps per SLQ probe")
    p.add_argument("--per-layer", action="store_true", help="also each layer's Hessian block (eigenvalues, trace)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size,
                   help="samples per product piece on each process (bounds memory; 0: the whole shard at once)")
    p.add_argument("--statistics", default=defaults.statistics, choices=("batch", "running"),
                   help="batch: the training objective; running: eval-mode statistics")
    p.add_argument("--dtype", default=defaults.dtype, choices=tuple(DTYPES), help="working precision")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the start vectors and probes")
    p.add_argument("--device", default=defaults.device,
                   help="auto (CUDA when present), cpu or cuda; under torchrun each process takes cuda:LOCAL_RANK")
    p.add_argument("--timeout", type=float, default=defaults.timeout,
                   help="seconds a process waits for the others before it stops with an error")
    p.add_argument("--out", type=str, required=True, metavar="DIR", help="output folder for spectrum.json and spectrum.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_spectrum)
