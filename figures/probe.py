"""``cnzsl probe``: run the battery of :mod:`figures.probe_battery` on a researcher's model and
the presets it is compared with, and write ``probe.json``, ``probe.md``, ``probe.png``/``.pdf``.

    cnzsl probe --model PATH.py:NAME | package.module:NAME | preset:NAME [--model-kwargs JSON]
                [--compare cn,mlp] [--dataset CUB] [--data-root ROOT [--synthetic-features]]
                [--epochs N] [--seeds 1,2] [--init-seeds N] [--probe-every N] [--top-k K]
                [--fast] [--device auto] --out DIR [--overwrite]

It lives in ``figures/`` because it is the one layer allowed to import both ``variance/``
and ``landscape/``.  Every model is built and checked against the contract
(:mod:`analysis.user_model`) before any training starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from analysis.cli import add_data_options, outcome, parse_seeds
from analysis.help_format import HelpFormatter, examples
from analysis.datasets import load_dataset
from analysis.io import atomic_write, environment_info, to_jsonable, write_json
from analysis.output_folder import OutputFolder
from analysis.model import PRESETS
from analysis.training import resolve_device
from analysis.user_model import ModelSpec, resolve_model
from figures.probe_battery import FAST_BUDGET, FULL_BUDGET, METRICS, ProbeRun, check_models, probe_model
from figures.probe_report import probe_figure, probe_markdown
from figures.style import save_figure

__all__ = ["OUTPUT_FILES", "register", "run_probe"]

OUTPUT_FILES = ("probe.json", "probe.md", "probe.png", "probe.pdf")
UNITS = {  # of probe.json (analysis.io.write_json): the accuracies are percent, as in results.json
    **{f"models.*.training.per_seed[].{k}": "percent" for k in METRICS},
    **{f"models.*.training.mean_std.{k}": "percent" for k in METRICS},
    "models.*.training.per_seed[].final_loss": "nats", "models.*.training.per_seed[].train_seconds": "seconds",
    "models.*.seconds": "seconds", "seconds": "seconds",
}


def _specs(run: ProbeRun) -> list[ModelSpec]:
    main = resolve_model(run.model, run.model_kwargs)
    unknown = [name for name in run.compare if name not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown} in --compare; choose from {', '.join(PRESETS)}")
    others = [resolve_model(f"preset:{name}") for name in dict.fromkeys(run.compare) if name != main.preset]
    specs = [main, *others]
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two models share the label {labels}: rename the model or drop the preset from --compare")
    return specs


def run_probe(run: ProbeRun, data: Any = None,
              report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Check, train and probe every model of ``run``; write the outputs (module docstring).

    ``data`` replaces the data set named in ``run`` (custom data, tests).  ``report(payload)``
    (if given) is called with the content of ``probe.json`` before any file is written, so a
    failed write (a full disk) cannot lose what the run measured.

    Returns:
        The content of ``probe.json``.

    Raises:
        FileExistsError: outputs exist in ``run.out`` and ``overwrite`` is False.
        ModelContractError, ValueError, DataError: a model, option or data set is unusable;
            raised before any training.
    """
    with OutputFolder(run.out, OUTPUT_FILES, marker="probe.json", overwrite=run.overwrite) as folder:
        device = resolve_device(run.device)
        specs = _specs(run)
        if data is None:
            data = load_dataset(run.dataset, data_root=run.data_root, synthetic_features=run.synthetic_features,
                                seed=run.data_seed)
        check_models(specs, data, device)
        start = time.perf_counter()
        models = {}
        for i, spec in enumerate(specs, 1):
            if run.progress:
                print(f"[{i}/{len(specs)}] {spec.label}: init profile, training, curvature probes", file=sys.stderr, flush=True)
            models[spec.label] = probe_model(spec, data, run, device)
        settings = {k: v for k, v in asdict(run).items() if k not in ("out", "overwrite", "progress")}
        source = run.model.rpartition(":")[0]
        if source.endswith(".py"):  # PATH.py:NAME: the file that was probed, wherever the run started
            settings["model_file"] = os.path.abspath(source)
        payload = {"models": models, "settings": settings, "data": data.summary(),
                   "environment": environment_info(device), "seconds": time.perf_counter() - start}
        payload = to_jsonable(payload)  # the JSON types probe.json holds: the views see what is written
        if report is not None:
            report(payload)
        write_json(folder.stage("probe.json"), payload, units=UNITS)
        table = probe_markdown(payload).encode("utf-8")
        atomic_write(folder.stage("probe.md"), lambda f: f.write(table))
        save_figure(probe_figure(payload), folder.stage("probe.png").parent, "probe")  # probe.png, probe.pdf
    return payload


def _model_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-kwargs must be a JSON object such as '{{\"width\": 512}}', got {text!r} ({err})") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object (keyword -> value), got {text!r}")
    return kwargs


def _probe(args: argparse.Namespace) -> int:
    budget = FAST_BUDGET if args.fast else FULL_BUDGET
    chosen = {name: getattr(args, name) for name in FULL_BUDGET if getattr(args, name, None) is not None}
    run = ProbeRun(
        out=args.out, model=args.model, model_kwargs=_model_kwargs(args.model_kwargs),
        compare=tuple(c.strip() for c in args.compare.split(",") if c.strip()),
        dataset=args.dataset, data_root=args.data_root, synthetic_features=args.synthetic_features,
        data_seed=args.data_seed, seeds=parse_seeds(args.seeds), device=args.device, fast=args.fast,
        overwrite=args.overwrite, progress=not args.no_progress, **{**budget, **chosen},
    )
    def report(payload: dict[str, Any]) -> None:
        print(probe_markdown(payload), end="", flush=True)
        outcome(args).results_printed = True

    payload = run_probe(run, report=report)
    print(f"wrote {run.out}/probe.json, probe.md, probe.png, probe.pdf ({payload['seconds']:.0f} s)")
    return 0


_BUDGET_HELP = {  # what each budget option of figures.probe_battery.ProbeRun sets
    "epochs": "training epochs per seed", "init_seeds": "random inits of the variance profile at init",
    "probe_every": "training steps between trajectory probes", "top_k": "top Hessian eigenvalues at the trained point",
    "trace_probes": "Hutchinson probes of the Hessian trace", "slq_probes": "SLQ probes of the spectral density",
    "slq_steps": "Lanczos steps per SLQ probe", "slice_points": "grid points per axis of the 2-D slice",
    "probe_samples": "trainval samples of the trained-point probes",
    "lanczos_steps": "Krylov limit of the top-1 eigenvalue runs (trajectory, per layer)",
    "spectrum_steps": "Krylov limit of the top-k run at the trained point",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``probe`` to the ``cnzsl`` command line."""
    p = subparsers.add_parser(
        "probe", formatter_class=HelpFormatter,
        help="run every variance and loss-surface probe on your own architecture",
        description="Probe a model that follows the contract NAME(attribute_dim, feature_dim, generator=None) "
        "-> nn.Module with forward(features [B, d_z], attributes [K, d_a]) -> logits [B, K], beside the "
        "shipped presets: variance at init, accuracy after the paper's recipe, curvature along training "
        "and at the trained point, and a purity check. Writes DIR/probe.json, probe.md, probe.png/.pdf.",
        epilog=examples("cnzsl probe --model examples/residual_layernorm.py:ResidualLayerNormEmbedder --dataset CUB "
                        "--fast --out runs/probe-resln",
                        "cnzsl probe --model preset:ln --compare cn,bn,rmsnorm,mlp --dataset CUB --out runs/zoo"),
    )
    p.add_argument("--model", required=True,
                   help="PATH.py:NAME, package.module:NAME, or preset:NAME (presets: " + ", ".join(PRESETS) + ")")
    p.add_argument("--model-kwargs", default=None,
                   help="JSON object of extra keyword arguments of the builder (default: none)")
    p.add_argument("--compare", default="cn,mlp", help="comma-separated presets probed beside the model")
    add_data_options(p, default_dataset="CUB")
    p.add_argument("--seeds", default="1", help="training seeds (trajectory and spectrum use the first)")
    p.add_argument("--fast", action="store_true",
                   help="small budgets for every option left unset: " + ", ".join(f"{k} {v}" for k, v in FAST_BUDGET.items()))
    for name, value in FULL_BUDGET.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, dest=name,
                       help=f"{_BUDGET_HELP[name]} (default: {value}; --fast: {FAST_BUDGET[name]})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", type=str, required=True, metavar="DIR",
                   help="output folder for probe.json, probe.md, probe.png, probe.pdf")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress lines and bars")
    p.set_defaults(handler=_probe)
