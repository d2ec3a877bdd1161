"""The ``cnzsl`` command line: a thin argparse layer over the typed run functions.

    cnzsl train --dataset AWA1 [--data-root ROOT] [--synthetic-features] --preset cn
                --epochs 50 [--seed 1 | --seeds 1,2,3] --device auto --out DIR
    cnzsl czsl --dataset CUB [--data-root ROOT] --method {sequential,ewc,mas,agem,multitask,all}
               [--no-cn | --both-cn] --seeds 1,2,3 --out DIR

Every command's ``--help`` states each default once, marks required options and ends with
example command lines; ``cnzsl --version`` prints the toolkit's version
(:mod:`analysis.help_format`).

Errors in the user's input (unknown data set or preset, missing file, existing outputs)
end the command with one line on stderr, ``cnzsl: error: ...``, and exit status 2.
A training loss that becomes NaN or infinite does too (:class:`analysis.training.DivergedError`,
nothing written); a run whose loss rose (:attr:`analysis.training.History.diverged`) prints its
results with a ``warning: the training loss rose from A to B ...`` line on stderr and records
``diverged`` in results.json.

Every command prints its results before it writes them, so a write that fails (disk full,
read-only file system, permissions) loses nothing the user needs to read: one line names
the file and the folder, says what the folder holds and that the results printed above are
the run's, exit status 2.  Ctrl-C ends a command with status 130 and SIGTERM with 143
(128 + the signal number, the shell's convention), one line saying what was written; a second
signal while the command cleans up and prints that line waits for them
(:mod:`analysis.interrupts`) and adds one line above it.  What a command has printed and
written is kept in :class:`Outcome` (``args.outcome``), from which :func:`main` words that line.

Other packages add commands through the entry-point group ``cnzsl.commands``: each entry
is a function ``register(subparsers)`` that adds its sub-parser and sets ``handler``
(``variance`` registers ``cnzsl variance`` and ``cnzsl attributes`` this way), so the
core never imports the packages built on it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from analysis.data import DataError
from analysis.datasets import DATASETS
from analysis.experiment import TrainRun, run_train
from analysis.help_format import HelpFormatter, examples, package_version
from analysis.interrupts import HELD_SIGNALS, signals_held
from analysis.model import PRESETS
from analysis.normalization import ATTRIBUTE_NORMS
from analysis.output_folder import FOLDER_STATE, STAGING_PREFIX
from analysis.training import TrainConfig

__all__ = ["Outcome", "Terminated", "add_data_options", "build_parser", "main", "outcome", "parse_seeds"]


@dataclass
class Outcome:
    """What a command has printed and written so far; :func:`main` words the last line of a
    failed or interrupted command from it.  A handler finds it as ``args.outcome``."""

    results_printed: bool = False  # the results were printed, before any file was written
    # a command that publishes as it goes (figures): says what --out holds so far
    written: Callable[[], str] | None = None


def outcome(args: argparse.Namespace) -> Outcome:
    """``args.outcome`` (set by :func:`main`), or a fresh one for a handler called directly."""
    found = getattr(args, "outcome", None)
    if found is None:
        found = args.outcome = Outcome()
    return found

_DEFAULTS = TrainConfig()


def add_data_options(parser: argparse.ArgumentParser, *, default_dataset: str) -> None:
    """The data options every training command shares: ``--dataset``, ``--data-root``,
    ``--synthetic-features``, ``--data-seed`` (read by :func:`analysis.datasets.load_dataset`)."""
    parser.add_argument("--dataset", default=default_dataset, help=f"data set: {', '.join(DATASETS)}")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="GBU root holding <DATASET>/att_splits.mat and <DATASET>/res101.mat; "
                        "omitted: synthetic data shaped like the data set")
    parser.add_argument("--synthetic-features", action="store_true",
                        help="with --data-root: real attributes and splits, synthetic image features")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data generator")


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train and evaluate a CN-ZSL model",
        description="Train a CN-ZSL model with the paper's recipe and report ZSL / GZSL accuracy. "
        "Without --data-root it uses the synthetic preset of --dataset (same sizes as the real set).",
        formatter_class=HelpFormatter,
        epilog=examples("cnzsl train --dataset AWA1 --out runs/awa1-cn",
                        "cnzsl train --dataset CUB --data-root data/xlsa17 --synthetic-features --seeds 1,2,3 "
                        "--out runs/cub-semi"),
    )
    add_data_options(p, default_dataset="AWA1")
    p.add_argument("--preset", default="cn", help=f"ablation row: {', '.join(PRESETS)}")
    p.add_argument("--standardization-mode", default="correct", choices=("correct", "notebook"),
                   help="class standardization: 'correct' (sqrt(var+eps)) or the authors' "
                   "notebook quirk 'notebook' (var+eps)")
    p.add_argument("--epochs", type=int, default=_DEFAULTS.epochs, help="training epochs")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="images per step")
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="Adam learning rate")
    p.add_argument("--weight-decay", type=float, default=_DEFAULTS.weight_decay, help="Adam L2 penalty")
    p.add_argument("--attribute-norm", default=_DEFAULTS.attribute_norm, choices=ATTRIBUTE_NORMS,
                   help="attributes normalization")
    seed = p.add_mutually_exclusive_group()
    # default None, not 1: argparse only detects "--seed 1 --seeds ..." when the value is not the default
    seed.add_argument("--seed", type=int, default=None,
                      help=f"seed of the initial weights and shuffles (default: {_DEFAULTS.seed})")
    seed.add_argument("--seeds", default=None,
                      help="comma-separated seeds trained at once as one vectorized model; prints mean ± std")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--seen-logit-scale", type=float, default=None,
                   help="GZSL calibration factor on seen logits (default: 0.95; 1.0 on CUB)")
    p.add_argument("--out", type=str, required=True, metavar="DIR",
                   help="output folder for results.json, config.json, ...")
    p.add_argument("--no-save-model", action="store_true", help="do not write DIR/model.pt")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    run = TrainRun(
        out=args.out, dataset=args.dataset, data_root=args.data_root,
        synthetic_features=args.synthetic_features, data_seed=args.data_seed, preset=args.preset,
        standardization_mode=args.standardization_mode,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay,
                          seed=_DEFAULTS.seed if args.seed is None else args.seed,
                          attribute_norm=args.attribute_norm, device=args.device,
                          progress=not args.no_progress),
        seen_logit_scale=args.seen_logit_scale,
        seeds=None if args.seeds is None else parse_seeds(args.seeds),
        save_model=not args.no_save_model, overwrite=args.overwrite,
    )

    def report(r: dict) -> None:
        names = {"zsl_unseen": "ZSL-U", "gzsl_unseen": "GZSL-U", "gzsl_seen": "GZSL-S",
                 "gzsl_harmonic": "GZSL-H", "ausuc": "AUSUC"}
        seeds = f" · seeds {','.join(map(str, r['seeds']))} (mean ± std)" if "seeds" in r else ""
        print(f"{r['dataset']} ({r['data_source']}) · preset {r['preset']} · {r['epochs']} epochs · {r['device']}"
              f"{seeds}")
        for key, name in names.items():
            std = r["std"][key] if "std" in r else None  # None: one seed, no spread to show
            spread = f" ± {std:4.1f}" if std is not None else ""
            print(f"  {name:<11}{r[key]:6.1f}{spread} %")
        print(f"  {'train time':<11}{r['train_seconds']:6.1f} s" + (f" (all {len(r['seeds'])} seeds at once)" if seeds else ""),
              flush=True)
        for line in _divergence_warnings(r):
            print(line, file=sys.stderr, flush=True)
        outcome(args).results_printed = True

    run_train(run, report=report)
    models = ", model.pt" if run.seeds is None else f", model-seed<S>.pt x {len(run.seeds)}"
    print(f"wrote {run.out}/results.json, config.json, environment.json" + (models if run.save_model else "")
          + ", loss.png")
    return 0


def _divergence_warnings(results: dict) -> list[str]:
    """One stderr line per run of ``results`` whose loss rose (``diverged``: analysis.training.History.diverged)."""
    several = "per_seed" in results
    return [f"warning: {'seed %d: ' % r['seed'] if several else ''}the training loss rose from "
            f"{r['loss'][0]:.4g} to {r['loss'][-1]:.4g}: the run diverged; lower --lr"
            for r in (results["per_seed"] if several else [results]) if r["diverged"]]


def _add_czsl(subparsers: argparse._SubParsersAction) -> None:
    from analysis.czsl.protocol import METHODS

    p = subparsers.add_parser(
        "czsl", help="continual zero-shot learning: methods with and without CN",
        formatter_class=HelpFormatter,
        epilog=examples("cnzsl czsl --dataset CUB --method sequential,ewc --both-cn --seeds 1,2,3 --out runs/czsl-cub",
                        "cnzsl czsl --dataset SUN --protocol authors --out runs/czsl-sun-authors"),
        description="Continual zero-shot learning (docs/science.md section 6): tasks of classes learned in "
        "sequence by one single-head model, evaluated after each task on every class. Prints mean ± std "
        "over seeds of mSA, mUA, mH, mAUC, mJA and forgetting; writes DIR/czsl.json and DIR/czsl.png.",
    )
    add_data_options(p, default_dataset="CUB")
    p.add_argument("--method", default="all", help=f"{', '.join(METHODS)} or all (comma-separated list allowed)")
    cn = p.add_mutually_exclusive_group()
    cn.add_argument("--no-cn", action="store_true", help="the plain MLP instead of the CN model")
    cn.add_argument("--both-cn", action="store_true", help="run every method without and with CN")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (tasks, weights, shuffles)")
    p.add_argument("--tasks", type=int, default=None, help="number of tasks (default: 10 on CUB, 15 on SUN)")
    p.add_argument("--protocol", default="toolkit", choices=("toolkit", "authors"),
                   help="toolkit: task t's classes embedded, Adam, batch 256, 5 epochs per task (cheap); authors: "
                        "the published numbers' protocol, every seen class embedded with the loss on task t, SGD "
                        "lr 1e-3 momentum 0.9, batch 32, 10 epochs per task (analysis/czsl/protocol.py)")
    p.add_argument("--epochs-per-task", type=int, default=None,
                   help="training epochs on each task (default: the protocol's, 5 or 10)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: the protocol's, 256 or 32)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", type=str, required=True, metavar="DIR", help="output folder for czsl.json and czsl.png")
    p.add_argument("--overwrite", action="store_true", help="replace outputs already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=_czsl)


_SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    """The one seed-list parser of every command: ``"1,2,3"`` -> ``(1, 2, 3)``.

    Raises:
        ValueError: not comma-separated integers, no seed, a repeated seed (the spread of one
            seed counted twice would be reported as zero), or a seed outside ``[0, 2^63 - 1]``.
    """
    try:
        seeds = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{option} must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError(f"{option} must name at least one seed, got {text!r}")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{option} repeats seed(s) {repeated} in {text!r}; give each seed once")
    out = [s for s in seeds if not 0 <= s <= _SEED_MAX]
    if out:
        raise ValueError(f"{option} seeds must lie in [0, 2^63 - 1], got {out}")
    return seeds


def _czsl(args: argparse.Namespace) -> int:
    from analysis.czsl.experiment import CZSLExperiment, format_czsl_table, run_czsl_experiment
    from analysis.czsl.protocol import METHODS
    from analysis.training import resolve_device

    methods = METHODS if args.method == "all" else tuple(m.strip() for m in args.method.split(",") if m.strip())
    exp = CZSLExperiment(
        out=args.out, dataset=args.dataset, data_root=args.data_root, synthetic_features=args.synthetic_features,
        data_seed=args.data_seed, methods=methods,
        cn_settings=(False, True) if args.both_cn else ((False,) if args.no_cn else (True,)),
        seeds=parse_seeds(args.seeds), num_tasks=args.tasks, protocol=args.protocol,
        epochs_per_task=args.epochs_per_task, batch_size=args.batch_size,
        device=str(resolve_device(args.device)), overwrite=args.overwrite, progress=not args.no_progress,
    )

    def report(result: dict) -> None:
        data = result["data"]
        print(f"{data['name']} ({data['source']}) · seeds {args.seeds} · {exp.protocol} protocol · "
              f"{exp.epochs_per_task} epochs per task of batches of {exp.batch_size}")
        print(format_czsl_table(result["rows"], exp.protocol), flush=True)
        outcome(args).results_printed = True

    run_czsl_experiment(exp, report=report)
    print(f"wrote {exp.out}/czsl.json, czsl.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnzsl", description="Class Normalization for zero-shot learning: reference toolkit.",
        formatter_class=HelpFormatter,
        epilog=examples("cnzsl train --dataset AWA1 --out runs/awa1-cn", "cnzsl figures --list") + "\n\n"
        "Every command's options, defaults and examples: cnzsl COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the toolkit's version and exit")
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_train(subparsers)
    _add_czsl(subparsers)
    for entry in sorted(entry_points(group="cnzsl.commands"), key=lambda e: e.name):
        entry.load()(subparsers)
    return parser


def _os_error_text(err: OSError) -> str:
    """``"No space left on device: PATH"``: the system's reason and the file, without errno noise."""
    return f"{err.strerror or err}{f': {err.filename}' if err.filename else ''}"


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so that every ``with`` block unwinds.

    A BaseException, as KeyboardInterrupt: an ``except Exception`` on the way (reading a
    cache, calling a user's model) must not take it for an error and carry on."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnzsl`` console script; returns the exit status.

    Errors in the input and refused writes: one line on stderr, status 2.  Ctrl-C (SIGINT)
    and SIGTERM: one line, status 130 and 143 (128 + the signal number, the shell's
    convention); an unfinished run writes nothing into its ``--out`` folder
    (:mod:`analysis.output_folder`).  A second signal while the cleanup runs or the line is
    printed is held back (:mod:`analysis.interrupts`): the status and the line stay the first
    signal's, one line above them notes the second.  Anything else is a bug and keeps its
    traceback.

    Without ``argv`` (the ``cnzsl`` console script, ``python -m analysis``) the command is the
    process's: once its status is decided, SIGINT and SIGTERM are ignored until the process
    exits, so that a second Ctrl-C cannot interrupt the interpreter's exit hooks (torch's,
    multiprocessing's) with a traceback after the line.
    """
    args = build_parser().parse_args(argv)
    args.outcome = Outcome()
    in_main_thread = threading.current_thread() is threading.main_thread()
    owns_process = argv is None and in_main_thread
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return args.handler(args)
    except BaseException as err:
        if owns_process:
            _ignore_signals()
        with signals_held(err):  # a second Ctrl-C cannot replace the last line by a traceback
            ending = _ending(err, args)
            if ending is None:
                raise
            status, line = ending
            print(line, file=sys.stderr)
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if owns_process:
            _ignore_signals()


def _ignore_signals() -> None:
    """SIGINT and SIGTERM ignored from now on (the process's command has its status)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _ending(err: BaseException, args: argparse.Namespace) -> tuple[int, str] | None:
    """``(exit status, the one line on stderr)`` for an expected way of failing, else None."""
    done = outcome(args)
    printed = "; the results printed above are this run's results" if done.results_printed else ""
    out = getattr(args, "out", None)
    state = getattr(err, FOLDER_STATE, None)
    interrupts = _interrupts(err)
    if interrupts:  # named after the first; a later one only adds a line above
        name, status = _signal_name(interrupts[0])
        state = next((getattr(e, FOLDER_STATE) for e in interrupts if hasattr(e, FOLDER_STATE)), None)
        again = [_signal_name(e)[0] for e in interrupts[1:]] + [
            _signal_name(held)[0] for e in interrupts for held in getattr(e, HELD_SIGNALS, [])]
        note = f"\ncnzsl: interrupted again ({again[0]}) while cleaning up; the cleanup ran to its end" if again else ""
        if state == "complete":  # the signal was held back until the files were in place
            return status, f"{note}\ncnzsl: interrupted ({name}) as the run finished: {out} holds all of its files"
        if done.written is not None:
            return status, f"{note}\ncnzsl: interrupted ({name}); {done.written()}"
        where = (f"nothing was written to {out} (a run's files appear there only when it finishes; the same "
                 "command reruns it)") if out else "nothing was written"
        return status, f"{note}\ncnzsl: interrupted ({name}); {where}{printed}"
    written = _file_in(err, out) if isinstance(err, OSError) else None
    if written is not None:  # the file system refused one of the run's files
        if done.written is not None:
            left = done.written()
        elif state == "incomplete":
            left = f"{out} is left incomplete, without its results file; rerun with --overwrite"
        else:
            left = "nothing was written there"
        return 2, f"cnzsl: error: could not write {written} in {out} ({err.strerror or err}); {left}{printed}"
    if isinstance(err, (DataError, ValueError, FileNotFoundError, FileExistsError)):
        return 2, f"cnzsl: error: {err}"
    if isinstance(err, OSError):  # the file system refused something else (permissions on an input)
        return 2, f"cnzsl: error: {_os_error_text(err)}"
    return None


def _interrupts(err: BaseException) -> list[BaseException]:
    """The interrupts that ended the command, the first first: ``err`` and, while it is one,
    the interrupt it was raised while handling (a second Ctrl-C during the unwinding)."""
    chain: list[BaseException] = []
    while isinstance(err, (KeyboardInterrupt, Terminated)):
        chain.append(err)
        err = err.__context__
    return chain[::-1]


def _signal_name(interrupt: BaseException | int) -> tuple[str, int]:
    """``(name, exit status)`` of an interrupt, or of a signal number held back during a cleanup."""
    if isinstance(interrupt, Terminated) or interrupt == signal.SIGTERM:
        return "SIGTERM", 128 + signal.SIGTERM
    return "Ctrl-C", 130


def _file_in(err: OSError, out: str | None) -> str | None:
    """The name, relative to ``out``, of the file ``err`` is about when it lies in ``out`` (a
    staged file named as it would be published), else None."""
    if not out or not err.filename or err.errno is None:
        return None
    path, folder = os.path.abspath(err.filename), os.path.abspath(out)
    if os.path.commonpath([path, folder]) != folder or path == folder:
        return None
    parts = Path(os.path.relpath(path, folder)).parts
    if parts[0].startswith(STAGING_PREFIX) and len(parts) > 1:
        parts = parts[1:]
    return "/".join(parts)


if __name__ == "__main__":
    sys.exit(main())
