"""The CZSL protocol: learn tasks in sequence with one single-head model, evaluate after each.

For ``t = 1..T`` the model trains on task ``t``'s training images, with the softmax over
that task's classes (the attributes passed are those of the task's classes), then is
evaluated in eval mode on the test images of **every** class, with logits over all ``C``
classes (:func:`analysis.czsl.metrics.evaluate_time_step`).  Methods (each with and
without CN: preset ``cn`` or ``mlp`` of :mod:`analysis.model`):

    sequential   plain fine-tuning on each task
    ewc          + EWC-online penalty (Schwarz et al. 2018), Fisher decay 0.99, weight 10
    mas          + MAS-online penalty (Aljundi et al. 2018), decay 0.95, weight 1e-4
    agem         A-GEM (Chaudhry et al. 2019): each step's gradient is projected so that
                 it does not increase the loss on an episodic memory of earlier tasks
                 (10 images per class on CUB, 5 on SUN) to first order; the memory
                 gradient is taken without updating CN's running statistics
    multitask    upper bound: at each t a fresh model trained on the union of tasks 1..t

Per task: Adam (lr 5e-4, L2 1e-4) re-created for the task, ``epochs_per_task`` epochs of
batches of 256, seeded shuffles.  Attributes are L2-normalized times sqrt(d_a) over all
classes once.  Deterministic on the CPU for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

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

__all__ = ["METHODS", "CZSLConfig", "CZSLResult", "run_czsl"]

METHODS = ("sequential", "ewc", "mas", "agem", "multitask")


@dataclass(frozen=True)
class CZSLConfig:
    """One CZSL run: method, CN or not, and the per-task recipe."""

    method: str = "sequential"
    cn: bool = True  # preset "cn" (True) or "mlp" (False)
    epochs_per_task: int = 5
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 1
    device: str = "cpu"
    methods: MethodConfig = field(default_factory=MethodConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.epochs_per_task < 1 or self.batch_size < 1:
            raise ValueError(f"epochs_per_task and batch_size must be positive, got "
                             f"{self.epochs_per_task} and {self.batch_size}")


@dataclass(frozen=True)
class CZSLResult:
    """Evaluations after each task and their summary."""

    config: CZSLConfig
    evaluations: tuple[TaskEvaluation, ...]
    summary: CZSLSummary


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
    model = build_model(model_config, config.seed).to(device)
    penalty = {"ewc": EWCOnline, "mas": MASOnline}.get(config.method)
    penalty = penalty(config.methods) if penalty else None
    memory = EpisodicMemory(config.methods.agem_memory_per_class) if config.method == "agem" else None
    train_by_task = [split.train[torch.isin(labels[split.train].cpu(), c)].to(device) for c in split.task_classes]
    test = split.test.to(device)
    evaluations = []

    for t, classes in enumerate(split.task_classes, start=1):
        classes = classes.to(device)
        if config.method == "multitask":  # the upper bound: a fresh model on tasks 1..t
            model = build_model(model_config, config.seed).to(device)
            classes = torch.cat([c.to(device) for c in split.task_classes[:t]]).sort().values
            samples = torch.cat(train_by_task[:t])
        else:
            samples = train_by_task[t - 1]
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        task_attributes = attributes[classes]
        for _ in range(config.epochs_per_task):
            for batch in _batches(samples.cpu(), config.batch_size, shuffle):
                batch = batch.to(device)
                x, y = data.features[batch], _targets(labels[batch], classes)
                loss = nn.functional.cross_entropy(model(x, task_attributes), y)
                if penalty is not None:
                    loss = loss + penalty.penalty(model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if memory is not None and len(memory) > 0:
                    mx, my = memory.sample(config.methods.agem_memory_batch, memory_draws)
                    mem_classes = torch.unique(my)  # the memory loss is over the classes it holds
                    ref = agem_reference_gradient(model, mx, _targets(my, mem_classes), attributes[mem_classes])
                    assign_flat_grad(model, agem_project(flat_grad(model), ref))
                optimizer.step()
        if penalty is not None or memory is not None:
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
    return CZSLResult(config, tuple(evaluations), summarize(evaluations))
