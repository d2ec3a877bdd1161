"""The CZSL protocol: learn tasks in sequence with one single-head model, evaluate after each.

For ``t = 1..T`` the model trains on task ``t``'s training images, then is evaluated in eval
mode on the test images of **every** class, with logits over all ``C`` classes
(:func:`analysis.czsl.metrics.evaluate_time_step`); the untrained model is evaluated too
(``t = 0``, for the authors' averaging range).  Methods (each with and without CN: preset
``cn`` or ``mlp`` of :mod:`analysis.model`):

    sequential   plain fine-tuning on each task
    ewc          + EWC-online penalty (Schwarz et al. 2018), Fisher decay 0.99, weight 10
    mas          + MAS-online penalty (Aljundi et al. 2018), decay 0.95, weight 1e-4
    agem         A-GEM (Chaudhry et al. 2019): each step's gradient is projected so that
                 it does not increase the loss on an episodic memory of earlier tasks
                 (25 images per class on AWA, 10 on CUB, 5 on SUN) to first order; the memory
                 gradient is taken without updating CN's running statistics
    multitask    upper bound: trained on the union of tasks 1..t

Two protocols (``CZSLConfig.protocol``) differ in what the model sees and how it is trained:

=====================  =====================================  =======================================
                       ``toolkit`` (the default)              ``authors`` (universome/class-norm)
=====================  =====================================  =======================================
attributes embedded    task t's classes only                  every class of tasks 1..t (what CN
                                                              normalizes over); the loss restricted
                                                              to task t's columns
optimizer              Adam, lr 5e-4, L2 1e-4, per task       SGD, lr 1e-3, momentum 0.9, per task
batch, epochs / task   256, 5                                 32, 10
multitask              a fresh model on tasks 1..t, softmax   the same model continues on tasks 1..t,
                       over their classes                     softmax over every seen class
=====================  =====================================  =======================================

The toolkit's protocol is the default because it is the cheaper one (20 steps per task on
synthetic CUB against about 190) and keeps each task's softmax and CN statistics to the
classes it trains on; ``authors`` is the one the published CZSL numbers come from.  Both
report every metric under both definitions (:class:`analysis.czsl.metrics.CZSLSummary`).
EWC, MAS and A-GEM follow the protocol too:

=====================  =====================================  =======================================
                       ``toolkit``                            ``authors`` (:mod:`analysis.czsl.authors_methods`)
=====================  =====================================  =======================================
EWC / MAS importance   end of task t, on task t's data and    start of task t+1, on task t+1's data,
                       classes; EWC: Fisher of the labels     every class embedded, logits of task t's
                                                              classes; EWC min-max normalized
penalty                lambda/2 sum Omega (theta - a)^2       coef sum Omega (theta - a)^2 (no 1/2)
A-GEM memory           per_class rows per class, once         per_class rows per class, added twice
                                                              per task (their code's double call)
A-GEM reference        256 rows, loss over the classes the    128 rows, every class embedded, each
                       memory holds                           row's loss over its own task's classes
=====================  =====================================  =======================================

What ``authors`` does NOT reproduce: the authors fine-tune a ResNet on images, here the
embedder is trained on fixed features; their importances and reference gradients run
forward passes in train mode that update CN's running statistics, here they are probes
that leave them alone (as the toolkit's).

Attributes are L2-normalized times sqrt(d_a) over all classes once.  Deterministic on the
CPU for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from analysis.czsl.authors_methods import (
    TaskMaskedMemory,
    authors_anchor_penalty,
    authors_ewc_importance,
    authors_mas_importance,
    masked_reference_gradient,
)
from analysis.czsl.methods import (
    EpisodicMemory,
    EWCOnline,
    MASOnline,
    MethodConfig,
    agem_project,
    agem_reference_gradient,
    assign_flat_grad,
    ewc_importance,
    flat_grad,
    mas_importance,
)
from analysis.czsl.metrics import CZSLSummary, TaskEvaluation, evaluate_time_step, summarize
from analysis.czsl.tasks import ContinualSplit
from analysis.data import ZSLData
from analysis.evaluation import class_logits
from analysis.model import preset_config
from analysis.normalization import normalize_attributes
from analysis.training import build_model, resolve_device

__all__ = ["METHODS", "PROTOCOLS", "PROTOCOL_DEFAULTS", "CZSLConfig", "CZSLResult", "run_czsl"]

METHODS = ("sequential", "ewc", "mas", "agem", "multitask")
PROTOCOLS = ("toolkit", "authors")
# the recipe of each protocol (module docstring); a CZSLConfig field left None takes these
PROTOCOL_DEFAULTS = {
    "toolkit": {"optimizer": "adam", "lr": 5e-4, "momentum": 0.0, "weight_decay": 1e-4, "batch_size": 256,
                "epochs_per_task": 5},
    "authors": {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 32,
                "epochs_per_task": 10},
}
# A-GEM's memory rows per reference gradient when MethodConfig.agem_memory_batch is None
AGEM_MEMORY_BATCH = {"toolkit": 256, "authors": 128}


@dataclass(frozen=True)
class CZSLConfig:
    """One CZSL run: method, CN or not, the protocol, and the per-task recipe.

    Every recipe field left ``None`` takes the protocol's value (:data:`PROTOCOL_DEFAULTS`);
    the resolved values are stored, so a saved config names what ran.
    """

    method: str = "sequential"
    cn: bool = True  # preset "cn" (True) or "mlp" (False)
    protocol: str = "toolkit"
    optimizer: str | None = None  # "adam" or "sgd"
    epochs_per_task: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None  # SGD only
    weight_decay: float | None = None
    seed: int = 1
    device: str = "cpu"
    methods: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        for name, value in PROTOCOL_DEFAULTS[self.protocol].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.methods.agem_memory_batch is None:
            object.__setattr__(self, "methods", replace(self.methods, agem_memory_batch=AGEM_MEMORY_BATCH[self.protocol]))
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose adam or sgd")
        if self.epochs_per_task < 1 or self.batch_size < 1:
            raise ValueError(f"epochs_per_task and batch_size must be positive, got "
                             f"{self.epochs_per_task} and {self.batch_size}")
        if not (self.lr > 0 and self.weight_decay >= 0 and 0 <= self.momentum < 1):
            raise ValueError(f"need lr > 0, weight_decay >= 0 and momentum in [0, 1), got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, momentum={self.momentum}")

    def make_optimizer(self, parameters) -> torch.optim.Optimizer:
        """A new optimizer for one task (the protocol's recipe)."""
        if self.optimizer == "sgd":
            return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(parameters, lr=self.lr, weight_decay=self.weight_decay)


@dataclass(frozen=True)
class CZSLResult:
    """Evaluations after each task (and before the first) and their summary."""

    config: CZSLConfig
    evaluations: tuple[TaskEvaluation, ...]  # t = 1..T
    summary: CZSLSummary
    before: TaskEvaluation | None = None  # t = 0, the untrained model


def _batches(indices: Tensor, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(indices[torch.randperm(indices.numel(), generator=generator)].split(batch_size))


def _targets(labels: Tensor, classes: Tensor) -> Tensor:
    """Labels as positions in ``classes`` (sorted)."""
    return torch.searchsorted(classes, labels)


def run_czsl(data: ZSLData, split: ContinualSplit, config: CZSLConfig, *,
             on_task_end: Callable[[int, nn.Module], None] | None = None) -> CZSLResult:
    """Run ``config.method`` on the tasks of ``split`` (module docstring).

    ``on_task_end(t, model)`` is called after task ``t``'s training and consolidation,
    before its evaluation (for tests and probes; it must not modify the model).
    """
    device = resolve_device(config.device)
    data = data.to(device)
    attributes = normalize_attributes(data.attributes, "l2_sqrt")
    labels = data.labels
    model_config = preset_config("cn" if config.cn else "mlp", data.attribute_dim, data.feature_dim)
    shuffle = torch.Generator().manual_seed(config.seed)
    memory_draws = torch.Generator().manual_seed(config.seed + 1)
    importance_draws = torch.Generator().manual_seed(config.seed + 2)  # the authors' shuffled importance batches
    model = build_model(model_config, config.seed).to(device)
    authors = config.protocol == "authors"
    penalty, memory = None, None
    if config.method in ("ewc", "mas"):
        penalty = (authors_anchor_penalty(config.method, config.methods) if authors
                   else {"ewc": EWCOnline, "mas": MASOnline}[config.method](config.methods))
    elif config.method == "agem":
        memory = (TaskMaskedMemory if authors else EpisodicMemory)(config.methods.agem_memory_per_class)
    train_by_task = [split.train[torch.isin(labels[split.train].cpu(), c)].to(device) for c in split.task_classes]
    test = split.test.to(device)
    # task_masks[t - 1, c]: class c belongs to task t (the authors' per-row A-GEM masks)
    task_masks = torch.zeros(len(split.task_classes), attributes.shape[0], dtype=torch.bool, device=device)
    for t, classes in enumerate(split.task_classes):
        task_masks[t, classes.to(device)] = True
    before = evaluate_time_step(class_logits(model, data.features[test], attributes), labels[test],
                                list(split.task_classes), 0)
    evaluations = []

    for t, classes in enumerate(split.task_classes, start=1):
        classes = classes.to(device)
        seen = torch.cat([c.to(device) for c in split.task_classes[:t]]).sort().values  # tasks 1..t
        if config.method == "multitask":  # the upper bound on tasks 1..t
            if not authors:  # the toolkit's: a fresh model each time
                model = build_model(model_config, config.seed).to(device)
            classes = seen
            samples = torch.cat(train_by_task[:t])
        else:
            samples = train_by_task[t - 1]
        model.train()
        if authors and penalty is not None and t > 1:  # their importance: task t's data, task t-1's classes
            importance = {"ewc": authors_ewc_importance, "mas": authors_mas_importance}[config.method]
            batches = [(data.features[b.to(device)], labels[b.to(device)], attributes)
                       for b in _batches(samples.cpu(), config.batch_size, importance_draws)]  # shuffled, as theirs
            penalty.consolidate(model, importance(model, batches, split.task_classes[t - 2].to(device)))
        optimizer = config.make_optimizer(model.parameters())
        task_attributes = attributes[classes]
        # authors: embed every seen class (CN normalizes over them), softmax over task t's columns
        embedded = attributes[seen] if authors else task_attributes
        columns = torch.searchsorted(seen, classes) if authors else None
        for _ in range(config.epochs_per_task):
            for batch in _batches(samples.cpu(), config.batch_size, shuffle):
                batch = batch.to(device)
                x, y = data.features[batch], _targets(labels[batch], classes)
                logits = model(x, embedded)
                loss = nn.functional.cross_entropy(logits if columns is None else logits[:, columns], y)
                if penalty is not None:
                    loss = loss + penalty.penalty(model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if memory is not None and len(memory) > 0:
                    if authors:  # every class embedded, each row's loss over its own task's classes
                        mx, my, mt = memory.sample(config.methods.agem_memory_batch, memory_draws)
                        ref = masked_reference_gradient(model, mx, my, task_masks[mt], attributes)
                    else:
                        mx, my = memory.sample(config.methods.agem_memory_batch, memory_draws)
                        mem_classes = torch.unique(my)  # the memory loss is over the classes it holds
                        ref = agem_reference_gradient(model, mx, _targets(my, mem_classes), attributes[mem_classes])
                    assign_flat_grad(model, agem_project(flat_grad(model), ref))
                optimizer.step()
        if authors:  # EWC/MAS consolidate at the start of the next task (above)
            for _ in range(2 if memory is not None else 0):  # their code adds a task twice (authors_methods)
                memory.add_task(data.features[samples], labels[samples], t - 1, memory_draws)
        elif penalty is not None or memory is not None:  # the toolkit's: consolidate at the end of task t
            task_batches = [(data.features[b.to(device)], _targets(labels[b.to(device)], classes), task_attributes)
                            for b in samples.cpu().split(config.batch_size)]
            if config.method == "ewc":
                penalty.consolidate(model, ewc_importance(model, task_batches, nn.functional.cross_entropy))
            elif config.method == "mas":
                penalty.consolidate(model, mas_importance(model, task_batches))
            else:
                memory.add(data.features[samples], labels[samples], memory_draws)
        if on_task_end is not None:
            on_task_end(t, model)
        logits = class_logits(model, data.features[test], attributes)
        evaluations.append(evaluate_time_step(logits, labels[test], list(split.task_classes), t))
    return CZSLResult(config, tuple(evaluations), summarize(evaluations, before=before), before)
