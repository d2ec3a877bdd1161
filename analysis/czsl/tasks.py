"""Task splits of continual zero-shot learning (CZSL, docs/science.md section 6.1).

Classes are permuted by a seed and cut into ``T`` consecutive tasks of (almost) equal size
(CUB: 10 tasks of 20 classes; SUN: 15 tasks of 47 or 48 classes; any data set with
``num_tasks``).  Every class becomes seen at some point, so every class needs training
and test images: the GBU splits (which keep the unseen classes' images for testing only)
do not fit, and each class's images (all of ``trainval``, ``test_seen`` and
``test_unseen``) are split again, a seeded ``test_fraction`` of each class for testing
and the rest for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from analysis.data import ZSLData

__all__ = ["DEFAULT_NUM_TASKS", "ContinualSplit", "continual_split", "split_classes_into_tasks"]

DEFAULT_NUM_TASKS = {"CUB": 10, "SUN": 15}


@dataclass(frozen=True)
class ContinualSplit:
    """Tasks (class index sets) and the per-class train/test re-split of the samples."""

    task_classes: tuple[Tensor, ...]  # T tensors of class indices, disjoint, covering all classes
    train: Tensor  # [n_train] sample indices
    test: Tensor  # [n_test] sample indices

    @property
    def num_tasks(self) -> int:
        return len(self.task_classes)

    def seen_classes(self, t: int) -> Tensor:
        """Classes of tasks 1..t (empty for t = 0)."""
        if not 0 <= t <= self.num_tasks:
            raise ValueError(f"t must lie in [0, {self.num_tasks}], got {t}")
        return torch.cat(self.task_classes[:t]) if t else torch.empty(0, dtype=torch.int64)


def split_classes_into_tasks(num_classes: int, num_tasks: int, *, generator: torch.Generator) -> tuple[Tensor, ...]:
    """A seeded permutation of ``0..C-1`` cut into ``num_tasks`` consecutive, near-equal parts
    (sizes differ by at most one; the larger ones first)."""
    if not 1 <= num_tasks <= num_classes:
        raise ValueError(f"num_tasks must lie in [1, {num_classes}] (one class per task at least), got {num_tasks}")
    order = torch.randperm(num_classes, generator=generator)
    base, extra = divmod(num_classes, num_tasks)
    sizes = [base + (1 if i < extra else 0) for i in range(num_tasks)]
    return tuple(part.sort().values for part in order.split(sizes))


def continual_split(
    data: ZSLData, num_tasks: int | None = None, *, seed: int = 0, test_fraction: float = 0.2
) -> ContinualSplit:
    """Tasks and train/test samples for ``data`` (module docstring).

    Args:
        data: any data set; all its split samples are used.
        num_tasks: number of tasks; ``None`` takes :data:`DEFAULT_NUM_TASKS` of ``data.name``.
        seed: seed of the class permutation and of the per-class test draw.
        test_fraction: share of each class's images held out for testing (at least one
            image each for training and testing).

    Raises:
        ValueError: no default task count for the data set, a bad ``num_tasks`` or
            ``test_fraction``, or a class with fewer than two images.
    """
    if num_tasks is None:
        if data.name.upper() not in DEFAULT_NUM_TASKS:
            raise ValueError(f"no default number of tasks for {data.name}; pass num_tasks (--tasks N)")
        num_tasks = DEFAULT_NUM_TASKS[data.name.upper()]
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    tasks = split_classes_into_tasks(data.num_classes, num_tasks, generator=g)
    samples = torch.cat([data.trainval, data.test_seen, data.test_unseen]).sort().values
    labels = data.labels[samples].cpu()
    train, test = [], []
    for c in range(data.num_classes):
        mine = samples.cpu()[labels == c]
        if mine.numel() < 2:
            raise ValueError(f"class {c} ({data.class_names[c]!r}) has {mine.numel()} image(s); CZSL needs "
                             f"at least one for training and one for testing")
        mine = mine[torch.randperm(mine.numel(), generator=g)]
        n_test = min(max(1, round(test_fraction * mine.numel())), mine.numel() - 1)
        test.append(mine[:n_test])
        train.append(mine[n_test:])
    return ContinualSplit(tasks, torch.cat(train).sort().values, torch.cat(test).sort().values)
