"""ZSLData: derived structure, summary, device moves, and every DataError of its validation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import torch

from analysis.data import DataError, ZSLData

# 4 classes (0, 1 seen; 2, 3 unseen), 3 samples each, d_z = 3, d_a = 2.
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
TRAINVAL = [0, 1, 3, 4]
TEST_SEEN = [2, 5]
TEST_UNSEEN = [6, 7, 8, 9, 10, 11]


def idx(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def fields(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of a small valid ZSLData, with ``overrides`` applied."""
    base: dict[str, Any] = {
        "name": "HAND",
        "features": torch.arange(36, dtype=torch.float32).reshape(12, 3) / 10,
        "labels": LABELS.clone(),
        "attributes": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]]),
        "trainval": idx(TRAINVAL),
        "test_seen": idx(TEST_SEEN),
        "test_unseen": idx(TEST_UNSEEN),
        "class_names": ("a", "b", "c", "d"),
        "source": "synthetic",
        "provenance": {"made": "by hand"},
    }
    base.update(overrides)
    return base


def make(**overrides: Any) -> ZSLData:
    return ZSLData(**fields(**overrides))


def rejects(message: str, **overrides: Any) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        make(**overrides)


# -- valid data --------------------------------------------------------------------------
def test_derived_classes_and_sizes():
    data = make()
    assert torch.equal(data.seen_classes, idx([0, 1]))
    assert torch.equal(data.unseen_classes, idx([2, 3]))
    assert data.seen_classes.dtype == data.unseen_classes.dtype == torch.int64
    assert (data.num_samples, data.num_classes, data.feature_dim, data.attribute_dim) == (12, 4, 3, 2)
    assert data.device == torch.device("cpu")


def test_unseen_classes_are_sorted_and_unique():
    data = make(test_unseen=idx([11, 6, 10, 7]))
    assert torch.equal(data.unseen_classes, idx([2, 3]))


def test_summary_numbers_and_json():
    data = make(train=idx([0, 3]), val=idx([1, 4]))
    assert data.summary() == {
        "name": "HAND",
        "source": "synthetic",
        "num_samples": 12,
        "feature_dim": 3,
        "attribute_dim": 2,
        "num_classes": 4,
        "num_seen_classes": 2,
        "num_unseen_classes": 2,
        "trainval": 4,
        "test_seen": 2,
        "test_unseen": 6,
        "provenance": {"made": "by hand"},
    }
    json.dumps(data.summary())


@pytest.mark.parametrize("with_optional", [False, True])
def test_to_cpu_round_trip(with_optional):
    extra = {"train": idx([0, 3]), "val": idx([1, 4])} if with_optional else {}
    data = make(**extra)
    moved = data.to("cpu")
    assert isinstance(moved, ZSLData) and moved is not data
    for name in ("features", "labels", "attributes", "trainval", "test_seen", "test_unseen"):
        assert torch.equal(getattr(moved, name), getattr(data, name))
        assert getattr(moved, name) is getattr(data, name)  # no copy when already there
    for name in ("train", "val"):
        if with_optional:
            assert torch.equal(getattr(moved, name), getattr(data, name))
        else:
            assert getattr(moved, name) is None
    assert (moved.name, moved.class_names, moved.source, moved.provenance) == (
        data.name, data.class_names, data.source, data.provenance)
    assert moved.summary() == data.summary()
    assert moved.to(torch.device("cpu")).summary() == data.summary()


@pytest.mark.parametrize("source", ["real", "synthetic", "semi-synthetic"])
def test_every_source_accepted(source):
    assert make(source=source).source == source


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# -- _validate ---------------------------------------------------------------------------
def test_bad_source():
    rejects("source must be one of", source="fake")


def test_features_not_2d():
    rejects("features must be a float [N, d_z] matrix", features=torch.zeros(12))


def test_features_not_float():
    rejects("features must be a float [N, d_z] matrix", features=torch.zeros(12, 3, dtype=torch.int64))


def test_attributes_not_2d():
    rejects("attributes must be a float [C, d_a] matrix", attributes=torch.zeros(4, 2, 1))


def test_attributes_not_float():
    rejects("attributes must be a float [C, d_a] matrix", attributes=torch.ones(4, 2, dtype=torch.int32))


def test_labels_wrong_dtype():
    rejects("labels must be int64 of shape (12,)", labels=LABELS.to(torch.int32))


def test_labels_wrong_length():
    rejects("labels must be int64 of shape (12,)", labels=LABELS[:11].clone())


def test_nan_in_features():
    features = fields()["features"]
    features[5, 1] = float("nan")
    rejects("features contain NaN or inf (first at row 5)", features=features)


def test_inf_in_attributes():
    attributes = fields()["attributes"]
    attributes[2, 0] = float("inf")
    rejects("attributes contain NaN or inf (first at row 2)", attributes=attributes)


def test_class_names_count_mismatch():
    rejects("got 3 class names for 4 attribute rows", class_names=("a", "b", "c"))


def test_label_too_large():
    labels = LABELS.clone()
    labels[0] = 4
    rejects("label 4 is outside [0, 3]", labels=labels)


def test_label_negative():
    labels = LABELS.clone()
    labels[0] = -1
    rejects("label -1 is outside [0, 3]", labels=labels)


# -- _check_index_vector -------------------------------------------------------------------
@pytest.mark.parametrize("split", ["trainval", "test_seen", "test_unseen", "train", "val"])
def test_index_vector_wrong_dtype(split):
    rejects(f"{split} must be a 1-D int64 tensor of sample indices",
            **{split: torch.tensor([0, 1], dtype=torch.int32)})


def test_index_vector_not_1d():
    rejects("trainval must be a 1-D int64 tensor of sample indices", trainval=idx(TRAINVAL).reshape(2, 2))


@pytest.mark.parametrize("split", ["trainval", "test_seen", "test_unseen", "train", "val"])
def test_empty_split(split):
    rejects(f"{split} is empty", **{split: idx([])})


def test_index_negative():
    rejects("test_seen holds sample index -1, outside [0, 11]", test_seen=idx([2, -1]))


def test_index_too_large():
    rejects("test_unseen holds sample index 12, outside [0, 11]", test_unseen=idx([6, 12]))


def test_optional_index_out_of_range():
    rejects("val holds sample index 99, outside [0, 11]", train=idx([0]), val=idx([99]))


def test_duplicated_index():
    rejects("trainval lists some samples more than once", trainval=idx([0, 1, 3, 4, 1]))


def test_duplicated_optional_index():
    rejects("train lists some samples more than once", train=idx([0, 0]))


# -- overlapping splits --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"test_seen": idx([2, 5, 0])}, "splits trainval and test_seen overlap in 1 samples (first: sample 0)"),
        ({"test_unseen": idx(TEST_UNSEEN + [3])}, "splits trainval and test_unseen overlap in 1 samples (first: sample 3)"),
        ({"test_unseen": idx(TEST_UNSEEN + [5])}, "splits test_seen and test_unseen overlap in 1 samples (first: sample 5)"),
        ({"train": idx([0, 3]), "val": idx([1, 3])}, "splits train and val overlap in 1 samples (first: sample 3)"),
        ({"train": idx([0, 7]), "val": idx([1])}, "splits train and test_unseen overlap in 1 samples (first: sample 7)"),
        ({"train": idx([0]), "val": idx([1, 9, 10])}, "splits val and test_unseen overlap in 2 samples (first: sample 9)"),
        ({"train": idx([8])}, "splits train and test_unseen overlap"),
        ({"val": idx([8])}, "splits val and test_unseen overlap"),
    ],
)
def test_overlapping_splits(overrides, message):
    rejects(message, **overrides)


def test_train_and_val_may_overlap_test_seen():
    # In the GBU proposed split, test_seen is drawn from train and val images.
    data = make(train=idx([0, 2]), val=idx([1, 5]))
    assert torch.equal(data.train, idx([0, 2]))


def test_class_both_seen_and_unseen():
    rejects("class 2 ('c') appears in both trainval (seen) and test_unseen (unseen)",
            trainval=idx(TRAINVAL + [6]), test_unseen=idx([7, 8, 9, 10, 11]))


def test_test_seen_class_without_trainval_samples():
    rejects("test_seen holds samples of class 1, which has no trainval sample",
            trainval=idx([0, 1]))
