"""``cnzsl landscape``, registered through the ``cnzsl.commands`` entry point.

    cnzsl landscape --dataset AWA2 [--data-root ROOT --synthetic-features] --epochs N
                    --device auto --out DIR
"""

from __future__ import annotations

import argparse
import math

from analysis.cli import add_data_options, outcome
from analysis.help_format import HelpFormatter, examples
from landscape.comparison import MODEL_KINDS, LandscapeRun, run_landscape

__all__ = ["register"]


def _landscape(args: argparse.Namespace) -> int:
    run = LandscapeRun(
        out=args.out, dataset=args.dataset, data_root=args.data_root, synthetic_features=args.synthetic_features,
        data_seed=args.data_seed, epochs=args.epochs, seed=args.seed, device=args.device,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()), probe_every=args.probe_every,
        slice_points=args.slice_points, overwrite=args.overwrite, progress=not args.no_progress,
    )
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

    run_landscape(run, report=report)
    print(f"wrote {run.out}/landscape.json, trajectories.png, slices.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``landscape`` to the ``cnzsl`` command line."""
    p = subparsers.add_parser(
        "landscape", formatter_class=HelpFormatter,
        help="compare the loss surfaces of a classifier and ZSL MLPs without/with CN",
        description="Train a traditional classifier, the ZSL MLP without CN and with CN on the same data; "
        "record gradient norm, top Hessian eigenvalue and effective beta-smoothness along training and "
        "final 2-D loss slices; write DIR/landscape.json and PNG plots.",
        epilog=examples("cnzsl landscape --dataset AWA2 --epochs 5 --out runs/landscape",
                        "cnzsl landscape --models mlp,cn --probe-every 50 --device cuda --out runs/landscape-gpu"),
    )
    add_data_options(p, default_dataset="AWA2")
    p.add_argument("--epochs", type=int, default=5, help="training epochs per model")
    p.add_argument("--seed", type=int, default=1, help="seed of weights and shuffles (probes: seed + 1, + 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--models", default=",".join(MODEL_KINDS), help="comma-separated subset of the models")
    p.add_argument("--probe-every", type=int, default=25, help="training steps between probes")
    p.add_argument("--slice-points", type=int, default=21, help="grid points per axis of the 2-D slices")
    p.add_argument("--out", type=str, required=True, metavar="DIR",
                   help="output folder for landscape.json, trajectories.png, slices.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=_landscape)
