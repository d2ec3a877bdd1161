"""Loader for the GBU "xlsa17" zero-shot benchmark files (Xian et al., "Zero-Shot Learning -
The Good, the Bad and the Ugly", CVPR 2017), docs/science.md section 7.

Layout, one folder per data set (``AWA1``, ``AWA2``, ``CUB``, ``SUN``, ``APY``)::

    <root>/<DATASET>/res101.mat
        features          [d_z, N]  ResNet-101 features (d_z = 2048), one column per image
        labels            [N, 1]    1-based class index (double or integer)
        image_files       [N, 1]    image paths (not read)
    <root>/<DATASET>/att_splits.mat
        att               [d_a, C]  class attributes, each column L2-normalised
        original_att      [d_a, C]  raw attributes (not read)
        allclasses_names  [C, 1]    cell array of class names
        trainval_loc, test_seen_loc, test_unseen_loc
                          [n, 1]    1-based uint16 sample indices of the proposed split
        train_loc, val_loc          optional, same format

The loader does the file-level work: it checks keys, shapes, finite values and 1-based
indices, transposes ``features`` and ``att``, and shifts labels and indices to 0-based
int64 (converting uint16 to int64 *before* subtracting 1, since uint16 arithmetic wraps).
Structural checks (disjoint splits, disjoint seen/unseen classes) are left to
:class:`~analysis.data.ZSLData`; every error names the offending file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from torch import Tensor

from analysis.data import DataError, ZSLData

__all__ = ["GBU_DATASETS", "AttSplits", "read_att_splits", "read_res101", "dataset_dir",
           "load_gbu"]

GBU_DATASETS: tuple[str, ...] = ("AWA1", "AWA2", "CUB", "SUN", "APY")

_LAYOUT = "<root>/<DATASET>/{name}"
_SPLIT_KEYS = ("trainval_loc", "test_seen_loc", "test_unseen_loc")
_OPTIONAL_SPLIT_KEYS = ("train_loc", "val_loc")


@dataclass(frozen=True)
class AttSplits:
    """The contents of one ``att_splits.mat``, converted to 0-based torch tensors.

    Args:
        attributes: ``[C, d_a]`` float32, ``att`` transposed (unit-norm rows).
        class_names: the ``C`` names of ``allclasses_names``.
        trainval, test_seen, test_unseen: 0-based int64 sample indices, 1-D.
        train, val: the optional ``train_loc`` / ``val_loc`` indices, or ``None``.
        path: the file they were read from.
    """

    attributes: Tensor
    class_names: tuple[str, ...]
    trainval: Tensor
    test_seen: Tensor
    test_unseen: Tensor
    train: Tensor | None
    val: Tensor | None
    path: Path

    def index_vectors(self) -> dict[str, Tensor]:
        """The present index vectors keyed by their file key (``"trainval_loc"``, ...)."""
        named = {"trainval_loc": self.trainval, "test_seen_loc": self.test_seen,
                 "test_unseen_loc": self.test_unseen, "train_loc": self.train,
                 "val_loc": self.val}
        return {k: v for k, v in named.items() if v is not None}

    @property
    def num_samples_indexed(self) -> int:
        """``1 +`` the largest 0-based index over all index vectors (0 if all are empty)."""
        tops = [int(v.max()) + 1 for v in self.index_vectors().values() if v.numel()]
        return max(tops, default=0)


def _load_mat(path: Path) -> dict[str, Any]:
    """Read a MATLAB v5/v7 file, refusing missing or unreadable ones with the layout."""
    if not path.is_file():
        raise DataError(
            f"{path}: file not found; GBU data must follow the layout "
            f"{_LAYOUT.format(name=path.name)} (download xlsa17 and point root at its data folder)"
        )
    try:
        with open(path, "rb") as f:  # own the handle so a failed read cannot leak it
            return scipy.io.loadmat(f)
    except (scipy.io.matlab.MatReadError, ValueError, NotImplementedError, OSError) as err:
        raise DataError(
            f"{path}: not a readable .mat file ({err}); re-save it as MATLAB v5/v7 "
            f"(v7.3/HDF5 files are not supported)"
        ) from err


def _require(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    if key not in mat:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing required key {key!r}; keys present: {present}")
    return np.asarray(mat[key])


def _check_finite(values: np.ndarray, key: str, path: Path) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{path}: {key} contains NaN or inf (first at {where}); regenerate or clean the file"
        )


def _check_matrix(values: np.ndarray, key: str, path: Path, layout: str) -> None:
    if values.ndim != 2:
        raise DataError(
            f"{path}: {key} must be a 2-D {layout} matrix, got shape {values.shape}"
        )


def _one_based_to_tensor(values: np.ndarray, key: str, path: Path) -> Tensor:
    """A 1-based ``[n, 1]`` / ``[1, n]`` / ``[n]`` vector -> 0-based int64 ``[n]``."""
    if values.ndim > 2 or (values.ndim == 2 and 1 not in values.shape):
        raise DataError(
            f"{path}: {key} must be a vector ([n, 1] in GBU files), got shape {values.shape}"
        )
    flat = values.reshape(-1)
    if flat.dtype.kind not in "iu" and not (
        flat.dtype.kind == "f" and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat))
    ):
        raise DataError(
            f"{path}: {key} must hold whole numbers, got dtype {flat.dtype} with non-integer "
            f"values; GBU stores 1-based integer indices"
        )
    flat = flat.astype(np.int64)  # before subtracting 1: uint16 arithmetic would wrap 0 - 1
    if flat.size and flat.min() < 1:
        raise DataError(
            f"{path}: {key} holds value {int(flat.min())} < 1; GBU indices and labels are "
            f"1-based (do not subtract 1 before saving)"
        )
    return torch.from_numpy(flat - 1)


def _cell_strings(values: np.ndarray, key: str, path: Path) -> tuple[str, ...]:
    """Names from a MATLAB cell array of strings (loaded as an object array of arrays)."""
    names = []
    for i, entry in enumerate(values.reshape(-1)):
        item = np.asarray(entry).reshape(-1)
        if item.size != 1:
            raise DataError(
                f"{path}: {key} entry {i} is not a single string (got {item.size} values); "
                f"it must be a cell array of strings"
            )
        names.append(str(item[0]))
    return tuple(names)


def read_att_splits(path: str | os.PathLike) -> AttSplits:
    """Read ``att_splits.mat``: attributes ``[C, d_a]`` (``att`` transposed) and 0-based splits.

    Args:
        path: the ``att_splits.mat`` file.

    Returns:
        The attributes (float32), class names and 0-based int64 index vectors.

    Raises:
        DataError: missing or unreadable file, missing key, ``att`` not 2-D or not finite,
            class-name count not ``C``, an index vector that is not a vector or holds a
            value below 1.
    """
    path = Path(path)
    mat = _load_mat(path)
    att = _require(mat, "att", path)
    _check_matrix(att, "att", path, "[d_a, C]")
    _check_finite(att, "att", path)
    names = _cell_strings(_require(mat, "allclasses_names", path), "allclasses_names", path)
    if len(names) != att.shape[1]:
        raise DataError(
            f"{path}: allclasses_names has {len(names)} names but att has C = {att.shape[1]} "
            f"class columns (att is [d_a, C]); they must match one to one"
        )
    split = {k: _one_based_to_tensor(_require(mat, k, path), k, path) for k in _SPLIT_KEYS}
    optional = {k: _one_based_to_tensor(np.asarray(mat[k]), k, path) if k in mat else None
                for k in _OPTIONAL_SPLIT_KEYS}
    return AttSplits(
        attributes=torch.from_numpy(np.ascontiguousarray(att.T, dtype=np.float32)),  # [C, d_a]
        class_names=names,
        trainval=split["trainval_loc"],
        test_seen=split["test_seen_loc"],
        test_unseen=split["test_unseen_loc"],
        train=optional["train_loc"],
        val=optional["val_loc"],
        path=path,
    )


def read_res101(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Read ``res101.mat``: features ``[N, d_z]`` (``features`` transposed) and labels ``[N]``.

    Args:
        path: the ``res101.mat`` file.

    Returns:
        ``(features, labels)``: float32 ``[N, d_z]`` and 0-based int64 ``[N]``.

    Raises:
        DataError: missing or unreadable file, missing key, ``features`` not 2-D or not
            finite, a label count other than ``N``, or a label below 1.
    """
    path = Path(path)
    mat = _load_mat(path)
    features = _require(mat, "features", path)
    _check_matrix(features, "features", path, "[d_z, N]")
    _check_finite(features, "features", path)
    labels = _one_based_to_tensor(_require(mat, "labels", path), "labels", path)
    n = features.shape[1]
    if labels.numel() != n:
        raise DataError(
            f"{path}: labels has {labels.numel()} entries but features has N = {n} columns "
            f"(features is [d_z, N]); there must be one label per image"
        )
    return torch.from_numpy(np.ascontiguousarray(features.T, dtype=np.float32)), labels


def dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """The folder ``root/<DATASET>``, with ``dataset`` matched case-insensitively.

    Args:
        root: the xlsa17 data folder holding one sub-folder per data set.
        dataset: a name from :data:`GBU_DATASETS`, any case (``"cub"`` -> ``"CUB"``).

    Returns:
        ``Path(root) / NAME`` with the canonical upper-case name.

    Raises:
        DataError: unknown data set name, or ``root`` is not an existing folder.
    """
    name = dataset.upper()
    if name not in GBU_DATASETS:
        raise DataError(f"unknown GBU data set {dataset!r}; valid names: {list(GBU_DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"GBU root folder {root} {what}; pass the folder that holds "
            f"<DATASET>/att_splits.mat and <DATASET>/res101.mat"
        )
    return root / name


def load_gbu(root: str | os.PathLike, dataset: str) -> ZSLData:
    """Load one GBU data set as a :class:`ZSLData` with ``source="real"``.

    Args:
        root: the xlsa17 data folder (see :func:`dataset_dir`).
        dataset: the data set name, any case.

    Returns:
        The validated data set; ``provenance`` records the root and both file paths.

    Raises:
        DataError: anything :func:`dataset_dir`, :func:`read_att_splits` or
            :func:`read_res101` refuses; an index past ``N``; a label past the ``C``
            attribute classes; or a structural error from :class:`ZSLData` (overlapping
            splits, a class both seen and unseen, ...), prefixed with the att_splits path.
    """
    folder = dataset_dir(root, dataset)
    att_path, res_path = folder / "att_splits.mat", folder / "res101.mat"
    splits = read_att_splits(att_path)
    features, labels = read_res101(res_path)
    n, c = features.shape[0], splits.attributes.shape[0]
    for key, index in splits.index_vectors().items():
        if index.numel() and int(index.max()) >= n:
            raise DataError(
                f"{att_path}: {key} holds 1-based index {int(index.max()) + 1}, past the "
                f"N = {n} images of {res_path}; the two files belong to different data sets"
            )
    if labels.numel() and int(labels.max()) >= c:
        raise DataError(
            f"{res_path}: labels go up to {int(labels.max()) + 1} (1-based) but {att_path} "
            f"has attributes for C = {c} classes; the two files belong to different data sets"
        )
    try:
        return ZSLData(
            name=folder.name,
            features=features,
            labels=labels,
            attributes=splits.attributes,
            trainval=splits.trainval,
            test_seen=splits.test_seen,
            test_unseen=splits.test_unseen,
            class_names=splits.class_names,
            source="real",
            train=splits.train,
            val=splits.val,
            provenance={"root": os.path.abspath(root), "att_splits": os.path.abspath(att_path),
                        "res101": os.path.abspath(res_path)},  # absolute: a record names its files
        )
    except DataError as err:
        raise DataError(f"{att_path}: {err}") from err
