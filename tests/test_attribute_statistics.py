"""Tests of variance.attribute_statistics (claim V3): scipy/numpy oracles, errors, real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.gbu import read_att_splits
from variance.attribute_statistics import (
    AttributeStatistics,
    attribute_statistics,
    format_attribute_table,
)

GBU_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gbu"


def _gaussian(c: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, d, generator=g, dtype=torch.float64)


def _skewed(c: int, d: int, seed: int) -> torch.Tensor:
    """Non-Gaussian, correlated columns: exp of correlated Gaussians (log-normal)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (torch.randn(c, d, generator=g, dtype=torch.float64) @ mix / math.sqrt(d)).exp()


# ---------------------------------------------------------------- normality


def test_gaussian_pvalues_are_uniform():
    # Under H0 each p-value is uniform, so #{p < 0.05} ~ Binomial(200, 0.05).
    stats = attribute_statistics(_gaussian(2000, 200, seed=0))
    rejected = stats.summary()["rejected_fraction"]
    stderr = math.sqrt(0.05 * 0.95 / 200)
    assert abs(rejected - 0.05) <= 4 * stderr


def test_normality_equals_scipy_normaltest():
    att = _skewed(60, 7, seed=1)
    stats = attribute_statistics(att)
    oracle = scipy.stats.normaltest(att.numpy(), axis=0)
    assert np.array_equal(stats.normality_chi2.numpy(), oracle.statistic)
    assert np.array_equal(stats.normality_pvalue.numpy(), oracle.pvalue)
    for j in range(att.shape[1]):  # column by column (1-D sums may differ by round-off)
        column = scipy.stats.normaltest(att[:, j].numpy())
        assert stats.normality_chi2[j].item() == pytest.approx(column.statistic, rel=1e-12)
        assert stats.normality_pvalue[j].item() == pytest.approx(column.pvalue, rel=1e-12)
    # K² = Z_skew² + Z_kurt², p = P[χ²_2 > K²] = exp(-K²/2)
    x = att[:, 3].numpy()
    k2 = scipy.stats.skewtest(x).statistic ** 2 + scipy.stats.kurtosistest(x).statistic ** 2
    assert stats.normality_chi2[3].item() == pytest.approx(k2, rel=1e-12)
    assert stats.normality_pvalue[3].item() == pytest.approx(math.exp(-k2 / 2), rel=1e-10)


def test_small_class_count_runs_without_warning():
    # 8 <= C < 20: allowed (less reliable p-values), and no warning escapes (warnings = errors).
    stats = attribute_statistics(_skewed(8, 4, seed=2))
    assert torch.isfinite(stats.normality_chi2).all()
    assert ((stats.normality_pvalue >= 0) & (stats.normality_pvalue <= 1)).all()


# ---------------------------------------------------------------- correlations


def test_correlations_equal_numpy_corrcoef():
    att = _skewed(50, 9, seed=3)
    stats = attribute_statistics(att)
    corr = np.corrcoef(att.numpy(), rowvar=False)
    expected = np.abs(corr[np.triu_indices(9, k=1)])  # row-major upper triangle
    assert stats.abs_correlations.shape == (9 * 8 // 2,)
    np.testing.assert_allclose(stats.abs_correlations.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("c", "d", "seed"), [(40, 3, 4), (100, 30, 4), (460, 55, 9),
                                               (357, 175, 16)])
def test_identical_columns_have_correlation_exactly_one(c, d, seed):
    # The last three cases miss 1 by an ulp with column-wise torch reductions and a BLAS
    # z^T z (seen with torch 2.13 CPU): the module computes G row by row to avoid that.
    base = _gaussian(c, d, seed=seed)
    att = torch.cat([base, base[:, :1], -2.0 * base[:, 1:2] + 3.0], dim=1)  # d ~ 0, d+1 ~ 1
    stats = attribute_statistics(att)
    corr = torch.zeros(d + 2, d + 2, dtype=torch.float64)
    upper = torch.triu_indices(d + 2, d + 2, offset=1)
    corr[upper[0], upper[1]] = stats.abs_correlations
    assert corr[0, d].item() == 1.0
    assert corr[1, d + 1].item() == pytest.approx(1.0, abs=1e-15)
    assert (stats.abs_correlations <= 1.0).all()


def test_constant_attributes_are_excluded_and_counted():
    base = _skewed(30, 4, seed=5)
    ones = torch.ones(30, 1, dtype=torch.float64)
    nearly = ones.clone()
    nearly[7, 0] = math.nextafter(1.0, 2.0)  # scipy would warn about cancellation here
    att = torch.cat([ones * 0.3, base[:, :2], torch.zeros(30, 1, dtype=torch.float64),
                     base[:, 2:], nearly], dim=1)  # constants at 0, 3, 6
    stats = attribute_statistics(att)
    assert stats.constant_attributes == 3
    assert stats.constant_mask.tolist() == [True, False, False, True, False, False, True]
    assert torch.isnan(stats.normality_chi2[stats.constant_mask]).all()
    assert torch.isnan(stats.normality_pvalue[stats.constant_mask]).all()
    reference = attribute_statistics(base)
    torch.testing.assert_close(stats.normality_chi2[~stats.constant_mask],
                               reference.normality_chi2, rtol=0, atol=0)
    torch.testing.assert_close(stats.abs_correlations, reference.abs_correlations)
    assert not torch.isnan(stats.abs_correlations).any()
    assert stats.standardized_values.numel() == 30 * 4
    summary = stats.summary()
    assert summary["constant_attributes"] == 3.0
    assert summary["num_attributes"] == 7.0
    assert summary["chi2_median"] == reference.summary()["chi2_median"]


# ---------------------------------------------------------------- standardization, summary


def test_standardized_values_have_zero_mean_unit_std():
    att = 5.0 + 0.01 * _skewed(64, 6, seed=6)
    flat = attribute_statistics(att).standardized_values
    assert flat.shape == (64 * 6,)  # documented [C * d], flattened row-major
    z = flat.reshape(64, -1)
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(6, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(z.std(dim=0, correction=0), torch.ones(6, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    expected = (att - att.mean(0)) / att.std(0, correction=0)
    torch.testing.assert_close(z, expected, rtol=1e-9, atol=1e-9)


def test_summary_quartiles_equal_numpy_quantile():
    stats = attribute_statistics(_skewed(45, 12, seed=7))
    summary = stats.summary()
    for key, values in (("chi2", stats.normality_chi2), ("pvalue", stats.normality_pvalue),
                        ("abs_corr", stats.abs_correlations)):
        q1, median, q3 = np.quantile(values.numpy(), [0.25, 0.5, 0.75])
        assert summary[f"{key}_q1"] == q1
        assert summary[f"{key}_median"] == median
        assert summary[f"{key}_q3"] == q3
    assert summary["rejected_fraction"] == np.mean(stats.normality_pvalue.numpy() < 0.05)
    assert stats.summary(alpha=0.5)["rejected_fraction"] >= summary["rejected_fraction"]
    # rejected means p < alpha, strictly: at alpha equal to an observed p-value, that one is kept
    p = np.sort(stats.normality_pvalue.numpy())
    assert stats.summary(alpha=float(p[3]))["rejected_fraction"] == 3 / 12
    assert summary["num_classes"] == 45.0 and summary["constant_attributes"] == 0.0


def test_single_varying_attribute_has_no_correlation():
    att = torch.cat([_skewed(20, 1, seed=8), torch.ones(20, 2, dtype=torch.float64)], dim=1)
    stats = attribute_statistics(att)
    assert stats.abs_correlations.numel() == 0
    summary = stats.summary()
    assert math.isnan(summary["abs_corr_median"])
    assert math.isfinite(summary["chi2_median"])


def test_histogram_matches_numpy():
    stats = attribute_statistics(_skewed(100, 5, seed=9))
    counts, edges = stats.histogram(bins=16, range=(-3, 3))
    np_counts, np_edges = np.histogram(stats.standardized_values.numpy(), bins=16, range=(-3, 3))
    assert counts.dtype == torch.int64 and counts.tolist() == np_counts.tolist()
    np.testing.assert_allclose(edges.numpy(), np_edges, rtol=0, atol=1e-12)
    full, _ = stats.histogram(bins=4, range=(-100, 100))
    assert int(full.sum()) == 100 * 5


def test_format_attribute_table():
    rows = {name: attribute_statistics(_skewed(c, d, seed=10)).summary()
            for name, c, d in (("AWA2", 50, 8), ("CUB-like", 200, 12))}
    table = format_attribute_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4
    assert "median chi2 [q1, q3]" in lines[0] and "median |corr| [q1, q3]" in lines[0]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("AWA2") and lines[3].startswith("CUB-like")
    assert len(lines[2]) == len(lines[3])  # fixed width: numbers right-aligned
    assert f"{rows['CUB-like']['abs_corr_median']:.3f}" in lines[3]
    assert format_attribute_table({}).count("\n") == 1  # header and rule only


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("att", "match"),
    [
        (torch.randn(20), r"must be 2-D \[C, d_a\].*got shape \(20,\)"),
        (torch.randn(20, 3, 2), r"must be 2-D .*got shape \(20, 3, 2\)"),
        (torch.randn(7, 4), r"C = 7 classes .* needs C >= 8"),
        (torch.randn(12, 0), r"no attributes \(shape \(12, 0\)\)"),
        (torch.ones(12, 3), r"all 3 attributes of att are constant"),
    ],
)
def test_shape_and_constant_errors(att, match):
    with pytest.raises(ValueError, match=match):
        attribute_statistics(att)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_error(bad):
    att = torch.randn(10, 3, dtype=torch.float64)
    att[4, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf .*class 4, attribute 2"):
        attribute_statistics(att)


def test_type_errors():
    with pytest.raises(TypeError, match=r"must be a torch.Tensor .*got ndarray"):
        attribute_statistics(np.ones((10, 3)))
    with pytest.raises(TypeError, match=r"must be real, got dtype torch.complex128"):
        attribute_statistics(torch.randn(10, 3, dtype=torch.complex128))


def test_summary_and_histogram_argument_errors():
    stats = attribute_statistics(_skewed(20, 3, seed=11))
    for alpha in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"alpha must lie strictly between 0 and 1"):
            stats.summary(alpha=alpha)
    for bins in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=r"bins must be a positive integer"):
            stats.histogram(bins=bins)
    for rng in ((1.0, 1.0), (2.0, -2.0), (-math.inf, 1.0)):
        with pytest.raises(ValueError, match=r"range must be finite \(low, high\)"):
            stats.histogram(range=rng)


def test_format_table_missing_key_error():
    summary = attribute_statistics(_skewed(20, 3, seed=12)).summary()
    del summary["pvalue_q3"]
    with pytest.raises(ValueError, match=r"row 'X' lacks keys \['pvalue_q3'\]"):
        format_attribute_table({"X": summary})


# ---------------------------------------------------------------- invariances


def _assert_same(a: AttributeStatistics, b: AttributeStatistics) -> None:
    torch.testing.assert_close(a.normality_chi2, b.normality_chi2, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(a.normality_pvalue, b.normality_pvalue, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(a.abs_correlations, b.abs_correlations, rtol=1e-9, atol=1e-10)
    assert a.constant_attributes == b.constant_attributes


@given(seed=st.integers(0, 2**31 - 1), c=st.integers(8, 48), d=st.integers(2, 6),
       log_scale=st.lists(st.floats(-2.0, 2.0), min_size=6, max_size=6),
       shift=st.lists(st.floats(-5.0, 5.0), min_size=6, max_size=6))
def test_invariant_to_positive_affine_maps_and_class_permutations(seed, c, d, log_scale, shift):
    att = _skewed(c, d, seed=seed)
    stats = attribute_statistics(att)
    a = torch.tensor(log_scale[:d], dtype=torch.float64).exp()  # a > 0, per attribute
    b = torch.tensor(shift[:d], dtype=torch.float64)
    mapped = attribute_statistics(att * a + b)
    _assert_same(stats, mapped)
    torch.testing.assert_close(mapped.standardized_values, stats.standardized_values,
                               rtol=1e-9, atol=1e-9)

    perm = torch.randperm(c, generator=torch.Generator().manual_seed(seed))
    permuted = attribute_statistics(att[perm])
    _assert_same(stats, permuted)
    torch.testing.assert_close(permuted.standardized_values.reshape(c, -1),
                               stats.standardized_values.reshape(c, -1)[perm],
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- real data (claim V3)


@pytest.mark.parametrize("name", ["AWA2", "CUB", "SUN"])
def test_real_attributes_are_not_gaussian_and_correlated(name):
    path = GBU_ROOT / name / "att_splits.mat"
    if not path.is_file():
        pytest.skip(f"real GBU attributes not available: {path} is missing")
    att = read_att_splits(path).attributes  # [C, d_a]
    summary = attribute_statistics(att).summary()
    print(name, {k: f"{v:.4g}" for k, v in summary.items()})
    assert summary["num_classes"] == att.shape[0]
    # docs/science.md section 4.3 (V3): normality rejected per attribute; median |corr| about 0.09-0.17.
    assert summary["rejected_fraction"] > 0.5
    assert 0.05 <= summary["abs_corr_median"] <= 0.30


def test_histogram_defaults_and_a_single_bin():
    """Defaults 50 bins over (-4, 4); one bin (documented ``>= 1``) counts everything in range."""
    stats = attribute_statistics(_skewed(30, 4, seed=12))
    counts, edges = stats.histogram()
    assert counts.shape == (50,) and edges[0] == -4.0 and edges[-1] == 4.0
    one, one_edges = stats.histogram(bins=1, range=(-100, 100))
    assert one.tolist() == [30 * 4] and one_edges.tolist() == [-100.0, 100.0]


def test_format_attribute_table_exact_layout():
    """The header's exact words, two spaces between columns, the name column left-aligned
    (an empty name keeps its padding), numbers right-aligned; ``constant_attributes`` is not
    required.  Widths by hand: 9 ("long-name"), 7, 10, 20 (header), 27 (p-values), 8, 22 (header)."""
    row = {"num_classes": 50, "num_attributes": 85, "chi2_median": 12.34, "chi2_q1": 1.0, "chi2_q3": 100.0,
           "pvalue_median": 1e-5, "pvalue_q1": 1e-100, "pvalue_q3": 0.5, "rejected_fraction": 0.25,
           "abs_corr_median": 0.1234, "abs_corr_q1": 0.05, "abs_corr_q3": 0.5}
    lines = format_attribute_table({"a": row, "long-name": row, "": row}).splitlines()
    gap = "  "
    assert lines[0] == gap.join(["dataset  ", "classes", "attributes", "median chi2 [q1, q3]",
                                 "    median p-value [q1, q3]", "rejected", "median |corr| [q1, q3]"])
    assert lines[1] == gap.join("-" * w for w in (9, 7, 10, 20, 27, 8, 22))
    numbers = gap.join(["     50", "        85", "   12.3 [1.0, 100.0]", "1.0e-05 [1.0e-100, 5.0e-01]",
                        "    0.25", "  0.123 [0.050, 0.500]"])
    assert lines[2] == "a        " + gap + numbers
    assert lines[3] == "long-name" + gap + numbers
    assert lines[4] == " " * 9 + gap + numbers


def test_float32_attributes_are_analysed_in_float64():
    """The statistics of float32 attributes are those of the same values in float64."""
    att = _skewed(40, 6, seed=9).float()
    a, b = attribute_statistics(att), attribute_statistics(att.double())
    assert torch.equal(a.normality_chi2, b.normality_chi2) and a.normality_chi2.dtype == torch.float64
    assert torch.equal(a.abs_correlations, b.abs_correlations)
    assert torch.equal(a.standardized_values, b.standardized_values)
