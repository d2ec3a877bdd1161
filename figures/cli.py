"""``cnzsl figures``, registered through the ``cnzsl.commands`` entry point.

    cnzsl figures [--only NAME ...] [--fast] [--data-root ROOT] [--device auto] --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.cli import outcome, parse_seeds
from analysis.help_format import HelpFormatter, examples
from figures.context import FigureContext
from figures.registry import FIGURE_NAMES, figure_module, run_figures, select_figures

__all__ = ["register"]


def _written(out: Path, names: tuple[str, ...], published: list[str]) -> str:
    """What an interrupted or failed run left in ``out``: the figures it finished, and how
    to make the others."""
    rest = [name for name in names if name not in published]
    done = (f"{', '.join(published)} written to {out} (listed in figures.json)" if published
            else f"no figure was written to {out}")
    return f"{done}; not written: {', '.join(rest)}; make them with --only {' '.join(rest)}" if rest else done


def _figures(args: argparse.Namespace) -> int:
    if args.list:
        modules = [figure_module(name) for name in FIGURE_NAMES]
        width = max(len(m.PAPER) for m in modules) + 2
        for name, module in zip(FIGURE_NAMES, modules):
            print(f"{name:<22}{module.PAPER:<{width}}{module.TITLE}")
        return 0
    if args.out is None:
        raise ValueError("--out is required (the folder for the PNG/PDF figures and their data)")
    ctx = FigureContext(out=args.out, fast=args.fast, data_root=args.data_root, device=args.device,
                        seeds=parse_seeds(args.seeds), data_seed=args.data_seed, progress=not args.no_progress,
                        only_datasets=tuple(args.datasets or ()))
    names, published = select_figures(args.only or FIGURE_NAMES), []
    outcome(args).written = lambda: _written(ctx.out, names, published)
    summary = run_figures(ctx, names, plot_only=args.plot_only, overwrite=args.overwrite, published=published)
    print(f"{len(summary['figures'])} figures in {summary['total_seconds']:.0f} s; wrote {ctx.out}/figures.json")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``figures`` to the ``cnzsl`` command line."""
    p = subparsers.add_parser(
        "figures", formatter_class=HelpFormatter,
        help="regenerate the paper's figures and tables",
        description="Compute and draw the paper's figures (PNG and PDF) from synthetic data, or from the "
        "real GBU data under --data-root. Each figure caches its numbers in DIR/data/NAME.json, so "
        "--plot-only redraws without recomputing.",
        epilog=examples("cnzsl figures --list", "cnzsl figures --fast --out runs/figures-fast",
                        "cnzsl figures --only ablation_table --plot-only --overwrite --out runs/figures-fast"),
    )
    p.add_argument("--only", nargs="+", choices=FIGURE_NAMES, metavar="NAME",
                   help=f"figures to make (default: all): {', '.join(FIGURE_NAMES)}")
    p.add_argument("--fast", action="store_true", help="small budgets: a smoke run of a few minutes")
    p.add_argument("--data-root", type=Path, default=None,
                   help="GBU root with <DATASET>/att_splits.mat (and res101.mat); omitted: synthetic data")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="restrict to these data sets (default: all)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data generator")
    p.add_argument("--seeds", default="1,2,3", help="seeds averaged over where a figure trains models")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", type=str, default=None, metavar="DIR",
                   help="output folder for the figures, DIR/data/NAME.json and DIR/figures.json "
                   "(required unless --list)")
    p.add_argument("--plot-only", action="store_true", help="redraw from the cached data in DIR/data")
    p.add_argument("--overwrite", action="store_true", help="replace figures and data already in --out")
    p.add_argument("--list", action="store_true", help="list the figures and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(handler=_figures)
