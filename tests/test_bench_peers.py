"""The statistics `bench/peers.py` uses to compare trace estimators (its verdict line)."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("peers", Path(__file__).resolve().parents[1] / "bench" / "peers.py")
peers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("peers", peers)  # dataclasses look their module up
_spec.loader.exec_module(peers)


def test_rms_ratio_interval_covers_the_true_ratio_at_its_level() -> None:
    """Coverage by simulation: 4000 pairs of 10 Gaussian errors with sigma_a / sigma_b = 1.5;
    the 95 % interval must contain 1.5 in 95 % +- 3 binomial standard errors of the pairs."""
    rng = np.random.default_rng(0)
    trials, n, truth = 4000, 10, 1.5
    hits = 0
    for _ in range(trials):
        a = rng.normal(0.0, truth, n)
        b = rng.normal(0.0, 1.0, n)
        _, low, high = peers.rms_ratio_interval(math.sqrt(np.mean(a * a)), n, math.sqrt(np.mean(b * b)), n)
        hits += low <= truth <= high
    assert abs(hits / trials - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / trials)


def test_rms_ratio_interval_by_hand_for_equal_rms_at_10_seeds() -> None:
    """F_{0.975}(10, 10) = 3.7168 (tables): equal RMS over 10 seeds gives [0.5187, 1.9279]."""
    ratio, low, high = peers.rms_ratio_interval(0.02, 10, 0.02, 10)
    assert ratio == 1.0
    assert low == pytest.approx(1 / math.sqrt(3.7168), rel=1e-4)
    assert high == pytest.approx(math.sqrt(3.7168), rel=1e-4)


@pytest.mark.parametrize("kwargs", [dict(n_a=0), dict(rms_b=0.0), dict(level=1.0)])
def test_rms_ratio_interval_refuses_bad_arguments(kwargs) -> None:
    args = dict(rms_a=0.01, n_a=10, rms_b=0.01, n_b=10) | kwargs
    with pytest.raises(ValueError, match="need n >= 1"):
        peers.rms_ratio_interval(**args)


def _row(method: str, rms: float, stderr: float | None = None) -> dict:
    return {"method": method, "rms_rel_error": rms, "mean_rel_stderr": stderr}


@pytest.mark.parametrize(("ours", "theirs", "word"), [
    (0.0161, 0.0122, "cannot tell"),  # the 10-seed rows of bench/RESULTS.md
    (0.05, 0.01, "LESS accurate"),
    (0.01, 0.05, "more accurate"),
])
def test_trace_verdict_compares_the_best_of_each_side(ours: float, theirs: float, word: str) -> None:
    rows = [_row("ours: hutchinson_trace", ours, 0.019), _row("ours: xtrace", 0.9, 0.5),
            _row("curvlinops hutchinson_trace", theirs), _row("PyHessian trace", 0.9),
            {"method": "hessian-eigenthings hutchinson", "skipped": "not installed"}]
    verdict = peers.trace_verdict(rows, 10)
    assert word in verdict
    assert "ours: hutchinson_trace" in verdict and "curvlinops hutchinson_trace" in verdict
    assert f"{0.019 / ours:.2f}" in verdict  # calibration of our best row


def test_trace_verdict_needs_both_sides() -> None:
    assert peers.trace_verdict([_row("ours: hutchinson_trace", 0.01)], 10).startswith("No verdict")
