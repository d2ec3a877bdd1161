"""``cnzsl variance`` and ``cnzsl attributes``, registered through the ``cnzsl.commands``
entry point (see :mod:`analysis.cli`).

    cnzsl variance [--dataset CUB[,SUN,...]] [--data-root ROOT] --out DIR [--num-inits N]
    cnzsl attributes --dataset CUB[,SUN,...] [--data-root ROOT] [--json]

Every row has a kind (``claim``, ``identity``, ``expected-failure``, ``observation``: see
:mod:`variance.report`) and the summary line counts each kind separately, e.g.
``claims 7/7 pass, identities 20/20 hold, expected failures 12/12 fail as predicted,
observations 3``; ``variance.json`` holds the same counts under ``summary``.

With ``--data-root`` the attributes are the real ones (``ROOT/<DATASET>/att_splits.mat``)
and the features real where ``res101.mat`` is present, synthetic otherwise (the table and
the JSON say which); without it, the synthetic preset of each data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analysis.cli import outcome
from analysis.data import ZSLData
from analysis.datasets import DATASETS, canonical_dataset_name, load_dataset
from analysis.gbu import dataset_dir, read_att_splits
from analysis.help_format import HelpFormatter, examples
from analysis.io import environment_info, write_json
from analysis.output_folder import OutputFolder
from analysis.synthetic import make_synthetic
from variance.attribute_statistics import attribute_statistics, format_attribute_table
from variance.report import (
    format_summary,
    format_variance_table,
    summarize_kinds,
    training_rows,
    variance_report,
    variance_report_steps,
)

__all__ = ["register"]


def _dataset_names(arg: str | None, data_root: Path | None) -> list[str]:
    if arg:
        return [canonical_dataset_name(n.strip()) for n in arg.split(",") if n.strip()]
    if data_root is not None:
        found = [n for n in DATASETS if (Path(data_root) / n / "att_splits.mat").is_file()]
        if not found:
            raise ValueError(f"no <DATASET>/att_splits.mat under {data_root}; pass --data-root of a GBU folder")
        return found
    return ["CUB"]


def _load(name: str, data_root: Path | None, seed: int) -> ZSLData:
    if data_root is None:
        return make_synthetic(name, seed=seed)
    has_features = (dataset_dir(data_root, name) / "res101.mat").is_file()
    return load_dataset(name, data_root=data_root, synthetic_features=not has_features, seed=seed)


def _variance(args: argparse.Namespace) -> int:
    for option, value, least in (("--num-inits", args.num_inits, 2), ("--width", args.width, 1)):
        if value < least:
            raise ValueError(f"{option} must be at least {least}, got {value}"
                             + (" (a standard error needs two inits)" if option == "--num-inits" else ""))
    with OutputFolder(args.out, ["variance.json"], overwrite=args.overwrite) as folder:
        names = _dataset_names(args.dataset, args.data_root)
        rows, start = [], time.perf_counter()
        # one step per group of rows (variance_report_steps per data set), then V4 along training
        with tqdm(total=len(names) * variance_report_steps() + 1, unit="step", desc="variance",
                  disable=args.no_progress, file=sys.stderr) as bar:
            for name in names:
                data = _load(name, args.data_root, args.data_seed)
                if args.no_progress:
                    print(f"{name}: {data.source} data, {args.num_inits} inits per embedder row ...", file=sys.stderr)

                def step(label: str, name: str = name) -> None:
                    bar.set_postfix_str(f"{name}: {label}", refresh=False)
                    bar.update(1)

                rows += variance_report(data, num_inits=args.num_inits, width=args.width,
                                        generator=torch.Generator().manual_seed(args.seed), progress=step)
            bar.set_postfix_str("V4 along training (synthetic, 3 seeds)")
            rows += training_rows(data_seed=args.data_seed)
            bar.update(1)
        print(format_variance_table(rows))
        summary = format_summary(rows)
        print(f"{summary} · {time.perf_counter() - start:.1f} s", flush=True)
        outcome(args).results_printed = True  # before variance.json is written
        write_json(folder.stage("variance.json"), {
            "config": {"datasets": names, "data_root": args.data_root, "num_inits": args.num_inits,
                       "width": args.width, "seed": args.seed, "data_seed": args.data_seed},
            "environment": environment_info("cpu"),
            "summary": {"line": summary, "by_kind": summarize_kinds(rows),
                        # before the kinds: rows whose verdict was the one expected (observations excluded)
                        "confirmed": sum(bool(r.confirmed) for r in rows), "rows": len(rows)},
            "rows": [{"dataset": r.dataset, "source": r.source, "kind": r.kind, "expected": r.expected,
                      "confirmed": r.confirmed, **r.check.__dict__} for r in rows],
        })
    print(f"wrote {folder.out / 'variance.json'}")
    return 0


def _attributes(args: argparse.Namespace) -> int:
    summaries = {}
    for name in _dataset_names(args.dataset, args.data_root):
        if args.data_root is None:
            att, label = make_synthetic(name, seed=args.data_seed).attributes, f"{name} (synthetic)"
        else:
            att, label = read_att_splits(dataset_dir(args.data_root, name) / "att_splits.mat").attributes, name
        summaries[label] = attribute_statistics(att).summary()
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else next(iter(summaries.values())), indent=2))
    else:
        print(format_attribute_table(summaries))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``variance`` and ``attributes`` to the ``cnzsl`` command line."""
    fmt = HelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dataset", default=None,
                        help=f"data set(s), comma-separated, from {', '.join(DATASETS)} "
                        "(default: every one under --data-root, else CUB)")
    common.add_argument("--data-root", type=Path, default=None,
                        help="GBU root holding <DATASET>/att_splits.mat; omitted: synthetic presets")
    common.add_argument("--data-seed", type=int, default=0, help="seed of synthetic attributes/features")

    p = subparsers.add_parser("variance", parents=[common], formatter_class=fmt,
                              help="check the forward-pass variance claims V1-V5",
                              description="Check claims V1-V5 (normalize+scale, attributes normalization, "
                              "deep embedders, CN, the standardization Jacobian) by Monte Carlo over "
                              "random initializations; print the table, every row labelled claim, identity, expected-failure or "
                              "observation, with a summary that counts each kind, and write DIR/variance.json.",
                              epilog=examples("cnzsl variance --dataset CUB --out runs/variance",
                                              "cnzsl variance --data-root data/xlsa17 --num-inits 200 "
                                              "--out runs/variance-real"))
    p.add_argument("--out", type=str, required=True, metavar="DIR", help="output folder for variance.json")
    p.add_argument("--num-inits", type=int, default=100, help="random initializations per embedder row")
    p.add_argument("--width", type=int, default=1024, help="hidden width of the deep embedders")
    p.add_argument("--seed", type=int, default=0, help="seed of every Monte Carlo draw")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR/variance.json")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (one line per data set instead)")
    p.set_defaults(handler=_variance)

    a = subparsers.add_parser("attributes", parents=[common], formatter_class=fmt,
                              help="statistics of class-attribute matrices (claim V3)",
                              description="Per data set: D'Agostino-Pearson normality (chi2, p-value) per "
                              "attribute across classes, absolute correlations between attributes; "
                              "medians and quartiles.",
                              epilog=examples("cnzsl attributes --dataset CUB,SUN",
                                              "cnzsl attributes --data-root data/xlsa17 --json"))
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a.set_defaults(handler=_attributes)
