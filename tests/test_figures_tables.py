"""Smoke tests of the ablation table and the training-time figure on a tiny budget."""

from __future__ import annotations

import csv
import json

import matplotlib.image
import pytest

from analysis.evaluation import evaluate
from analysis.model import preset_config
from analysis.training import TrainConfig, train_model
from figures import ablation_table, training_time
from figures.context import FigureContext
from figures.registry import run_figures


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """Both figures on the smallest synthetic data set (APY), --fast (1 epoch; 3 timed), seeds 1 and 2."""
    ctx = FigureContext(out=tmp_path_factory.mktemp("tables"), fast=True, device="cpu", seeds=(1, 2),
                        only_datasets=("APY",), progress=False)
    summary = run_figures(ctx, ["ablation_table", "training_time"], log=lambda _: None)
    return ctx, summary


def test_ablation_table_rows_are_seed_means_of_real_runs(tables):
    ctx, summary = tables
    cache = json.loads(ctx.cache_path("ablation_table").read_text())
    entry = cache["results"]["APY"]
    assert entry["source"] == "synthetic" and list(entry["rows"]) == list(ablation_table.ROWS)
    for row in entry["rows"].values():
        for key in ablation_table.METRICS:
            values = [s[key] for s in row["per_seed"]]
            assert len(values) == 2 and all(0 <= v <= 100 for v in values)
            assert row["mean"][key] == pytest.approx(sum(values) / 2, abs=1e-12)
            assert row["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-12)
    # the seed-2 CN member is the separate seed-2 run (within one test image per class)
    data = ctx.load(ctx.datasets()[0])
    model, _ = train_model(preset_config("cn", data.attribute_dim, data.feature_dim), data,
                           TrainConfig(epochs=1, seed=2, progress=False, device="cpu"))
    separate = evaluate(model, data).percent()["gzsl_harmonic"]
    assert entry["rows"]["cn"]["per_seed"][1]["gzsl_harmonic"] == pytest.approx(separate, abs=2.0)
    assert cache["provenance"]["settings"] == {"epochs": 1, "max_seeds": 2} and cache["seeds"] == [1, 2]


def test_ablation_table_markdown_csv_and_png(tables):
    ctx, summary = tables
    text = (ctx.out / "ablation_table.md").read_text()
    assert "| dataset | data | model | U | S | H | published U / S / H |" in text
    assert text.count("| APY | synthetic |") == 4 and "only the order of the rows is comparable" in text
    with open(ctx.out / "ablation_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["MLP", "MLP + Eq. 9", "MLP + Eq. 10", "MLP + CN"]
    assert all(r["published U / S / H"] == "-" for r in rows)  # APY is not in the published table
    image = matplotlib.image.imread(ctx.out / "ablation_table.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert (ctx.out / "ablation_table.pdf").read_bytes()[:4] == b"%PDF"
    names = [r["name"] for r in summary["figures"]]
    assert names == ["ablation_table", "training_time"]


def test_published_numbers_are_marked_on_real_data_sets():
    cache = {"results": {"CUB": {"source": "real", "rows": {"cn": {
        "mean": {"gzsl_unseen": 50.0, "gzsl_seen": 51.0, "gzsl_harmonic": 50.5},
        "std": {"gzsl_unseen": 1.0, "gzsl_seen": 0.5, "gzsl_harmonic": 0.25}}}}},
        "published": ablation_table.PUBLISHED, "seeds": [1, 2, 3], "provenance": {"settings": {"epochs": 50}}}
    [row] = ablation_table.table_rows(cache)
    assert row == {"dataset": "CUB", "data": "real", "model": "MLP + CN", "U": "50.0 ± 1.0", "S": "51.0 ± 0.5",
                   "H": "50.5 ± 0.2", "published U / S / H": "49.9 / 50.7 / 50.3"}
    cache["results"]["CUB"]["source"] = "real attributes, synthetic features"  # still a real data set
    assert ablation_table.table_rows(cache)[0]["published U / S / H"] == "49.9 / 50.7 / 50.3"
    cache["results"]["CUB"]["source"] = "synthetic"  # the CUB-shaped preset: nothing to compare with
    assert ablation_table.table_rows(cache)[0]["published U / S / H"] == "-"


def test_training_time_cache_and_figure(tables):
    ctx, _ = tables
    cache = json.loads(ctx.cache_path("training_time").read_text())
    run = cache["runs"]["APY"]
    assert run["epochs"] == 3 and run["extrapolated"] and run["path"] == "plain"
    assert len(run["epoch_seconds"]) == 3 and run["seconds"] >= sum(run["epoch_seconds"]) > 0
    assert run["seconds_per_recipe"] == pytest.approx(50 * sorted(run["epoch_seconds"])[1])  # the median epoch
    assert run["trainval_images"] == ctx.load(ctx.datasets()[0]).trainval.numel()
    assert cache["published_seconds"] == [20.0, 30.0] and cache["device"] == "cpu"
    assert matplotlib.image.imread(ctx.out / "training_time.png").shape[1] > 500


def test_budgets_refuse_bad_entries(tmp_path):
    for module in (ablation_table, training_time):
        with pytest.raises(ValueError, match="budget entry epochs must be a positive integer, got 0"):
            FigureContext(out=tmp_path, extra={module.NAME: {"epochs": 0}}).budget(module.NAME, module.FULL,
                                                                                  module.FAST)
        with pytest.raises(ValueError, match=rf"unknown budget entry \['seeds'\] in ctx.extra\['{module.NAME}'\]"):
            FigureContext(out=tmp_path, extra={module.NAME: {"seeds": 2}}).budget(module.NAME, module.FULL,
                                                                                 module.FAST)
    assert FigureContext(out=tmp_path, fast=True).budget("training_time", training_time.FULL,
                                                         training_time.FAST).epochs == 3
    fast = FigureContext(out=tmp_path, fast=True).budget("ablation_table", ablation_table.FULL, ablation_table.FAST)
    assert (fast.epochs, fast.max_seeds) == (1, 2) and ablation_table.FULL.max_seeds is None
    with pytest.raises(ValueError, match="budget entry max_seeds must be a positive integer or None, got 0"):
        FigureContext(out=tmp_path, extra={"ablation_table": {"max_seeds": 0}}).budget(
            "ablation_table", ablation_table.FULL, ablation_table.FAST)


def test_plot_without_cache_fails_loudly(tmp_path):
    ctx = FigureContext(out=tmp_path, fast=True, device="cpu")
    for module in (ablation_table, training_time):
        with pytest.raises(FileNotFoundError, match="compute it first"):
            module.plot(ctx)
    with pytest.raises(FileNotFoundError, match="compute it first"):
        run_figures(ctx, ["training_time"], plot_only=True, log=lambda _: None)


def test_existing_figures_are_not_overwritten(tables):
    ctx, _ = tables
    before = (ctx.out / "ablation_table.md").read_bytes()
    with pytest.raises(FileExistsError, match="ablation_table"):
        run_figures(ctx, ["ablation_table"], log=lambda _: None)
    assert (ctx.out / "ablation_table.md").read_bytes() == before
    # --plot-only --overwrite redraws from the cache without training anything
    summary = run_figures(ctx, ["ablation_table"], plot_only=True, overwrite=True, log=lambda _: None)
    assert summary["figures"][0]["compute_seconds"] is None
    assert (ctx.out / "ablation_table.md").read_bytes() == before


def test_the_ablation_bars_name_the_data_set_row_and_seeds(tmp_path, monkeypatch):
    """Each training bar of the ablation names what it trains: data set, row and seeds."""
    labels = []

    def recording(config, data, recipe, seeds):
        labels.append(recipe.progress_label)
        raise RuntimeError("stop after the first row")

    monkeypatch.setattr(ablation_table, "train_seeds", recording)
    ctx = FigureContext(out=tmp_path, fast=True, device="cpu", seeds=(1, 2), only_datasets=("APY",), progress=False)
    with pytest.raises(RuntimeError, match="stop after the first row"):
        ablation_table.compute(ctx)
    assert labels == [f"APY · {ablation_table.ROWS[0]} · seeds 1,2"]
