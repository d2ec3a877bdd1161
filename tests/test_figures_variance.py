"""Figures of the variance claims: variance_vs_depth (V2-V4), normalize_scale (V1),
attribute_statistics (V3), each computed on a tiny budget and drawn; the cached numbers
must satisfy the relations the claims state (tolerances from their standard errors)."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest

from analysis.gbu import read_att_splits
from analysis.io import ENVELOPE_KEYS  # the frame write_json adds to every JSON output
from figures import attribute_statistics, normalize_scale, variance_vs_depth
from figures.context import DataChoice, FigureContext
from tests.conftest import GBU_ROOT, real_att_splits
from variance.attribute_statistics import attribute_statistics as measure_attributes

K_SIGMA = 4.5  # standard errors allowed (STYLE.md: k about 4-5)


def _context(tmp_path, module, datasets, **budget):
    return FigureContext(out=tmp_path, fast=True, only_datasets=datasets, progress=False, seeds=(1, 2),
                         extra={module.NAME: budget})


def _check_outputs(ctx, module):
    """compute() wrote only the cache; plot() wrote a plausible PNG and a PDF."""
    cache = ctx.cache_path(module.NAME)
    assert sorted(p.name for p in ctx.out.rglob("*") if p.is_file()) == [cache.name]
    paths = module.plot(ctx)
    png, pdf = ctx.figure_paths(module.NAME)
    assert paths == [png, pdf] and pdf.stat().st_size > 1000
    height, width, channels = matplotlib.image.imread(png).shape
    assert 500 <= width <= 3000 and 300 <= height <= 2000 and channels in (3, 4)


def _all_finite(values):
    return bool(np.isfinite(np.asarray(values, dtype=float)).all())


def test_variance_vs_depth_matches_v2_v3_v4_and_is_drawn(tmp_path):
    ctx = _context(tmp_path, variance_vs_depth, ("APY",), max_depth=2, width=32, num_inits=100, num_features=8,
                   train_depth=1, train_epochs=1, record_every=6, num_train_seeds=2)
    path = variance_vs_depth.compute(ctx)
    assert path == ctx.cache_path(variance_vs_depth.NAME)
    cache = json.loads(path.read_text())
    assert set(cache) - set(ENVELOPE_KEYS) == {"datasets", "training", "settings", "provenance"}
    assert cache["provenance"]["datasets"] == [{"name": "APY", "source": "synthetic"}]
    assert cache["provenance"]["settings"]["num_inits"] == 100
    entry = cache["datasets"]["APY"]
    d_z, m_z = entry["feature_dim"], entry["feature_norm_sq"]
    assert entry["linear"]["depths"] == [0] and entry["cn"]["depths"] == entry["no_cn"]["depths"] == [1, 2]
    for model in ("linear", "no_cn", "cn"):
        series = entry[model]
        for quantity in ("prototype", "logit"):
            values, stderr = series[quantity]["value"], series[quantity]["stderr"]
            assert len(values) == len(stderr) == len(series["depths"]) and _all_finite(values + stderr)
            for v, se, predicted in zip(values, stderr, series[f"predicted_{quantity}"]):
                assert 0 < se and abs(v - predicted) <= K_SIGMA * se, (model, quantity, v, se, predicted)
    # V2 and V4: 1/d_z exactly; V3: 6^-L / d_z (bias-free, PyTorch hidden init)
    assert entry["linear"]["predicted_prototype"] == [pytest.approx(1 / d_z, rel=1e-6)]
    assert entry["cn"]["predicted_prototype"] == [pytest.approx(1 / d_z, rel=1e-12)] * 2
    assert entry["no_cn"]["predicted_prototype"] == [pytest.approx(6.0**-depth / d_z, rel=1e-6) for depth in (1, 2)]
    assert entry["no_cn"]["predicted_logit"][-1] == pytest.approx(m_z * entry["no_cn"]["predicted_prototype"][-1])
    # the message of the figure: CN keeps the linear value at depth, without CN it collapses
    linear = entry["linear"]["prototype"]["value"][0]
    assert 0.8 < entry["cn"]["prototype"]["value"][-1] / linear < 1.25
    assert entry["no_cn"]["prototype"]["value"][-1] / linear < 0.1

    training = cache["training"]
    assert training["dataset"] == "APY" and training["seeds"] == [1, 2]
    steps = training["steps"]
    assert steps[:2] == [0, 1] and np.all(np.diff(steps[1:]) == 6)
    for model in ("no_cn", "cn"):
        for quantity in ("prototype", "logit"):
            curve = training[model][quantity]
            assert len(curve["value"]) == len(curve["stderr"]) == len(steps)
            assert _all_finite(curve["value"] + curve["stderr"]) and min(curve["value"]) > 0
    # before the first step (one init per seed): CN near 1/d_z, no CN near 1/(6 d_z)
    assert training["cn"]["prototype"]["value"][0] > 2 * training["no_cn"]["prototype"]["value"][0]
    _check_outputs(ctx, variance_vs_depth)


def test_normalize_scale_matches_v1_and_is_drawn(tmp_path):
    dims = (3, 32, 1024)
    ctx = _context(tmp_path, normalize_scale, ("APY",), dims=dims, num_pairs=4000,
                   distributions=("gaussian", "rademacher"), num_batches=4, batch_size=16, width=16)
    cache = json.loads(normalize_scale.compute(ctx).read_text())
    assert set(cache) - set(ENVELOPE_KEYS) == {"gamma", "against_dimension", "datasets", "provenance"}
    part = cache["against_dimension"]
    assert part["dims"] == list(dims)
    assert part["exact_std"] == [math.sqrt(1 / d) for d in dims]  # the exact formula, bit for bit
    assert part["paper_std"] == [pytest.approx(math.sqrt(d) / (d - 2), rel=1e-12) for d in dims]
    assert set(part["monte_carlo"]) == {"gaussian", "rademacher"}
    for law, mc in part["monte_carlo"].items():
        for d, v, se, std, std_se in zip(dims, mc["variance"]["value"], mc["variance"]["stderr"],
                                         mc["std"]["value"], mc["std"]["stderr"]):
            assert abs(v - 1 / d) <= K_SIGMA * se, (law, d, v, se)  # exact: no bias allowed
            assert std == pytest.approx(math.sqrt(v)) and std_se == pytest.approx(se / (2 * std))

    entry = cache["datasets"]["APY"]
    assert entry["features"] == "synthetic" and entry["batch_size"] == 16
    assert cache["provenance"]["datasets"] == [{"name": "APY", "source": "synthetic"}]
    for key in ("images_vs_prototypes", "images_vs_images"):
        spread = entry[key]
        assert len(spread["std_per_batch"]) == len(spread["mean_per_batch"]) == 4
        assert _all_finite(spread["std_per_batch"]) and 0 < min(spread["std_per_batch"]) < 1
        # non-negative features and ReLU prototypes: every cosine lies in [0, 1]
        assert 0 <= min(spread["mean_per_batch"]) and max(spread["mean_per_batch"]) <= 1
        pooled = spread["variance"]["value"]
        assert pooled == pytest.approx(np.mean(np.square(spread["std_per_batch"])), rel=1e-12)
    _check_outputs(ctx, normalize_scale)


def test_attribute_statistics_is_drawn_from_synthetic_attributes(tmp_path):
    ctx = _context(tmp_path, attribute_statistics, ("APY", "CUB"), bins=20, z_range=(-3, 5))
    cache = json.loads(attribute_statistics.compute(ctx).read_text())
    assert set(cache) - set(ENVELOPE_KEYS) == {"datasets", "histogram_datasets", "percentiles", "provenance"}
    assert cache["histogram_datasets"] == ["CUB", "APY"]  # no SUN/AWA2 pair: the first two
    for name, dims in (("CUB", (200, 312)), ("APY", (32, 64))):
        entry = cache["datasets"][name]
        s = entry["summary"]
        assert (s["num_classes"], s["num_attributes"]) == dims and entry["source"] == "synthetic"
        d = dims[1] - int(s["constant_attributes"])
        assert len(entry["chi2"]) == len(entry["log10_pvalue"]) == d
        # the stored log10 p is the test's p = exp(-K^2/2), without underflow
        assert np.allclose(entry["log10_pvalue"], -np.asarray(entry["chi2"]) / (2 * math.log(10)), rtol=1e-12)
        assert np.median(entry["chi2"]) == pytest.approx(s["chi2_median"], rel=1e-12)
        pct = entry["abs_corr_percentiles"]
        assert len(pct) == 101 and np.all(np.diff(pct) >= 0) and 0 <= pct[0] and pct[-1] <= 1
        assert pct[50] == pytest.approx(s["abs_corr_median"], rel=1e-12)
        hist = entry["histogram"]
        assert len(hist["counts"]) == 20 and len(hist["edges"]) == 21
        assert sum(hist["counts"]) + hist["below"] + hist["above"] == hist["total"] == dims[0] * d
    _check_outputs(ctx, attribute_statistics)


def test_attribute_statistics_on_real_awa2_attributes(tmp_path):
    path = real_att_splits("AWA2")
    ctx = FigureContext(out=tmp_path, data_root=GBU_ROOT, only_datasets=("AWA2",), progress=False, fast=True)
    cache = json.loads(attribute_statistics.compute(ctx).read_text())
    entry = cache["datasets"]["AWA2"]
    assert entry["source"] == "real attributes"
    assert cache["provenance"]["datasets"] == [{"name": "AWA2", "source": "real attributes, synthetic features"}]
    assert entry["summary"]["num_attributes"] == 85 and entry["summary"]["num_classes"] == 50
    direct = measure_attributes(read_att_splits(path).attributes).summary()
    assert entry["summary"]["abs_corr_median"] == direct["abs_corr_median"]
    assert entry["abs_corr_percentiles"][50] == pytest.approx(direct["abs_corr_median"], rel=1e-12)
    assert 0.05 <= direct["abs_corr_median"] <= 0.30  # docs/science.md section 4.3 (V3): about 0.09-0.17
    assert entry["summary"]["rejected_fraction"] > 0.5
    assert "histogram" in entry  # AWA2 is one of the two histogram data sets
    attribute_statistics.plot(ctx)
    assert ctx.figure_paths(attribute_statistics.NAME)[0].is_file()


def test_histogram_datasets_prefers_sun_and_awa2():
    choices = [DataChoice(n, None, False, False) for n in ("AWA1", "AWA2", "CUB", "SUN")]
    assert attribute_statistics.histogram_datasets(choices) == ["SUN", "AWA2"]
    assert attribute_statistics.histogram_datasets(choices[:1]) == ["AWA1"]


MODULES = (variance_vs_depth, normalize_scale, attribute_statistics)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_plot_without_cache_says_compute_it_first(tmp_path, module):
    with pytest.raises(FileNotFoundError, match="compute it first"):
        module.plot(FigureContext(out=tmp_path))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_unknown_budget_entries_are_refused(tmp_path, module):
    ctx = FigureContext(out=tmp_path, extra={module.NAME: {"num_iterations": 3}})
    with pytest.raises(ValueError, match=rf"unknown budget entry \['num_iterations'\] in ctx.extra\['{module.NAME}'\]"):
        module.budget(ctx)


@pytest.mark.parametrize(("module", "entry", "match"), [
    (variance_vs_depth, {"num_inits": 1}, "num_inits >= 2"),
    (variance_vs_depth, {"width": 0}, "width must be an integer >= 1"),
    (normalize_scale, {"dims": (2, 64)}, "dims must be integers >= 3"),
    (normalize_scale, {"distributions": ("cauchy",)}, "distributions must be among"),
    (normalize_scale, {"num_batches": 1}, "num_batches, batch_size >= 2"),
    (attribute_statistics, {"z_range": (2, 1)}, "low < high"),
    (attribute_statistics, {"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
])
def test_bad_budget_values_are_refused(tmp_path, module, entry, match):
    with pytest.raises(ValueError, match=match):
        module.budget(FigureContext(out=tmp_path, extra={module.NAME: entry}))


def test_fast_budgets_are_smaller_than_full_ones(tmp_path):
    full, fast = FigureContext(out=tmp_path), FigureContext(out=tmp_path, fast=True)
    assert variance_vs_depth.budget(fast).num_inits < variance_vs_depth.budget(full).num_inits
    assert normalize_scale.budget(fast).num_pairs < normalize_scale.budget(full).num_pairs
    assert normalize_scale.budget(full).dims[0] == 32 and normalize_scale.budget(full).dims[-1] == 8192
