"""The training-time figure: median-epoch estimate, measurement conditions, an honest legend.

Epoch times are injected (a stand-in for ``train`` returning a :class:`History` with chosen
``epoch_seconds``), so every number here is computed by hand; nothing asserts a wall time.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import matplotlib.image
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer, ErrorbarContainer

from analysis.synthetic import make_synthetic
from analysis.training import History
from figures import training_time
from figures.context import FigureContext
from tests.conftest import TINY_SPEC

# per data set: the injected seconds of each epoch, and the hand-computed estimate x 50:
# APY [3, 1, 2] -> sorted [1, 2, 3]: median 2, q25 1.5, q75 2.5 -> 100, 75, 125
# CUB [4, 1, 2, 10] -> sorted [1, 2, 4, 10]: median 3, q25 1 + 0.75 * 1 = 1.75,
#     q75 4 + 0.25 * 6 = 5.5 (numpy's linear percentiles) -> 150, 87.5, 275
EPOCH_SECONDS = {"CUB": [4.0, 1.0, 2.0, 10.0], "APY": [3.0, 1.0, 2.0]}
EXPECTED = {"APY": (100.0, 75.0, 125.0), "CUB": (150.0, 87.5, 275.0)}
LOADS = [1.25, 2.5]  # the 1-minute load average at the start, then at the end


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """compute() on APY and CUB with injected epoch times and load averages, and its cache."""
    data = {"CUB": make_synthetic(TINY_SPEC, seed=0),
            "APY": make_synthetic(replace(TINY_SPEC, name="TINY2", trainval=120), seed=1)}
    calls = []

    def fake_train(model, d, config):
        name = next(n for n, v in data.items() if v is d)
        calls.append((name, config.epochs))
        times = EPOCH_SECONDS[name]
        return History(loss=[1.0] * len(times), epoch_seconds=list(times), seconds=sum(times) + 0.5,
                       device="cpu", steps=len(times), path="plain")

    loads = iter(LOADS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_time, "train", fake_train)
        mp.setattr(FigureContext, "load", lambda self, choice: data[choice.name])
        mp.setattr(os, "getloadavg", lambda: (next(loads), 9.0, 9.0))
        ctx = FigureContext(out=tmp_path_factory.mktemp("tt"), fast=True, device="cpu", seeds=(1,),
                            only_datasets=("APY", "CUB"), progress=False)
        training_time.compute(ctx)
    return ctx, json.loads(ctx.cache_path(training_time.NAME).read_text()), calls


def test_the_estimate_is_the_median_epoch_times_the_recipe_epochs(injected):
    _, cache, calls = injected
    assert calls == [("CUB", 3), ("APY", 3)]  # --fast times 3 epochs, data sets in DATASETS order
    assert list(cache["runs"]) == ["CUB", "APY"] and cache["recipe_epochs"] == 50
    for name, (median, low, high) in EXPECTED.items():
        run = cache["runs"][name]
        assert run["epoch_seconds"] == EPOCH_SECONDS[name]
        assert run["seconds_per_recipe"] == pytest.approx(median, abs=1e-12)
        assert run["seconds_per_recipe_iqr"] == pytest.approx([low, high], abs=1e-12)
        assert run["seconds"] == pytest.approx(sum(EPOCH_SECONDS[name]) + 0.5)  # the measured total, kept
        assert run["extrapolated"] and run["epochs"] == 3
    assert cache["runs"]["CUB"]["steps_per_epoch"] == 1 and cache["runs"]["CUB"]["trainval_images"] == 240


def test_recipe_seconds_by_hand():
    assert training_time.recipe_seconds([3.0, 1.0, 2.0]) == {"median": 100.0, "low": 75.0, "high": 125.0}
    assert training_time.recipe_seconds([2.0], 10) == {"median": 20.0, "low": 20.0, "high": 20.0}
    # one slow (warm-up) epoch among five moves the median by nothing
    assert training_time.recipe_seconds([9.0, 1.0, 1.0, 1.0, 1.0], 50)["median"] == 50.0


@pytest.mark.parametrize("times, epochs, match", [
    ([], 50, "at least one epoch, got none"),
    ([1.0, -0.5], 50, r"finite and >= 0 seconds, got \[-0.5\]"),
    ([float("nan")], 50, r"finite and >= 0 seconds, got \[nan\]"),
    ([1.0], 0, "epochs must be a positive integer, got 0"),
])
def test_recipe_seconds_refuses_bad_input(times, epochs, match):
    with pytest.raises(ValueError, match=match):
        training_time.recipe_seconds(times, epochs)


def test_the_cache_and_the_caption_record_the_conditions(injected):
    ctx, cache, _ = injected
    conditions = cache["conditions"]
    assert conditions["cpu_count"] == os.cpu_count() and conditions["usable_cpus"] >= 1
    assert conditions["load_average_1min_start"] == 1.25 and conditions["load_average_1min_end"] == 2.5
    assert conditions["device"] == "cpu" and conditions["device_name"] == "CPU"
    assert conditions["torch_threads"] >= 1 and conditions["started"][:2] == "20"
    fig = training_time.draw(cache)
    caption = fig.get_supxlabel()
    assert "3 of 50 epochs timed (--fast), bar = median epoch x 50" in caption
    assert f"{conditions['torch_threads']} torch thread" in caption
    assert f"{os.cpu_count()} CPUs" in caption
    assert "load average 1.2 -> 2.5 (1 min, start -> end)" in caption  # 1.25 printed to one decimal
    training_time.plot(ctx)
    assert matplotlib.image.imread(ctx.out / "training_time.png").shape[1] > 500


def test_the_legend_lists_exactly_the_drawn_artists(injected):
    _, cache, _ = injected
    fig = training_time.draw(cache)
    [ax], [legend] = fig.axes, fig.legends  # one legend, the figure's (above the panel)
    listed = [t.get_text() for t in legend.get_texts()]
    handles, labels = ax.get_legend_handles_labels()  # every labelled artist the axes hold
    assert sorted(listed) == sorted(labels) and len(listed) == len(set(listed)) == 3  # nothing more, nothing less
    bars, whiskers, band = (dict(zip(labels, handles))[text] for text in listed)
    # the bars: one per data set, drawn at the estimates
    assert isinstance(bars, BarContainer) and bars in ax.containers
    assert [p.get_height() for p in bars] == pytest.approx([150.0, 100.0])
    assert all(p in ax.patches and p.get_visible() for p in bars)
    # the whiskers: the interquartile ranges x 50
    assert isinstance(whiskers, ErrorbarContainer) and whiskers in ax.containers
    [segments] = [c for c in whiskers.lines[2] if isinstance(c, LineCollection)]
    assert segments in ax.collections
    assert [(s[0][1], s[1][1]) for s in segments.get_segments()] == pytest.approx([(87.5, 275.0), (75.0, 125.0)])
    # the published range: one band for every data set, inside the view, above the bars
    assert "published: 20-30 s" in listed[2] and band in ax.patches and band.get_visible()
    y0, y1 = band.get_y(), band.get_y() + band.get_height()  # a Rectangle in (axes x, data y)
    assert band.get_data_transform() == ax.get_yaxis_transform() and (y0, y1) == pytest.approx((20.0, 30.0))
    assert ax.get_ylim()[0] <= 20.0 and ax.get_ylim()[1] >= 30.0
    assert band.get_zorder() > bars.patches[0].get_zorder()
    assert sum("published" in text for text in listed) == 1


def test_load_average_is_none_where_the_platform_has_none(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError("not available")))
    assert training_time.load_average() is None
    monkeypatch.delattr(os, "getloadavg")
    assert training_time.load_average() is None


def test_plot_refuses_a_cache_without_conditions(injected, tmp_path):
    _, cache, _ = injected
    ctx = FigureContext(out=tmp_path, fast=True, device="cpu", progress=False)
    old = {k: v for k, v in cache.items() if k != "conditions"}
    ctx.cache_path(training_time.NAME).parent.mkdir(parents=True)
    ctx.cache_path(training_time.NAME).write_text(json.dumps(old))
    with pytest.raises(ValueError, match="has no measurement conditions .* --overwrite"):
        training_time.plot(ctx)
