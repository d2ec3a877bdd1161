"""Claim V3: class attributes are neither standardized, nor Gaussian, nor uncorrelated.

docs/science.md section 4.3, V3: before the last layer of a deep attribute embedder, E||h_c||²
depends on the distribution of the attributes **across classes** (the class axis is the
embedder's batch axis), and real attribute matrices are far from the standardized,
Gaussian, uncorrelated batch that fan-in/fan-out inits assume. This module measures that
distribution for a class-attribute matrix ``att`` [C, d_a] (one row per class: the GBU
``att`` transposed, as :func:`analysis.gbu.read_att_splits` returns it).

All statistics are taken down the class axis, per attribute j (column ``a_{:,j}``):

* standardization, biased std (the one class standardization S uses)::

      μ_j = (1/C) Σ_c a_cj,   σ_j² = (1/C) Σ_c (a_cj - μ_j)²,   z_cj = (a_cj - μ_j) / σ_j

* D'Agostino-Pearson normality test (``scipy.stats.normaltest(att, axis=0)``), with
  the sample skewness g1 = m3 / m2^{3/2} and kurtosis g2 = m4 / m2² - 3 (m_k the k-th
  central moment)::

      K²_j = Z_skew(g1)² + Z_kurt(g2)²,   p_j = P[χ²_2 > K²_j] = exp(-K²_j / 2)

  where Z_skew, Z_kurt are D'Agostino's and Anscombe-Glynn's normalizing transforms
  (``scipy.stats.skewtest`` / ``kurtosistest``); under normality K² ~ χ²_2 and p is
  uniform on [0, 1];

* Pearson correlation between attributes j < k, reported in absolute value::

      r_jk = (1/C) Σ_c z_cj z_ck = G_jk / sqrt(G_jj G_kk),   G = zᵀ z

Constant attributes (equal in every class, up to float64 round-off: scipy's own
criterion, ``max_c |a_cj - μ_j| <= 10 eps |μ_j|``) have σ_j = 0, no correlation and no
normality statistic: they are excluded from the correlations and standardized values,
reported as NaN in the per-attribute normality vectors, and counted.

Sample size: the skewness test needs C >= 8 (scipy returns NaN below), so fewer than 8
classes are refused. For 8 <= C < 20 the kurtosis transform is an approximation whose
accuracy scipy < 1.14 warns about ("kurtosistest only valid for n>=20"); that one warning
is silenced locally, and such p-values are less reliable (the summary still reports
them, the ``num_classes`` field tells the reader). Real GBU matrices have C >= 32.

Example (relations, not pinned numbers)::

    stats = attribute_statistics(att)                  # att [C, d_a]
    s = stats.summary()
    s["chi2_q1"] <= s["chi2_median"] <= s["chi2_q3"]    # True
    0.0 <= s["rejected_fraction"] <= 1.0                # True
    stats.abs_correlations.numel() == d * (d - 1) // 2  # d = d_a - constant_attributes
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch
from torch import Tensor

__all__ = ["AttributeStatistics", "attribute_statistics", "format_attribute_table"]

MIN_CLASSES = 8  # scipy.stats.skewtest is undefined (NaN) below 8 samples
_CONSTANT_RTOL = 10 * float(np.finfo(np.float64).eps)  # scipy's catastrophic-cancellation test

_SUMMARY_KEYS: tuple[str, ...] = (
    "chi2_median", "chi2_q1", "chi2_q3",
    "pvalue_median", "pvalue_q1", "pvalue_q3",
    "abs_corr_median", "abs_corr_q1", "abs_corr_q3",
    "rejected_fraction", "num_classes", "num_attributes", "constant_attributes",
)


@dataclass(frozen=True)
class AttributeStatistics:
    """Per-attribute statistics of a class-attribute matrix [C, d_a], all float64.

    ``d`` below is ``d_a - constant_attributes``, the number of non-constant attributes.

    Args:
        normality_chi2: ``[d_a]`` D'Agostino-Pearson K² of each attribute across the C
            classes; NaN for constant attributes.
        normality_pvalue: ``[d_a]`` its p-value ``exp(-K²/2)``; NaN for constant attributes.
        abs_correlations: ``[d (d-1)/2]`` |r_jk| for the non-constant attributes j < k, in
            row-major upper-triangle order (``torch.triu_indices(d, d, 1)``); NaN-free.
        standardized_values: ``[C * d]`` every z_cj of the non-constant attributes, the
            ``[C, d]`` matrix flattened row by row (reshape to ``(C, -1)`` to recover it).
        constant_mask: ``[d_a]`` bool, True where the attribute is constant across classes.
        constant_attributes: the number of constant attributes, ``constant_mask.sum()``.
        num_classes: C.
        num_attributes: d_a, constant attributes included.
    """

    normality_chi2: Tensor
    normality_pvalue: Tensor
    abs_correlations: Tensor
    standardized_values: Tensor
    constant_mask: Tensor  # kept beside the count so the NaN entries above can be explained
    constant_attributes: int
    num_classes: int
    num_attributes: int

    def summary(self, alpha: float = 0.05) -> dict[str, float]:
        """Medians and quartiles of K², p-value and |r|, and the rejected fraction.

        Quartiles are ``numpy.quantile`` (linear interpolation) at 0.25 / 0.5 / 0.75 over
        the non-constant attributes (K², p) and the attribute pairs (|r|); the |r| entries
        are NaN when fewer than two attributes vary (no pair)::

            rejected_fraction = #{j non-constant : p_j < alpha} / d

        Args:
            alpha: the test level, in (0, 1); the default 0.05 is the conventional one.

        Returns:
            ``{"chi2_median", "chi2_q1", "chi2_q3", "pvalue_median", "pvalue_q1",
            "pvalue_q3", "abs_corr_median", "abs_corr_q1", "abs_corr_q3",
            "rejected_fraction", "num_classes", "num_attributes", "constant_attributes"}``,
            all floats (the counts are whole numbers).

        Raises:
            ValueError: ``alpha`` not strictly between 0 and 1.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}; "
                             f"use a test level such as 0.05")
        varying = ~self.constant_mask
        chi2 = self.normality_chi2[varying].numpy()
        pvalue = self.normality_pvalue[varying].numpy()
        out: dict[str, float] = {}
        for name, values in (("chi2", chi2), ("pvalue", pvalue),
                             ("abs_corr", self.abs_correlations.numpy())):
            q1, median, q3 = _quartiles(values)
            out.update({f"{name}_median": median, f"{name}_q1": q1, f"{name}_q3": q3})
        out["rejected_fraction"] = float(np.mean(pvalue < alpha))
        out["num_classes"] = float(self.num_classes)
        out["num_attributes"] = float(self.num_attributes)
        out["constant_attributes"] = float(self.constant_attributes)
        return out

    def histogram(self, bins: int = 50,
                  range: tuple[float, float] = (-4.0, 4.0)) -> tuple[Tensor, Tensor]:
        """Histogram of the standardized values z_cj (the data of the V3 figure).

        ``bins`` equal-width bins over ``range``; the last bin is closed, values outside
        ``range`` are not counted (so ``counts.sum()`` may be below ``C * d``). For a
        standard normal reference curve, the expected count in a bin [e_i, e_{i+1}) is
        ``C d (Φ(e_{i+1}) - Φ(e_i))``.

        Args:
            bins: number of bins, >= 1.
            range: ``(low, high)``, finite with ``low < high``; in units of σ_j.

        Returns:
            ``(counts, edges)``: int64 ``[bins]`` and float64 ``[bins + 1]``.

        Raises:
            ValueError: ``bins`` < 1, or ``range`` not finite with ``low < high``.
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}; e.g. bins=50")
        low, high = (float(v) for v in range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"range must be finite (low, high) with low < high, got {range!r}; "
                             f"e.g. range=(-4, 4)")
        counts, edges = torch.histogram(self.standardized_values, bins=bins, range=(low, high))
        return counts.round().to(torch.int64), edges


def _quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """(q1, median, q3) by ``numpy.quantile``; NaNs when ``values`` is empty."""
    if values.size == 0:
        return math.nan, math.nan, math.nan
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return float(q1), float(median), float(q3)


_PAIR_CHUNK = 1 << 22  # products held at once in _abs_upper_correlations (32 MiB of float64)


def _standardize_rows(x_t: np.ndarray) -> np.ndarray:
    """z = (x - μ) / σ along each row of ``x_t`` [d, C] (biased σ), as a C-ordered copy.

    Each attribute is a contiguous row, reduced by the same pairwise-summation kernel
    whatever its position, so identical attributes give bitwise identical rows (column
    reductions of a [C, d] matrix are vectorized across columns and may differ in the
    last bits from one column to the next).
    """
    x_t = np.ascontiguousarray(x_t)  # [d, C]
    centered = x_t - x_t.mean(axis=1, keepdims=True)
    return centered / np.sqrt((centered * centered).mean(axis=1, keepdims=True))


def _abs_upper_correlations(z_t: np.ndarray) -> Tensor:
    """|r_jk| = |G_jk| / sqrt(G_jj G_kk) for j < k, G_jk = Σ_c z_jc z_kc, rows of ``z_t`` [d, C].

    Every G entry, the diagonal included, is one row sum of elementwise products, so for
    identical rows G_jk = G_jj = G_kk bitwise and, as sqrt(fl(x²)) = |x| in binary floating
    point, |r_jk| = 1 exactly (a BLAS ``zᵀ z`` computes diagonal and off-diagonal blocks
    differently). Pairs are processed in chunks to bound memory at large d.
    """
    d, num_classes = z_t.shape
    gram_diag = (z_t * z_t).sum(axis=1)  # [d]
    rows, cols = np.triu_indices(d, k=1)  # row-major upper triangle, [P] each
    out = np.empty(rows.size)
    step = max(1, _PAIR_CHUNK // max(num_classes, 1))
    for start in range(0, rows.size, step):
        j, k = rows[start:start + step], cols[start:start + step]
        gram = (z_t[j] * z_t[k]).sum(axis=1)  # [chunk]
        out[start:start + step] = np.abs(gram) / np.sqrt(gram_diag[j] * gram_diag[k])
    return torch.from_numpy(np.minimum(out, 1.0))  # Cauchy-Schwarz; round-off may pass 1


def _check_att(att: Tensor) -> np.ndarray:
    """Validate ``att`` and return it as a float64 numpy array [C, d_a]."""
    if not isinstance(att, Tensor):
        raise TypeError(f"att must be a torch.Tensor [C, d_a], got {type(att).__name__}; "
                        f"wrap it with torch.as_tensor")
    if att.is_complex():
        raise TypeError(f"att must be real, got dtype {att.dtype}; pass the real attributes")
    if att.dim() != 2:
        raise ValueError(f"att must be 2-D [C, d_a] (one row per class), got shape "
                         f"{tuple(att.shape)}; GBU's att is [d_a, C]: transpose it, or use "
                         f"analysis.gbu.read_att_splits")
    num_classes, num_attributes = att.shape
    if num_classes < MIN_CLASSES:
        raise ValueError(f"att has C = {num_classes} classes (rows) but the D'Agostino-Pearson "
                         f"test needs C >= {MIN_CLASSES}; pass more classes, and check that "
                         f"att is [C, d_a], not [d_a, C]")
    if num_attributes == 0:
        raise ValueError(f"att has no attributes (shape {tuple(att.shape)}); pass a matrix "
                         f"with at least one column")
    values = att.detach().cpu().to(torch.float64).numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"att contains {int(bad.sum())} NaN or inf values (first at class "
                         f"{row}, attribute {col}, value {values[row, col]}); clean or impute "
                         f"them before computing statistics")
    return values


def attribute_statistics(att: Tensor) -> AttributeStatistics:
    """Normality, correlation and standardized values of ``att`` [C, d_a] across classes.

    Computed in float64 (module docstring for the formulas)::

        K²_j, p_j = scipy.stats.normaltest(att[:, j])           j = 1..d_a
        z_cj = (a_cj - μ_j) / σ_j                               σ_j biased
        |r_jk| = |G_jk| / sqrt(G_jj G_kk),  G = zᵀ z,           j < k non-constant

    (G_jj = C up to round-off; dividing by sqrt(G_jj G_kk) makes identical attributes
    correlate exactly 1.)

    Args:
        att: ``[C, d_a]`` class attributes, one row per class (any real dtype, any device);
            C >= 8. For 8 <= C < 20 the p-values rest on a less accurate kurtosis
            approximation (module docstring).

    Returns:
        The :class:`AttributeStatistics` (CPU float64 tensors).

    Raises:
        TypeError: ``att`` is not a real torch tensor.
        ValueError: ``att`` is not 2-D, has fewer than 8 rows (classes) or no column,
            holds NaN or inf, or every attribute is constant across classes.
    """
    values = _check_att(att)
    num_classes, num_attributes = values.shape
    # The same mean and cancellation test scipy's moment code uses, so no column we pass on
    # can trigger its "catastrophic cancellation" RuntimeWarning (an error under pytest).
    mean = np.mean(values, axis=0, keepdims=True)  # [1, d_a]
    spread = np.max(np.abs(values - mean), axis=0)  # [d_a]
    constant = spread <= _CONSTANT_RTOL * np.abs(mean[0])  # [d_a]
    if constant.all():
        raise ValueError(f"all {num_attributes} attributes of att are constant across the "
                         f"{num_classes} classes: nothing varies, so there is no distribution "
                         f"to describe; check that att is [C, d_a] with distinct classes")
    # C order, as the caller's rows: numpy's axis-0 sums then run in the same order as in
    # scipy.stats.normaltest(att, axis=0) (a boolean column selection alone is F-ordered).
    varying = np.ascontiguousarray(values[:, ~constant])  # [C, d]
    with warnings.catch_warnings():
        # scipy < 1.14 warns for 8 <= n < 20; documented above, and only that warning is muted.
        warnings.filterwarnings("ignore", message="kurtosistest only valid for n>=20",
                                category=UserWarning)
        test = scipy.stats.normaltest(varying, axis=0)
    chi2 = np.full(num_attributes, np.nan)
    pvalue = np.full(num_attributes, np.nan)
    chi2[~constant], pvalue[~constant] = test.statistic, test.pvalue

    z_t = _standardize_rows(varying.T)  # [d, C]
    abs_corr = _abs_upper_correlations(z_t)  # [d (d-1)/2]

    return AttributeStatistics(
        normality_chi2=torch.from_numpy(chi2),
        normality_pvalue=torch.from_numpy(pvalue),
        abs_correlations=abs_corr,
        standardized_values=torch.from_numpy(z_t.T.reshape(-1)),  # [C, d] flattened row-major
        constant_mask=torch.from_numpy(constant),
        constant_attributes=int(constant.sum()),
        num_classes=int(num_classes),
        num_attributes=int(num_attributes),
    )


def format_attribute_table(rows: dict[str, dict[str, float]]) -> str:
    """A fixed-width plain-text table of :meth:`AttributeStatistics.summary` rows.

    One line per data set, columns: name, classes, attributes, median χ² [q1, q3],
    median p-value [q1, q3] (scientific: real p-values reach 1e-100), rejected fraction,
    median |corr| [q1, q3]. Text columns are left-aligned, numbers right-aligned.

    Args:
        rows: data set name -> its ``summary()`` dict (extra keys are ignored).

    Returns:
        The table, header and rule included, lines joined by ``"\\n"``.

    Raises:
        ValueError: a row lacks one of the summary keys the table shows.
    """
    needed = [k for k in _SUMMARY_KEYS if k != "constant_attributes"]
    header = ["dataset", "classes", "attributes", "median chi2 [q1, q3]",
              "median p-value [q1, q3]", "rejected", "median |corr| [q1, q3]"]
    lines = [header]
    for name, s in rows.items():
        missing = [k for k in needed if k not in s]
        if missing:
            raise ValueError(f"row {name!r} lacks keys {missing}; pass the dict returned by "
                             f"AttributeStatistics.summary()")
        lines.append([
            str(name),
            f"{s['num_classes']:.0f}",
            f"{s['num_attributes']:.0f}",
            f"{s['chi2_median']:.1f} [{s['chi2_q1']:.1f}, {s['chi2_q3']:.1f}]",
            f"{s['pvalue_median']:.1e} [{s['pvalue_q1']:.1e}, {s['pvalue_q3']:.1e}]",
            f"{s['rejected_fraction']:.2f}",
            f"{s['abs_corr_median']:.3f} [{s['abs_corr_q1']:.3f}, {s['abs_corr_q3']:.3f}]",
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines[1:])])
