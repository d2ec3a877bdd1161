"""``cnzsl czsl`` as a typed function: methods x CN settings x seeds, table, JSON, plot.

Writes into ``out``: ``czsl.json`` (config, environment, per method and CN setting: the
mean and standard deviation over seeds of every metric of
:class:`analysis.czsl.metrics.CZSLSummary` in percent, under both definitions
(``forgetting`` and ``forgetting_authors``, ``mUA`` and ``mUA_from_0``, ``mAUC`` and
``mAUC_from_0``; the per-class means ``mSA``, ``mUA_from_0``, ``mH`` and the authors'
sample means ``mSA_samples``, ``mUA_from_0_samples``, ``mH_samples``), plus every seed's
per-task evaluations, which are fractions in [0, 1]
as :class:`analysis.czsl.metrics.TaskEvaluation` computes them) and ``czsl.png`` (seen and
unseen accuracy after each task, mean over seeds, one line per method and CN setting, in the
style of the paper figures: the model's colour of :mod:`analysis.plot_style`, the method's
marker, the legend above the panels, a caption naming the data, settings and commit).
The two scales meet in one file, so its ``units`` mapping names the unit of every metric
(:func:`czsl_units`); the std of a single seed is ``null``.
The printed table shows the metrics under the definitions of the protocol that ran
(:data:`TABLE_METRICS`).
Existing outputs are never overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from analysis.czsl.methods import MethodConfig, agem_memory_for
from analysis.czsl.metrics import CZSLSummary, TaskEvaluation
from analysis.czsl.protocol import AGEM_MEMORY_BATCH, METHODS, PROTOCOLS, CZSLConfig, run_czsl
from analysis.czsl.tasks import DEFAULT_NUM_TASKS, continual_split
from analysis.datasets import canonical_dataset_name, load_dataset
from analysis.experiment import format_mean_std, mean_std
from analysis.io import check_output_folder, environment_info, write_json, write_png
from analysis.output_folder import OutputFolder

__all__ = ["CZSLExperiment", "METRICS", "TABLE_METRICS", "czsl_units", "format_czsl_table", "run_czsl_experiment"]

METRICS = tuple(f.name for f in fields(CZSLSummary))  # every metric, both definitions
# the table's columns per protocol: (heading, metric); each protocol's own definitions, so that
# under `authors` mSA, mUA, mH and forgetting are the ones the published numbers use
TABLE_METRICS = {
    "toolkit": (("mSA", "mSA"), ("mUA", "mUA"), ("mH", "mH"), ("mAUC", "mAUC"), ("mJA", "mJA"),
                ("forgetting", "forgetting")),
    "authors": (("mSA", "mSA_samples"), ("mUA", "mUA_from_0_samples"), ("mH", "mH_samples"),
                ("mAUC", "mAUC_from_0"), ("mJA", "mJA"), ("forgetting", "forgetting_authors")),
}
TABLE_DEFINITIONS = {
    "toolkit": "mUA and mAUC over t = 1..T-1; forgetting: final step, task-restricted accuracy; "
               "accuracies: per-class means",
    "authors": "mUA and mAUC over t = 0..T-1; forgetting: generalized accuracy, max over every earlier "
               "step, averaged over time; mSA, mUA, mH: sample means (mH: harmonic per step, then the "
               "mean), mAUC, mJA: per-class means",
}
OUTPUT_FILES = ("czsl.json", "czsl.png")
_STYLE_MODEL = {True: "cn", False: "mlp"}  # CN setting -> the model's name in analysis.plot_style
_METHOD_STYLE = {  # method -> (marker, line style) in czsl.png
    "sequential": ("o", "-"), "ewc": ("s", "--"), "mas": ("^", ":"), "agem": ("D", "-."),
    "multitask": ("v", (0, (5, 1, 1, 1))),
}


@dataclass(frozen=True)
class CZSLExperiment:
    """Everything ``cnzsl czsl`` needs."""

    out: Path
    dataset: str = "CUB"
    data_root: Path | None = None
    synthetic_features: bool = False
    data_seed: int = 0
    methods: tuple[str, ...] = METHODS
    cn_settings: tuple[bool, ...] = (True,)
    seeds: tuple[int, ...] = (1, 2, 3)
    num_tasks: int | None = None  # None: 10 on CUB, 15 on SUN (resolved on creation)
    protocol: str = "toolkit"  # analysis.czsl.protocol: "toolkit" or "authors"
    epochs_per_task: int | None = None  # None: the protocol's (5 toolkit, 10 authors)
    batch_size: int | None = None  # None: the protocol's (256 toolkit, 32 authors)
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", check_output_folder(self.out))
        object.__setattr__(self, "dataset", canonical_dataset_name(self.dataset))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown or list(self.methods)}; choose from "
                             f"{', '.join(METHODS)} or all")
        if not self.seeds:
            raise ValueError("seeds is empty; pass at least one seed, e.g. --seeds 1,2,3")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.num_tasks is None:  # resolved now, so that czsl.json records the default applied
            if self.dataset not in DEFAULT_NUM_TASKS:
                raise ValueError(f"no default number of tasks for {self.dataset}; pass num_tasks (--tasks N)")
            object.__setattr__(self, "num_tasks", DEFAULT_NUM_TASKS[self.dataset])
        if self.data_root is not None:
            object.__setattr__(self, "data_root", Path(self.data_root))
        recipe = CZSLConfig(protocol=self.protocol, epochs_per_task=self.epochs_per_task, batch_size=self.batch_size)
        object.__setattr__(self, "epochs_per_task", recipe.epochs_per_task)  # resolved, and checked there
        object.__setattr__(self, "batch_size", recipe.batch_size)


def _mean_std(values: list[float]) -> dict[str, float | None]:
    return dict(zip(("mean", "std"), mean_std(values)))


def czsl_units() -> dict[str, str]:
    """The ``units`` of czsl.json (:func:`analysis.io.write_json`): the seed-averaged rows and
    each seed's summary in percent, each seed's per-task evaluations (``before`` training and
    after every task) as fractions in [0, 1]."""
    units = {f"rows[].{m}.{s}": "percent" for m in METRICS for s in ("mean", "std")}
    units.update({f"rows[].per_seed[].summary.{m}": "percent" for m in METRICS})
    for where in ("before", "evaluations[]"):
        units.update({f"rows[].per_seed[].{where}.{f.name}": "fraction" for f in fields(TaskEvaluation)})
    return units


def format_czsl_table(rows: list[dict[str, Any]], protocol: str = "toolkit") -> str:
    """Fixed-width table: method, CN, then mean ± std over seeds (percent; the mean alone for
    one seed) of the metrics under ``protocol``'s definitions (:data:`TABLE_METRICS`), a line
    naming them first."""
    columns = TABLE_METRICS[protocol]
    header = ["method", "CN", *(heading for heading, _ in columns)]
    lines = [[r["method"], "yes" if r["cn"] else "no", *(format_mean_std(r[m]["mean"], r[m]["std"]) for _, m in columns)]
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines]
    return "\n".join([f"{protocol} protocol, its definitions: {TABLE_DEFINITIONS[protocol]}", *out])


def _figure(rows: list[dict[str, Any]], caption: str):
    """Seen and unseen accuracy (percent, mean over seeds) after each task, one line per
    method and CN setting: the colour of the model in every figure (``cn``: MLP + CN,
    ``mlp``: the plain MLP; :mod:`analysis.plot_style`), the method by marker and line
    style; the legend above the panels, the provenance ``caption`` below."""
    from matplotlib.ticker import MaxNLocator

    from analysis.plot_style import add_caption, color, label, legend_outside, new_figure

    fig, axes = new_figure(1, 2, panel_width=3.8, panel_height=3.0, sharex=True)
    for r in rows:
        per_seed, model = r["per_seed"], _STYLE_MODEL[r["cn"]]
        steps = list(range(1, len(per_seed[0]["evaluations"]) + 1))
        marker, linestyle = _METHOD_STYLE.get(r["method"], ("o", "-"))
        for ax, key in zip(axes[0], ("seen_accuracy", "unseen_accuracy")):
            curve = [statistics.fmean(100 * s["evaluations"][t - 1][key] for s in per_seed) for t in steps]
            ax.plot(steps, curve, marker=marker, markersize=4, linestyle=linestyle, color=color(model),
                    label=f"{r['method']}, {label(model)}")
    titles = ("seen classes (tasks 1..t)", "unseen classes (tasks t+1..T)")
    for ax, title, what in zip(axes[0], titles, ("seen", "unseen")):
        ax.set(xlabel="tasks learned, t (tasks)", ylabel=f"{what} accuracy (%)", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    methods = len({r["method"] for r in rows})
    legend_outside(fig, axes[0, 0], ncols=min(methods, 5) if methods > 1 else len(rows))
    add_caption(fig, caption)
    return fig


def _caption(exp: CZSLExperiment, data: Any, num_tasks: int, commit: str | None) -> str:
    """czsl.png's provenance: the data (real or synthetic), the command's settings, the seeds, the commit."""
    from analysis.plot_style import provenance_caption

    seeds = (f"mean over seeds {','.join(map(str, exp.seeds))}" if len(exp.seeds) > 1 else f"seed {exp.seeds[0]}")
    return provenance_caption(
        f"{data.name} ({data.source} data)",
        f"cnzsl czsl, {exp.protocol} protocol: {num_tasks} tasks, {exp.epochs_per_task} epochs per task, "
        f"batch {exp.batch_size}", seeds, commit=commit)


def run_czsl_experiment(exp: CZSLExperiment,
                        report: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every method x CN setting x seed of ``exp`` and write the outputs (module docstring).

    ``report(payload)`` (if given) is called with the content of ``czsl.json`` before any file
    is written, so a failed write (a full disk) cannot lose what the run measured.
    """
    with OutputFolder(exp.out, OUTPUT_FILES, marker="czsl.json", overwrite=exp.overwrite) as folder:
        data = load_dataset(exp.dataset, data_root=exp.data_root, synthetic_features=exp.synthetic_features,
                            seed=exp.data_seed)
        methods_config = MethodConfig(agem_memory_per_class=agem_memory_for(exp.dataset),
                                      agem_memory_batch=AGEM_MEMORY_BATCH[exp.protocol])  # what CZSLConfig resolves
        runs = [(m, cn, s) for m in exp.methods for cn in exp.cn_settings for s in exp.seeds]
        results: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        for method, cn, seed in tqdm(runs, desc="czsl", unit="run", disable=not exp.progress):
            split = continual_split(data, exp.num_tasks, seed=seed)
            config = CZSLConfig(method=method, cn=cn, protocol=exp.protocol, epochs_per_task=exp.epochs_per_task,
                                batch_size=exp.batch_size, seed=seed, device=exp.device, methods=methods_config)
            label = f"{method}{' + CN' if cn else ''}, seed {seed}"
            with tqdm(total=len(split.task_classes), desc=label, unit="task", leave=False,
                      disable=not exp.progress) as tasks:
                result = run_czsl(data, split, config, on_task_end=lambda t, model: tasks.update(1))
            results.setdefault((method, cn), []).append({
                "seed": seed, "summary": result.summary.percent(), "config": asdict(config),
                "before": asdict(result.before), "evaluations": [asdict(e) for e in result.evaluations],
            })
        rows = []
        for (method, cn), per_seed in results.items():
            row = {"method": method, "cn": cn}
            for metric in METRICS:
                row[metric] = _mean_std([s["summary"][metric] for s in per_seed])
            rows.append({**row, "per_seed": per_seed})
        num_tasks = len(rows[0]["per_seed"][0]["evaluations"])  # one evaluation per task learned
        environment = environment_info(exp.device)
        payload = {"config": exp, "data": data.summary(), "methods_config": methods_config,
                   "environment": environment, "rows": rows}
        if report is not None:
            report(payload)
        write_png(folder.stage("czsl.png"), _figure(rows, _caption(exp, data, num_tasks, environment.get("git_commit"))))
        write_json(folder.stage("czsl.json"), payload, units=czsl_units())
    return payload
