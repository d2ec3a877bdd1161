"""Shared test configuration: hypothesis profiles, paths, and a registry of tiny cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from analysis.synthetic import SyntheticSpec, make_synthetic

# Hypothesis: a fast default, and a derandomized profile under CI (CI=true).
settings.register_profile("default", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", parent=settings.get_profile("default"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")

torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]
GBU_ROOT = REPO.parent / "shared" / "data" / "gbu"


def real_att_splits(name: str) -> Path:
    """Path of a real GBU att_splits.mat, or skip the test with the reason."""
    path = GBU_ROOT / name / "att_splits.mat"
    if not path.is_file():
        pytest.skip(f"real GBU attributes not available: {path} is missing (../shared is absent)")
    return path


# A tiny synthetic data set: 6 seen + 3 unseen classes, d_a 12, d_z 32, low noise
# (learnable within a few epochs: d_z = 32 carries much less signal than 2048).
TINY_SPEC = SyntheticSpec("TINY", num_seen=6, num_unseen=3, attribute_dim=12, trainval=240,
                          test_seen=60, test_unseen=90, feature_dim=32, noise=0.5)


@pytest.fixture(scope="session")
def tiny_data():
    return make_synthetic(TINY_SPEC, seed=0)
