"""One entry point from a data set name to a :class:`~analysis.data.ZSLData`.

    load_dataset("AWA1")                                   synthetic preset (embedded default)
    load_dataset("CUB", data_root=ROOT)                    real GBU: ROOT/CUB/{att_splits,res101}.mat
    load_dataset("CUB", data_root=ROOT, synthetic_features=True)
                                                           real attributes and splits,
                                                           synthetic features (no res101.mat)

Every command of the toolkit (training, variance, landscape, figures) loads data here, so
the same object feeds them all whatever its source.
"""

from __future__ import annotations

import os

from analysis.data import DataError, ZSLData
from analysis.gbu import GBU_DATASETS, dataset_dir, load_gbu
from analysis.synthetic import make_semi_synthetic, make_synthetic

__all__ = ["DATASETS", "canonical_dataset_name", "load_dataset"]

DATASETS = GBU_DATASETS


def canonical_dataset_name(name: str) -> str:
    """``name`` upper-cased if it is a known data set, else a DataError listing them."""
    if name.upper() not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return name.upper()


def load_dataset(
    name: str,
    *,
    data_root: str | os.PathLike | None = None,
    synthetic_features: bool = False,
    seed: int = 0,
) -> ZSLData:
    """Load data set ``name`` from the source the arguments select (module docstring).

    Args:
        name: AWA1, AWA2, CUB, SUN or APY (any case).
        data_root: GBU root holding ``<NAME>/att_splits.mat``; ``None`` for the synthetic preset.
        synthetic_features: with ``data_root``, synthesize features instead of reading
            ``res101.mat``.
        seed: seed of the synthetic generator (ignored for real data).

    Raises:
        DataError: unknown name, missing folder or file, malformed data.
    """
    name = canonical_dataset_name(name)
    if data_root is None:
        if synthetic_features:
            raise DataError("--synthetic-features needs --data-root (the folder with <DATASET>/att_splits.mat)")
        return make_synthetic(name, seed=seed)
    folder = dataset_dir(data_root, name)
    if synthetic_features:
        return make_semi_synthetic(folder / "att_splits.mat", seed=seed)
    if not (folder / "res101.mat").is_file():
        raise DataError(
            f"{folder / 'res101.mat'} not found: real image features are needed unless you pass "
            f"--synthetic-features (real attributes, synthetic features)"
        )
    return load_gbu(data_root, name)
