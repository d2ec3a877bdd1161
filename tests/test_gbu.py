"""Tests for the GBU "xlsa17" loader: exact round trips on tiny files written in the GBU
format, one test per error path, and the real ``att_splits.mat`` files where present."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch

from analysis.data import DataError
from analysis.gbu import GBU_DATASETS, dataset_dir, load_gbu, read_att_splits, read_res101

REAL_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gbu"

# A tiny data set: 10 images, 5 classes (0-2 seen, 3-4 unseen), 0-based.
LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 3, 4, 3])
TRAINVAL, TEST_SEEN, TEST_UNSEEN = [0, 1, 2, 3, 4], [5, 6], [7, 8, 9]
TRAIN, VAL = [0, 1, 2], [3, 4]
NAMES = ["antelope", "grizzly+bear", "001.Black_footed_Albatross", "sheep", "bat"]
N, D_Z, C, D_A = 10, 4, 5, 3


def _cell(strings: list[str]) -> np.ndarray:
    """A [n, 1] object array, which savemat writes as a MATLAB cell array."""
    cell = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        cell[i, 0] = s
    return cell


def _loc(indices: list[int]) -> np.ndarray:
    """0-based indices -> GBU's 1-based uint16 [n, 1] column."""
    return (np.asarray(indices, dtype=np.int64) + 1).astype(np.uint16).reshape(-1, 1)


def att_splits_arrays(*, optional: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    att = rng.random((D_A, C)) + 0.1
    att /= np.linalg.norm(att, axis=0, keepdims=True)  # unit-norm class columns
    arrays = {"att": att, "original_att": att * 100.0, "allclasses_names": _cell(NAMES),
              "trainval_loc": _loc(TRAINVAL), "test_seen_loc": _loc(TEST_SEEN),
              "test_unseen_loc": _loc(TEST_UNSEEN)}
    if optional:
        arrays |= {"train_loc": _loc(TRAIN), "val_loc": _loc(VAL)}
    return arrays


def res101_arrays() -> dict[str, Any]:
    features = np.arange(D_Z * N, dtype=np.float64).reshape(D_Z, N) / 7.0  # [d_z, N]
    return {"features": features, "labels": (LABELS + 1.0).reshape(-1, 1),
            "image_files": _cell([f"img/{i}.jpg" for i in range(N)])}


def write_gbu(root: Path, att_splits: dict[str, Any] | None = None,
              res101: dict[str, Any] | None = None, dataset: str = "CUB") -> Path:
    """Write ``root/dataset/{att_splits,res101}.mat``; a ``None`` dict writes no file."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    if att_splits is not None:
        scipy.io.savemat(folder / "att_splits.mat", att_splits)
    if res101 is not None:
        scipy.io.savemat(folder / "res101.mat", res101)
    return folder


# -- round trips -------------------------------------------------------------------------
def test_load_gbu_round_trip(tmp_path: Path) -> None:
    att, res = att_splits_arrays(), res101_arrays()
    folder = write_gbu(tmp_path, att, res)
    data = load_gbu(tmp_path, "cub")
    assert data.name == "CUB" and data.source == "real"
    assert data.provenance == {"root": str(tmp_path),
                               "att_splits": str(folder / "att_splits.mat"),
                               "res101": str(folder / "res101.mat")}
    assert data.features.dtype == torch.float32 and data.features.shape == (N, D_Z)
    torch.testing.assert_close(data.features.double(), torch.from_numpy(res["features"].T),
                               rtol=1e-6, atol=0)
    assert data.attributes.dtype == torch.float32 and data.attributes.shape == (C, D_A)
    torch.testing.assert_close(data.attributes.double(), torch.from_numpy(att["att"].T),
                               rtol=1e-6, atol=0)
    assert data.class_names == tuple(NAMES)
    for got, want in ((data.labels, LABELS), (data.trainval, TRAINVAL),
                      (data.test_seen, TEST_SEEN), (data.test_unseen, TEST_UNSEEN),
                      (data.train, TRAIN), (data.val, VAL)):
        assert got.dtype == torch.int64 and got.ndim == 1
        assert got.tolist() == list(want)
    assert data.seen_classes.tolist() == [0, 1, 2]
    assert data.unseen_classes.tolist() == [3, 4]


def test_optional_train_val_absent(tmp_path: Path) -> None:
    write_gbu(tmp_path, att_splits_arrays(optional=False), res101_arrays())
    data = load_gbu(tmp_path, "CUB")
    assert data.train is None and data.val is None


def test_read_res101_integer_labels(tmp_path: Path) -> None:
    res = res101_arrays() | {"labels": (LABELS + 1).astype(np.uint8).reshape(-1, 1)}
    folder = write_gbu(tmp_path, res101=res)
    features, labels = read_res101(folder / "res101.mat")
    assert labels.dtype == torch.int64 and labels.tolist() == LABELS.tolist()
    assert features.shape == (N, D_Z)


@pytest.mark.parametrize("one_based", [1, 2, 65535])
def test_uint16_indices_do_not_wrap(tmp_path: Path, one_based: int) -> None:
    att = att_splits_arrays() | {"trainval_loc": np.array([[one_based]], dtype=np.uint16)}
    folder = write_gbu(tmp_path, att)
    splits = read_att_splits(folder / "att_splits.mat")
    assert splits.trainval.dtype == torch.int64
    assert splits.trainval.tolist() == [one_based - 1]
    assert splits.num_samples_indexed == max(one_based, N)


def test_dataset_dir_is_case_insensitive(tmp_path: Path) -> None:
    for name in GBU_DATASETS:
        assert dataset_dir(tmp_path, name.lower()) == tmp_path / name


# -- error paths -------------------------------------------------------------------------
def test_missing_att_splits_file(tmp_path: Path) -> None:
    write_gbu(tmp_path, res101=res101_arrays())
    with pytest.raises(DataError, match=r"att_splits\.mat: file not found.*"
                                        r"<root>/<DATASET>/att_splits\.mat"):
        load_gbu(tmp_path, "CUB")


def test_missing_res101_file(tmp_path: Path) -> None:
    write_gbu(tmp_path, att_splits_arrays())
    with pytest.raises(DataError, match=r"res101\.mat: file not found.*"
                                        r"<root>/<DATASET>/res101\.mat"):
        load_gbu(tmp_path, "CUB")


def test_unreadable_mat_file(tmp_path: Path) -> None:
    path = tmp_path / "att_splits.mat"
    path.write_bytes(b"this is not a MATLAB file" * 8)
    with pytest.raises(DataError, match=r"att_splits\.mat: not a readable \.mat file"):
        read_att_splits(path)


@pytest.mark.parametrize("key", ["att", "allclasses_names", "test_unseen_loc"])
def test_missing_key_in_att_splits(tmp_path: Path, key: str) -> None:
    att = att_splits_arrays()
    del att[key]
    folder = write_gbu(tmp_path, att)
    with pytest.raises(DataError, match=rf"att_splits\.mat: missing required key '{key}'; "
                                        r"keys present: \[.*'trainval_loc'"):
        read_att_splits(folder / "att_splits.mat")


@pytest.mark.parametrize("key", ["features", "labels"])
def test_missing_key_in_res101(tmp_path: Path, key: str) -> None:
    res = res101_arrays()
    del res[key]
    folder = write_gbu(tmp_path, res101=res)
    with pytest.raises(DataError, match=rf"res101\.mat: missing required key '{key}'"):
        read_res101(folder / "res101.mat")


def test_att_wrong_ndim(tmp_path: Path) -> None:
    folder = write_gbu(tmp_path, att_splits_arrays() | {"att": np.ones((D_A, C, 2))})
    with pytest.raises(DataError, match=r"att must be a 2-D \[d_a, C\] matrix"):
        read_att_splits(folder / "att_splits.mat")


def test_features_wrong_ndim(tmp_path: Path) -> None:
    folder = write_gbu(tmp_path, res101=res101_arrays() | {"features": np.ones((D_Z, N, 2))})
    with pytest.raises(DataError, match=r"features must be a 2-D \[d_z, N\] matrix"):
        read_res101(folder / "res101.mat")


def test_names_count_mismatch(tmp_path: Path) -> None:
    folder = write_gbu(tmp_path, att_splits_arrays() | {"allclasses_names": _cell(NAMES[:-1])})
    with pytest.raises(DataError, match=rf"allclasses_names has {C - 1} names but att has "
                                        rf"C = {C}"):
        read_att_splits(folder / "att_splits.mat")


def test_name_not_a_single_string(tmp_path: Path) -> None:
    names = _cell(NAMES)
    names[1, 0] = np.array(["ab", "cd"])  # a 2-row char matrix instead of one string
    folder = write_gbu(tmp_path, att_splits_arrays() | {"allclasses_names": names})
    with pytest.raises(DataError, match=r"allclasses_names entry 1 is not a single string"):
        read_att_splits(folder / "att_splits.mat")


def test_index_vector_not_a_vector(tmp_path: Path) -> None:
    matrix = np.array([[1, 2], [3, 4]], dtype=np.uint16)
    folder = write_gbu(tmp_path, att_splits_arrays() | {"test_seen_loc": matrix})
    with pytest.raises(DataError, match=r"test_seen_loc must be a vector \(\[n, 1\]"):
        read_att_splits(folder / "att_splits.mat")


def test_index_zero_is_not_one_based(tmp_path: Path) -> None:
    zero_based = np.array(TRAINVAL, dtype=np.uint16).reshape(-1, 1)  # forgot the +1
    folder = write_gbu(tmp_path, att_splits_arrays() | {"trainval_loc": zero_based})
    with pytest.raises(DataError, match=r"trainval_loc holds value 0 < 1; GBU indices and "
                                        r"labels are 1-based"):
        read_att_splits(folder / "att_splits.mat")


def test_label_zero_is_not_one_based(tmp_path: Path) -> None:
    folder = write_gbu(tmp_path, res101=res101_arrays() | {"labels": LABELS.reshape(-1, 1)})
    with pytest.raises(DataError, match=r"labels holds value 0 < 1"):
        read_res101(folder / "res101.mat")


def test_non_integer_labels(tmp_path: Path) -> None:
    labels = (LABELS + 1.5).reshape(-1, 1)
    folder = write_gbu(tmp_path, res101=res101_arrays() | {"labels": labels})
    with pytest.raises(DataError, match=r"labels must hold whole numbers"):
        read_res101(folder / "res101.mat")


def test_labels_count_mismatch(tmp_path: Path) -> None:
    labels = (LABELS[:-1] + 1.0).reshape(-1, 1)
    folder = write_gbu(tmp_path, res101=res101_arrays() | {"labels": labels})
    with pytest.raises(DataError, match=rf"labels has {N - 1} entries but features has "
                                        rf"N = {N} columns"):
        read_res101(folder / "res101.mat")


def test_nan_in_features(tmp_path: Path) -> None:
    features = res101_arrays()["features"].copy()
    features[2, 7] = np.nan
    folder = write_gbu(tmp_path, res101=res101_arrays() | {"features": features})
    with pytest.raises(DataError, match=r"res101\.mat: features contains NaN or inf "
                                        r"\(first at \(2, 7\)\)"):
        read_res101(folder / "res101.mat")


def test_inf_in_att(tmp_path: Path) -> None:
    att = att_splits_arrays()
    att["att"][0, 3] = np.inf
    folder = write_gbu(tmp_path, att)
    with pytest.raises(DataError, match=r"att_splits\.mat: att contains NaN or inf"):
        read_att_splits(folder / "att_splits.mat")


def test_index_past_num_samples(tmp_path: Path) -> None:
    write_gbu(tmp_path, att_splits_arrays() | {"test_unseen_loc": _loc([7, 8, N])},
              res101_arrays())
    with pytest.raises(DataError, match=rf"att_splits\.mat: test_unseen_loc holds 1-based "
                                        rf"index {N + 1}, past the N = {N} images of "
                                        rf".*res101\.mat"):
        load_gbu(tmp_path, "CUB")


def test_label_past_num_classes(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[8] = C  # 0-based C, i.e. 1-based C + 1: one class more than att describes
    write_gbu(tmp_path, att_splits_arrays(),
              res101_arrays() | {"labels": (labels + 1.0).reshape(-1, 1)})
    with pytest.raises(DataError, match=rf"res101\.mat: labels go up to {C + 1} \(1-based\) "
                                        rf"but .*att_splits\.mat has attributes for C = {C}"):
        load_gbu(tmp_path, "CUB")


def test_overlapping_trainval_test_seen(tmp_path: Path) -> None:
    write_gbu(tmp_path, att_splits_arrays() | {"test_seen_loc": _loc([4, 5, 6])},
              res101_arrays())
    with pytest.raises(DataError, match=r"att_splits\.mat: splits trainval and test_seen "
                                        r"overlap in 1 samples"):
        load_gbu(tmp_path, "CUB")


def test_seen_class_in_test_unseen(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[9] = 0  # a seen class among the unseen test images
    write_gbu(tmp_path, att_splits_arrays(),
              res101_arrays() | {"labels": (labels + 1.0).reshape(-1, 1)})
    with pytest.raises(DataError, match=r"att_splits\.mat: class 0 \('antelope'\) appears in "
                                        r"both trainval \(seen\) and test_unseen"):
        load_gbu(tmp_path, "CUB")


def test_unknown_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown GBU data set 'ImageNet'; valid names: "
                                        r"\['AWA1', 'AWA2', 'CUB', 'SUN', 'APY'\]"):
        load_gbu(tmp_path, "ImageNet")


def test_missing_root_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"GBU root folder .*nowhere does not exist"):
        load_gbu(tmp_path / "nowhere", "CUB")


# -- the real att_splits.mat files -----------------------------------------------------
# name: (d_a, C, trainval, test_seen, test_unseen, N)
REAL_SIZES = {"AWA2": (85, 50, 23527, 5882, 7913, 37322),
              "CUB": (312, 200, 7057, 1764, 2967, 11788),
              "SUN": (102, 717, 10320, 2580, 1440, 14340)}


def _real_folder(name: str) -> Path:
    folder = REAL_ROOT / name
    if not (folder / "att_splits.mat").is_file():
        pytest.skip(f"real GBU file {folder / 'att_splits.mat'} is not present")
    return folder


@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_real_att_splits(name: str) -> None:
    d_a, c, n_trainval, n_seen, n_unseen, n = REAL_SIZES[name]
    splits = read_att_splits(_real_folder(name) / "att_splits.mat")
    assert splits.attributes.shape == (c, d_a) and len(splits.class_names) == c
    norms = torch.linalg.vector_norm(splits.attributes.double(), dim=1)
    torch.testing.assert_close(norms, torch.ones(c, dtype=torch.float64), rtol=0, atol=1e-6)
    sizes = (splits.trainval.numel(), splits.test_seen.numel(), splits.test_unseen.numel())
    assert sizes == (n_trainval, n_seen, n_unseen)
    for index in splits.index_vectors().values():
        assert index.dtype == torch.int64 and int(index.min()) >= 0 and int(index.max()) < n
    main = (splits.trainval, splits.test_seen, splits.test_unseen)
    assert torch.unique(torch.cat(main)).numel() == sum(sizes)  # pairwise disjoint
    assert (splits.train is None) == (name == "CUB")


@pytest.mark.parametrize(("name", "seen", "unseen"), [("AWA2", 40, 10), ("CUB", 150, 50)])
def test_load_gbu_real_att_splits(tmp_path: Path, name: str, seen: int, unseen: int) -> None:
    real = _real_folder(name)
    splits = read_att_splits(real / "att_splits.mat")
    index = {class_name: i for i, class_name in enumerate(splits.class_names)}
    seen_ids = [index[s] for s in (real / "trainvalclasses.txt").read_text().split()]
    unseen_ids = [index[s] for s in (real / "testclasses.txt").read_text().split()]
    n = REAL_SIZES[name][-1]
    labels = np.full(n, seen_ids[0], dtype=np.int64)  # images outside every split
    for part, ids in ((splits.trainval, seen_ids), (splits.test_seen, seen_ids),
                      (splits.test_unseen, unseen_ids)):
        labels[part.numpy()] = np.resize(ids, part.numel())  # cycle through the classes
    rng = np.random.default_rng(1)
    folder = write_gbu(tmp_path, res101={"features": rng.random((8, n)),
                                         "labels": (labels + 1.0).reshape(-1, 1)},
                       dataset=name)
    shutil.copy(real / "att_splits.mat", folder / "att_splits.mat")
    data = load_gbu(tmp_path, name.lower())
    assert (data.seen_classes.numel(), data.unseen_classes.numel()) == (seen, unseen)
    assert sorted(data.class_names[i] for i in data.unseen_classes.tolist()) == sorted(
        (real / "testclasses.txt").read_text().split())
    assert data.features.shape == (n, 8) and data.summary()["num_samples"] == n
