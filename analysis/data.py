"""The zero-shot data object shared by training, metrics, variance and landscape code.

Whatever the source (real GBU files, the synthetic generator, or real attributes with
synthetic features), data reaches the rest of the toolkit as one :class:`ZSLData`:

    features    [N, d_z]   float32 image features (GBU: ResNet-101, d_z = 2048, >= 0)
    labels      [N]        int64, 0-based class index into ``attributes``
    attributes  [C, d_a]   float32 class attributes, one row per class
                           (GBU ``att`` transposed: each row has unit L2 norm)
    trainval, test_seen, test_unseen
                [n_split]  int64, 0-based sample indices into ``features``
    train, val  optional proposed-split subsets (GBU ``train_loc`` / ``val_loc``)
    seen_classes, unseen_classes
                [K_s], [K_u]  sorted int64 class indices, derived from the splits

Construction validates the structure once, so every consumer can rely on it: shapes,
dtypes, finite values, indices in range, disjoint splits, disjoint seen/unseen classes
and labels consistent with the splits.  Failures raise :class:`DataError` naming the
offending value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["DataError", "ZSLData"]

SOURCES = ("real", "synthetic", "semi-synthetic")


class DataError(ValueError):
    """A data set is malformed: the message names the value and how to fix it."""


def _check_index_vector(name: str, index: Tensor, size: int, what: str) -> None:
    if index.dtype != torch.int64 or index.ndim != 1:
        raise DataError(
            f"{name} must be a 1-D int64 tensor of {what} indices, got dtype {index.dtype} "
            f"and shape {tuple(index.shape)}; convert with torch.as_tensor(x).reshape(-1).long()"
        )
    if index.numel() == 0:
        raise DataError(f"{name} is empty; every split needs at least one sample")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= size:
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{name} holds {what} index {bad}, outside [0, {size - 1}]; indices are 0-based "
            f"(GBU files store 1-based indices: subtract 1 when loading)"
        )


@dataclass(frozen=True)
class ZSLData:
    """A zero-shot data set (see the module docstring for shapes and invariants).

    Args:
        name: data set name, e.g. ``"CUB"``.
        features: ``[N, d_z]`` float image features.
        labels: ``[N]`` int64 class of each sample, 0-based.
        attributes: ``[C, d_a]`` float class attributes.
        trainval, test_seen, test_unseen: 0-based sample indices of the GBU splits.
        class_names: ``C`` class names.
        source: ``"real"``, ``"synthetic"`` or ``"semi-synthetic"`` (real attributes and
            splits, synthetic features); figures and results report it.
        train, val: optional proposed-split subsets of the samples.
        provenance: JSON-serializable description of where the data came from
            (paths, generator seed, preset).

    Raises:
        DataError: on any structural problem (see module docstring).
    """

    name: str
    features: Tensor
    labels: Tensor
    attributes: Tensor
    trainval: Tensor
    test_seen: Tensor
    test_unseen: Tensor
    class_names: tuple[str, ...]
    source: str
    train: Tensor | None = None
    val: Tensor | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()

    # -- derived structure ---------------------------------------------------------
    @property
    def seen_classes(self) -> Tensor:
        """Sorted classes of the ``trainval`` samples, ``[K_s]`` int64."""
        return torch.unique(self.labels[self.trainval])

    @property
    def unseen_classes(self) -> Tensor:
        """Sorted classes of the ``test_unseen`` samples, ``[K_u]`` int64."""
        return torch.unique(self.labels[self.test_unseen])

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    @property
    def num_classes(self) -> int:
        return self.attributes.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.features.shape[1]

    @property
    def attribute_dim(self) -> int:
        return self.attributes.shape[1]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def to(self, device: str | torch.device) -> ZSLData:
        """A copy with every tensor on ``device`` (no copy when already there)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            features=move(self.features),
            labels=move(self.labels),
            attributes=move(self.attributes),
            trainval=move(self.trainval),
            test_seen=move(self.test_seen),
            test_unseen=move(self.test_unseen),
            train=move(self.train),
            val=move(self.val),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-serializable description: sizes, source and provenance."""
        return {
            "name": self.name,
            "source": self.source,
            "num_samples": self.num_samples,
            "feature_dim": self.feature_dim,
            "attribute_dim": self.attribute_dim,
            "num_classes": self.num_classes,
            "num_seen_classes": int(self.seen_classes.numel()),
            "num_unseen_classes": int(self.unseen_classes.numel()),
            "trainval": int(self.trainval.numel()),
            "test_seen": int(self.test_seen.numel()),
            "test_unseen": int(self.test_unseen.numel()),
            "provenance": self.provenance,
        }

    # -- validation ----------------------------------------------------------------
    def _validate(self) -> None:
        if self.source not in SOURCES:
            raise DataError(f"source must be one of {SOURCES}, got {self.source!r}")
        f, a = self.features, self.attributes
        if f.ndim != 2 or not f.is_floating_point():
            raise DataError(
                f"features must be a float [N, d_z] matrix, got dtype {f.dtype} and shape "
                f"{tuple(f.shape)} (GBU res101.mat stores [d_z, N]: transpose it)"
            )
        if a.ndim != 2 or not a.is_floating_point():
            raise DataError(
                f"attributes must be a float [C, d_a] matrix, got dtype {a.dtype} and shape "
                f"{tuple(a.shape)} (GBU att_splits.mat stores att as [d_a, C]: transpose it)"
            )
        n, c = f.shape[0], a.shape[0]
        if self.labels.dtype != torch.int64 or self.labels.shape != (n,):
            raise DataError(
                f"labels must be int64 of shape ({n},) to match {n} feature rows, got dtype "
                f"{self.labels.dtype} and shape {tuple(self.labels.shape)}"
            )
        for name, t in (("features", f), ("attributes", a)):
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                row = int((~finite).nonzero()[0, 0])
                raise DataError(
                    f"{name} contain NaN or inf (first at row {row}); clean or impute the "
                    f"data before building a ZSLData"
                )
        if len(self.class_names) != c:
            raise DataError(
                f"got {len(self.class_names)} class names for {c} attribute rows; "
                f"they must match one to one"
            )
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < 0 or hi >= c:
            raise DataError(
                f"label {lo if lo < 0 else hi} is outside [0, {c - 1}]: the attribute matrix "
                f"has {c} classes; labels are 0-based class indices (GBU stores 1-based)"
            )
        splits = {"trainval": self.trainval, "test_seen": self.test_seen,
                  "test_unseen": self.test_unseen}
        optional = {k: v for k, v in (("train", self.train), ("val", self.val)) if v is not None}
        for name, idx in {**splits, **optional}.items():
            _check_index_vector(name, idx, n, "sample")
            if torch.unique(idx).numel() != idx.numel():
                raise DataError(f"{name} lists some samples more than once; drop the duplicates")
        # trainval/test_seen/test_unseen are disjoint; so are train/val and both vs test_unseen
        # (in the GBU proposed split, test_seen is drawn from train and val images).
        pairs = [("trainval", "test_seen"), ("trainval", "test_unseen"),
                 ("test_seen", "test_unseen"), ("train", "val"), ("train", "test_unseen"),
                 ("val", "test_unseen")]
        everything = {**splits, **optional}
        for x, y in pairs:
            if x in everything and y in everything:
                common = _intersection(everything[x], everything[y])
                if common.numel():
                    raise DataError(
                        f"splits {x} and {y} overlap in {common.numel()} samples "
                        f"(first: sample {int(common[0])}); a sample belongs to one split only"
                    )
        seen, unseen = self.seen_classes, self.unseen_classes
        both = _intersection(seen, unseen)
        if both.numel():
            raise DataError(
                f"class {int(both[0])} ({self.class_names[int(both[0])]!r}) appears in both "
                f"trainval (seen) and test_unseen (unseen); seen and unseen classes must be disjoint"
            )
        stray = self.labels[self.test_seen]
        stray = stray[~torch.isin(stray, seen)]
        if stray.numel():
            raise DataError(
                f"test_seen holds samples of class {int(stray[0])}, which has no trainval "
                f"sample; every test_seen class must be a seen class"
            )


def _intersection(x: Tensor, y: Tensor) -> Tensor:
    return x[torch.isin(x, y)]
