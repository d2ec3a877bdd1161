"""Rows of ``cnzsl variance`` by kind (variance/report.py), and the new rows that can fail for
the paper's reasons: V1 at small d, V3's share across classes, V4 along training.

Every new ``claim`` row must fail when its prediction is off by 5 % (issue 15): each test
rebuilds the row's check with the prediction times 1.05 (and 0.95) on the same measurement."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from analysis.estimate import Estimate
from analysis.gbu import read_att_splits
from analysis.model import EmbedderConfig
from analysis.normalization import normalize_attributes
from tests.conftest import real_att_splits
from variance.class_variance_share import (
    arccos_kernel_gram,
    check_v3_share,
    iid_attributes,
    predicted_class_variance_share,
)
from variance.estimate import bound_check, check, observation
from variance.normalize_scale import (
    check_v1_discriminating,
    exact_isotropic_cosine_variance,
    num_pairs_to_resolve,
    predicted_cosine_variance,
)
from variance.report import ClaimRow, format_summary, format_variance_table, summarize_kinds, training_rows
from variance.training_variance import TrainingTrace, check_v4_training

K = 4.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_resolves_five_percent(row) -> None:
    for factor in (1.05, 0.95):
        perturbed = row.with_prediction(factor * row.predicted)
        assert not perturbed.passed, (factor, perturbed)


# --------------------------------------------------------------------------- kinds and summary


def _row(kind: str, verdict_ok: bool) -> ClaimRow:
    est = Estimate(1.0, 0.1, 10)
    if kind == "observation":
        return ClaimRow("X", "synthetic", observation("V1", "obs", est, 0.5), kind)
    predicted = 1.0 if verdict_ok == (kind != "expected-failure") else 3.0
    return ClaimRow("X", "synthetic", check("V1", "row", predicted, est), kind)


def test_summary_counts_each_kind_separately_by_hand() -> None:
    rows = ([_row("claim", True)] * 3 + [_row("claim", False)] + [_row("identity", True)] * 2
            + [_row("expected-failure", True)] * 4 + [_row("expected-failure", False)] + [_row("observation", True)] * 2)
    counts = summarize_kinds(rows)
    assert counts == {"claim": {"rows": 4, "as_expected": 3}, "identity": {"rows": 2, "as_expected": 2},
                      "expected-failure": {"rows": 5, "as_expected": 4},
                      "observation": {"rows": 2, "as_expected": 0}}
    assert format_summary(rows) == ("claims 3/4 pass, identities 2/2 hold, expected failures 4/5 fail as "
                                    "predicted, observations 2")
    assert [r.confirmed for r in rows[:4]] == [True, True, True, False]
    assert rows[-1].confirmed is None and rows[-1].expected == "observed"
    table = format_variance_table(rows)
    assert "fail = claim confirmed" in table and "observed" in table and "(ref 0.5)" in table
    assert "claim confirmed" not in table.splitlines()[-1]  # an observation confirms nothing


def test_unknown_kind_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"unknown row kind 'fact'; choose one of \('claim', 'identity'"):
        ClaimRow("X", "synthetic", check("V1", "row", 1.0, Estimate(1.0, 0.1, 10)), "fact")


def test_an_observation_has_no_prediction_to_perturb() -> None:
    obs = observation("V1", "real-like", Estimate(2.0, 0.5, 10), 1.0)
    assert obs.verdict == "observed" and obs.z == pytest.approx(2.0)
    with pytest.raises(ValueError, match="an observation has no prediction to replace"):
        obs.with_prediction(1.0)


def test_bound_check_by_hand_and_its_refusals() -> None:
    assert bound_check("V4", "b", 1.0, 0.99).passed
    assert not bound_check("V4", "b", 1.0, 1.01).passed
    assert bound_check("V4", "b", 1.0, 1.0 + 1e-7, rtol=1e-6).passed
    assert not bound_check("V4", "b", 1.0, 0.99).with_prediction(0.95).passed
    with pytest.raises(ValueError, match="need rtol >= 0 and a finite bound"):
        bound_check("V4", "b", math.inf, 1.0)


# --------------------------------------------------------------------------- V1 at small d


def test_num_pairs_to_resolve_by_hand_and_refusals() -> None:
    assert num_pairs_to_resolve(0.05) == 80_000
    assert num_pairs_to_resolve(0.1, separation=5) == 5_000
    with pytest.raises(ValueError, match="relative_gap must be a positive finite number"):
        num_pairs_to_resolve(0.0)


def test_v1_at_d32_tells_the_exact_one_over_d_from_the_papers_formula() -> None:
    row = check_v1_discriminating(32, generator=_gen(0))
    assert row.predicted == exact_isotropic_cosine_variance(32)
    assert row.alternative == predicted_cosine_variance(32)
    assert row.passed and row.supports == "exact 1/d"
    assert abs(row.z) <= K and row.alternative_z < -10  # the paper's value is >= 10 standard errors away
    # the gap is resolved: the standard error is well below it
    assert row.stderr < (row.alternative - row.predicted) / 10
    # swapping the roles: the paper's value as the prediction fails, supporting the exact one
    swapped = check("V1", "swap", row.alternative, Estimate(row.measured, row.stderr, 2), k=K,
                    alternative=row.predicted, labels=("paper", "exact 1/d"))
    assert not swapped.passed and swapped.supports == "exact 1/d"
    _assert_resolves_five_percent(row)


@pytest.mark.parametrize("d", [64, 128])
def test_v1_at_d64_and_d128_still_tells_them_apart(d: int) -> None:
    row = check_v1_discriminating(d, generator=_gen(d))
    assert row.passed and row.supports == "exact 1/d", row
    _assert_resolves_five_percent(row)


def test_v1_at_large_d_does_not_resolve_the_gap_and_says_so() -> None:
    row = check_v1_discriminating(2048, num_pairs=2000, generator=_gen(1))
    assert row.supports == "both (not resolved)" and not row.passed


# --------------------------------------------------------------------------- V3 across classes


def test_arccos_gram_by_hand_for_orthogonal_rows() -> None:
    a = torch.eye(3, dtype=torch.float64)
    g1 = arccos_kernel_gram(a, 1)
    assert torch.allclose(g1.diagonal(), torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.allclose(g1[0, 1], torch.tensor(1 / (2 * math.pi), dtype=torch.float64))
    # share = 1 - (1^T G 1 / K^2) / (tr G / K) = 1 - (3 * 0.5 + 6 / (2 pi)) / 9 / 0.5
    assert predicted_class_variance_share(a, 1) == pytest.approx(1 - (1.5 + 3 / math.pi) / 4.5, rel=1e-12)
    assert predicted_class_variance_share(a, 0) == pytest.approx(1 - 1 / 3, rel=1e-12)
    assert predicted_class_variance_share(3.0 * a, 2) == pytest.approx(predicted_class_variance_share(a, 2))


def test_share_refusals() -> None:
    with pytest.raises(ValueError, match=r"attribute rows \[1\] are zero"):
        arccos_kernel_gram(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        arccos_kernel_gram(torch.eye(2), -1)
    with pytest.raises(ValueError, match="K >= 2 classes"):
        arccos_kernel_gram(torch.ones(1, 3), 1)
    with pytest.raises(ValueError, match="unknown law 'laplace'"):
        iid_attributes(4, 3, "laplace", generator=_gen(0))
    cn = EmbedderConfig(3, 8, hidden_dims=(4,), cn_layers=(-1,), bias=False)
    with pytest.raises(ValueError, match="bias-free deep embedder without CN"):
        check_v3_share(cn, torch.ones(4, 3), generator=_gen(0))


def _share_attributes(name: str) -> tuple[str, torch.Tensor]:
    g = _gen(7)
    if name == "CUB":
        att = read_att_splits(real_att_splits("CUB")).attributes  # skips with the reason if absent
    else:
        att = iid_attributes(200, 312, name, generator=g)
    return name, normalize_attributes(att, "l2_sqrt")


@pytest.mark.parametrize("name", ["CUB", "abs-gaussian", "gaussian"])
def test_v3_share_matches_the_arccos_prediction_and_resolves_five_percent(name: str) -> None:
    label, att = _share_attributes(name)
    config = EmbedderConfig(att.shape[1], 512, hidden_dims=(512,), cn_layers=(), final_init="eq10", bias=False)
    row = check_v3_share(config, att, label=label, num_inits=96, generator=_gen(3))
    assert row.passed, row
    _assert_resolves_five_percent(row)


def test_v3_share_of_real_attributes_is_not_the_iid_one() -> None:
    _, att = _share_attributes("CUB")
    centred = normalize_attributes(iid_attributes(*att.shape, "gaussian", generator=_gen(5)), "l2_sqrt")
    config = EmbedderConfig(att.shape[1], 256, hidden_dims=(128, 128), cn_layers=(), final_init="eq10", bias=False)
    # the i.i.d. (standardized-batch) prediction applied to real attributes: fails, as V3 says
    wrong = check_v3_share(config, att, predicted_from=centred, num_inits=32, generator=_gen(4))
    assert not wrong.passed and wrong.predicted > 1.5 * wrong.measured, wrong  # 0.50 against 0.26


# --------------------------------------------------------------------------- V4 along training


@pytest.fixture(scope="module")
def training() -> list[ClaimRow]:
    return training_rows(seeds=(1, 2), epochs=4, every=4)


def test_v4_training_rows_have_their_kinds_and_verdicts(training: list[ClaimRow]) -> None:
    kinds = [r.kind for r in training]
    assert kinds == ["identity", "expected-failure", "observation", "observation"]
    cn_band, plain_band = training[0].check, training[1].check
    assert cn_band.relation == "<=" and cn_band.passed and cn_band.measured <= 1.0
    assert not plain_band.passed and plain_band.measured > 2.0  # far outside the CN band
    assert all(r.confirmed for r in training[:2])
    assert all(r.check.stderr > 0 for r in training[2:])


def test_v4_band_by_hand_on_a_constructed_trace() -> None:
    import numpy as np

    # d_L = 2, d_z = 4: band [s_min^2 tau / 4, s_max^2 * 2 / 4]
    trace = TrainingTrace(np.array([0, 1]), np.array([0.5, 0.9]), np.array([2.0, 2.0]), np.array([2.0, 2.0]),
                          np.array([1.0, 1.0]), 2, 4, True)
    lower, upper = trace.band()
    assert np.allclose(lower, 0.5) and np.allclose(upper, 2.0)
    assert trace.worst_band_ratio() == pytest.approx(1.0)  # P_0 sits on the lower end
    plain = TrainingTrace(np.array([0, 1]), np.array([0.05, 0.06]), np.array([0.1, 0.1]), np.array([2.0, 2.0]),
                          np.array([1.0, 1.0]), 2, 4, False)
    rows = check_v4_training([trace, trace], [plain, plain])
    assert [c.verdict for c, _ in rows] == ["pass", "fail", "observed", "observed"]
    assert rows[1][0].measured == pytest.approx(0.5 / 0.05)
    with pytest.raises(ValueError, match="need at least 2 traces of each model"):
        check_v4_training([trace], [plain, plain])
    with pytest.raises(ValueError, match="not preceded by class standardization"):
        check_v4_training([plain, plain], [plain, plain])


def test_refusals_of_the_new_rows(tiny_data) -> None:
    from torch import nn

    from analysis.training import TrainConfig
    from variance.class_variance_share import measure_class_variance_share
    from variance.report import variance_report
    from variance.training_variance import LastLayerTrace, trace_last_layer

    config = EmbedderConfig(3, 8, hidden_dims=(4,), cn_layers=(), bias=False)
    with pytest.raises(ValueError, match=r"attributes must be \[K, 3\], got \(4, 2\)"):
        measure_class_variance_share(config, torch.ones(4, 2), generator=_gen(0))
    with pytest.raises(ValueError, match="num_inits must be an integer >= 2"):
        measure_class_variance_share(config, torch.ones(4, 3), num_inits=1, generator=_gen(0))
    with pytest.raises(ValueError, match="need num_classes >= 2 and attribute_dim >= 1"):
        iid_attributes(1, 3, "gaussian", generator=_gen(0))
    with pytest.raises(ValueError, match="nn.Sequential embedder"):
        LastLayerTrace(nn.Linear(3, 4))
    linear = nn.Module()
    linear.embedder = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="at least one hidden layer before V"):
        LastLayerTrace(linear)
    with pytest.raises(ValueError, match="bias-free last layer"):
        trace_last_layer(EmbedderConfig(12, 32, hidden_dims=(8,)), tiny_data, TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="need at least 2 seeds"):
        training_rows(seeds=(1,))
    with pytest.raises(ValueError, match="need num_inits >= 2, width >= 1 and share_depth >= 1"):
        variance_report(tiny_data, num_inits=1)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 12), d_a=st.integers(1, 16), depth=st.integers(0, 4),
       scale=st.floats(1e-3, 1e3))
def test_predicted_share_is_a_fraction_invariant_to_class_order_and_scale(seed, k, d_a, depth, scale) -> None:
    g = _gen(seed)
    att = torch.rand(k, d_a, generator=g, dtype=torch.float64) + 0.1  # non-zero rows
    share = predicted_class_variance_share(att, depth)
    # share = 1 - 1^T G 1 / (K tr G) >= 0 (G is positive semi-definite); positive attributes give
    # G >= 0 entrywise (the arc-cosine map keeps it so), hence 1^T G 1 >= tr G and share <= 1 - 1/K
    assert -1e-12 <= share <= 1 - 1 / k + 1e-12
    perm = torch.randperm(k, generator=g)
    assert predicted_class_variance_share(att[perm], depth) == pytest.approx(share, abs=1e-12)
    assert predicted_class_variance_share(scale * att, depth) == pytest.approx(share, abs=1e-9)


def test_v4_drift_is_last_over_first_and_every_row_names_v4() -> None:
    """The drift observation is ``P_T / P_0`` (the last recorded step over the first, not the
    second), and the band rows state the band they check."""
    import numpy as np

    steps, d_l, d_z = np.array([0, 1, 2]), 2, 4
    cn = TrainingTrace(steps, np.array([0.5, 0.7, 0.9]), np.full(3, 2.0), np.full(3, 2.0), np.full(3, 1.0),
                       d_l, d_z, True)
    plain = TrainingTrace(steps, np.array([0.05, 0.06, 0.2]), np.full(3, 0.1), np.full(3, 2.0), np.full(3, 1.0),
                          d_l, d_z, False)
    rows = [c for c, _ in check_v4_training([cn, cn], [plain, plain])]
    assert [r.claim for r in rows] == ["V4"] * 4
    assert rows[2].measured == pytest.approx(0.9 / 0.5) and rows[3].measured == pytest.approx(0.2 / 0.05)
    assert "sigma_min(V)^2 tau <= d_z P_t <= sigma_max(V)^2 d_L" in rows[0].setting


def test_v3_share_measures_with_its_options_and_predicts_from_what_it_is_given() -> None:
    """The row's measurement is ``measure_class_variance_share`` with the same inits and
    generator; its prediction comes from ``predicted_from`` when given; the label names the
    attributes; the smallest i.i.d. matrices (2 classes, 1 attribute) are accepted."""
    from variance.class_variance_share import measure_class_variance_share

    assert iid_attributes(2, 1, "gaussian", generator=_gen(0)).shape == (2, 1)
    att = normalize_attributes(iid_attributes(6, 5, "abs-gaussian", generator=_gen(1)), "l2_sqrt")
    other = normalize_attributes(iid_attributes(6, 5, "gaussian", generator=_gen(2)), "l2_sqrt")
    config = EmbedderConfig(5, 16, hidden_dims=(8,), cn_layers=(), final_init="eq10", bias=False)
    row = check_v3_share(config, att, label="mine", num_inits=12, generator=_gen(3))
    measured = measure_class_variance_share(config, att, num_inits=12, generator=_gen(3))
    assert (row.measured, row.stderr) == (measured.value, measured.stderr)
    assert row.predicted == predicted_class_variance_share(att, 1) and "mine attributes" in row.setting
    moved = check_v3_share(config, att, predicted_from=other, num_inits=12, generator=_gen(3))
    assert moved.predicted == predicted_class_variance_share(other, 1) != row.predicted
    assert moved.measured == row.measured


def test_variance_report_reports_each_of_its_steps(tiny_data) -> None:
    """``progress`` is called once per step, ``variance_report_steps(depths)`` times, in order."""
    from variance.report import variance_report, variance_report_steps

    labels: list[str] = []
    rows = variance_report(tiny_data, num_inits=2, width=4, depths=(1,), num_pairs=200, num_features=8,
                           generator=_gen(0), progress=labels.append)
    assert len(labels) == variance_report_steps((1,)) == 11
    assert labels[0].startswith("V1 d=") and labels[-1] == "V5"
    assert labels[5:9] == ["V2 AN=l2", "V2 AN=standardize", "V3 depth 1", "V4 depth 1"]
    assert rows


def test_variance_command_has_no_progress_option() -> None:
    from analysis.cli import build_parser

    args = build_parser().parse_args(["variance", "--out", "x", "--no-progress"])
    assert args.no_progress is True
