"""The plots of ``cnzsl landscape`` and ``cnzsl czsl`` follow the figures' style
(analysis.plot_style): each model in its figure colour, a unit on every axis, one colour
scale shared by the slice panels with one readable colour bar, a provenance caption, a
legend that covers no data.  Checked on the matplotlib Figure objects, not on pixels."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

import analysis.plot_style as style
import landscape.comparison as comparison
from analysis.czsl.experiment import CZSLExperiment, _caption, _figure
from landscape.comparison import LandscapeRun, run_landscape
from landscape.slices import Slice2D, plot_slice_panels

UNIT = re.compile(r"\(\s*[^()\s][^()]*\)")  # "(nats)", "(%)", "(tasks)", "(dimensionless)"
# the names under which the paper figures draw the landscape models (figures/landscape_models.py)
FIGURE_NAMES = {"classifier": "classifier", "mlp": "zsl_mlp", "cn": "zsl_cn"}


def _is_colorbar(ax) -> bool:
    return ax.get_label() == "<colorbar>"


def assert_units_on_every_axis(fig: Figure) -> None:
    """Every panel names both axes with a unit in parentheses; a colour bar names its quantity
    and unit along its long side."""
    for ax in fig.axes:
        labels = [ax.get_ylabel()] if _is_colorbar(ax) else [ax.get_xlabel(), ax.get_ylabel()]
        for text in labels:
            assert text.strip() and UNIT.search(text), f"axis label {text!r} of {ax.get_title()!r} has no unit"


def assert_legend_covers_no_data(fig: Figure) -> None:
    """One figure legend, outside every panel's data area; no legend inside a panel."""
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(fig.legends) == 1
    fig.draw_without_rendering()  # lay out (constrained layout), then compare the boxes
    box = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        if not _is_colorbar(ax):
            assert not box.overlaps(ax.get_window_extent()), f"the legend covers panel {ax.get_title()!r}"


def _lines_by_label(fig: Figure) -> dict[str, list]:
    lines: dict[str, list] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                lines.setdefault(line.get_label(), []).append(line)
    return lines


# -- cnzsl landscape -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def landscape_run(tiny_data, tmp_path_factory):
    """One tiny ``run_landscape``, with the figures it writes captured before saving."""
    figures: dict[str, Figure] = {}
    write_png = comparison.write_png

    def capture(path, fig, *args, **kwargs):
        figures[Path(path).name] = fig
        return write_png(path, fig, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(comparison, "write_png", capture)
        run = LandscapeRun(out=tmp_path_factory.mktemp("landscape"), epochs=1, probe_every=1, slice_points=5,
                           slice_samples=60, progress=False)
        payload = run_landscape(run, data=tiny_data)
    return payload, figures


def test_landscape_plots_name_a_unit_on_every_axis(landscape_run):
    _, figures = landscape_run
    assert set(figures) == {"trajectories.png", "slices.png"}
    for fig in figures.values():
        assert_units_on_every_axis(fig)


def test_landscape_slices_share_one_colour_scale_and_one_colour_bar(landscape_run):
    payload, figures = landscape_run
    fig = figures["slices.png"]
    filled = [c for ax in fig.axes for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    assert len(filled) == len(payload["models"]) == 3
    every_loss = np.concatenate([np.ravel(m["slice"]["losses"]) for m in payload["models"].values()])
    for contours in filled:
        assert (contours.norm.vmin, contours.norm.vmax) == (every_loss.min(), every_loss.max())
    bars = [ax for ax in fig.axes if _is_colorbar(ax)]
    assert len(bars) == 1
    ticks = bars[0].get_yticks()
    labels = [t.get_text() for t in bars[0].get_yticklabels()]
    assert 3 <= len(ticks) <= 6 and ((every_loss.min() <= ticks) & (ticks <= every_loss.max())).all()
    assert all(labels) and len(set(labels)) == len(labels) and all(len(t) <= 5 for t in labels)
    assert len(bars[0].yaxis.get_minorticklocs()) == 0


def test_landscape_lines_have_the_colours_of_the_paper_figures(landscape_run):
    payload, figures = landscape_run
    lines = _lines_by_label(figures["trajectories.png"])
    for kind in payload["models"]:
        name = FIGURE_NAMES[kind]
        drawn = lines[style.label(name)]
        assert len(drawn) == 3  # one per panel
        assert all(to_rgba(line.get_color()) == to_rgba(style.color(name)) for line in drawn)


def test_landscape_plots_have_a_provenance_caption_and_an_outside_legend(landscape_run, tiny_data):
    payload, figures = landscape_run
    commit = payload["environment"]["git_commit"]
    for name, fig in figures.items():
        caption = fig.get_supxlabel()
        assert f"{tiny_data.name} ({tiny_data.source} data)" in caption, name
        assert "cnzsl landscape: 1 epoch, seed 1" in caption
        assert commit is None or f"commit {commit[:10]}" in caption
    assert_legend_covers_no_data(figures["trajectories.png"])
    assert figures["slices.png"].legends == [] and all(ax.get_legend() is None for ax in figures["slices.png"].axes)


# -- cnzsl czsl ----------------------------------------------------------------------------
def _czsl_rows(methods=("sequential", "agem"), cn_settings=(False, True), seeds=2, tasks=3):
    rng = np.random.default_rng(0)
    return [{"method": m, "cn": cn, "per_seed": [
        {"evaluations": [{"seen_accuracy": float(rng.uniform()), "unseen_accuracy": float(rng.uniform())}
                         for _ in range(tasks)]} for _ in range(seeds)]}
        for m in methods for cn in cn_settings]


def _czsl_figure(tmp_path, rows):
    exp = CZSLExperiment(out=tmp_path / "czsl", dataset="CUB", methods=("sequential", "agem"),
                         cn_settings=(False, True), seeds=(1, 2), num_tasks=3)
    data = types.SimpleNamespace(name="CUB", source="synthetic")
    return _figure(rows, _caption(exp, data, num_tasks=3, commit="0123456789abcdef"))


def test_czsl_plot_draws_each_model_in_its_figure_colour(tmp_path):
    rows = _czsl_rows()
    fig = _czsl_figure(tmp_path, rows)
    lines = _lines_by_label(fig)
    for r in rows:
        model = "cn" if r["cn"] else "mlp"  # the names of the ablation and probe figures
        drawn = lines[f"{r['method']}, {style.label(model)}"]
        assert len(drawn) == 2  # seen and unseen panels
        assert all(to_rgba(line.get_color()) == to_rgba(style.color(model)) for line in drawn)
        expected = [100 * np.mean([s["evaluations"][t]["seen_accuracy"] for s in r["per_seed"]]) for t in range(3)]
        np.testing.assert_allclose(drawn[0].get_ydata(), expected, rtol=1e-12)


def test_czsl_plot_names_units_caption_and_keeps_the_legend_off_the_data(tmp_path):
    fig = _czsl_figure(tmp_path, _czsl_rows())
    assert_units_on_every_axis(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == ["seen accuracy (%)", "unseen accuracy (%)"]
    caption = fig.get_supxlabel()
    assert "CUB (synthetic data)" in caption and "cnzsl czsl, toolkit protocol: 3 tasks" in caption
    assert "mean over seeds 1,2" in caption and "commit 0123456789" in caption
    assert_legend_covers_no_data(fig)


# -- the shared helpers --------------------------------------------------------------------
def test_slice_panels_share_the_norm_of_every_panel():
    grid = torch.linspace(-1, 1, 5, dtype=torch.float64)
    bowl = grid[:, None].square() + grid[None, :].square()
    slices = [Slice2D(grid, grid, scale * bowl + scale) for scale in (0.5, 2.0, 40.0)]
    fig, axes = style.new_figure(1, 3)
    bar = plot_slice_panels(slices, axes[0])
    lo = min(float(s.losses.min()) for s in slices)
    hi = max(float(s.losses.max()) for s in slices)
    for ax in axes[0]:
        for contours in ax.collections:
            assert (contours.norm.vmin, contours.norm.vmax) == (lo, hi)
    assert bar.mappable.norm.vmin == lo and bar.mappable.norm.vmax == hi
    assert_units_on_every_axis(fig)


def test_slice_panels_refuse_mismatched_axes_and_non_positive_losses():
    grid = torch.linspace(-1, 1, 3, dtype=torch.float64)
    fig, axes = style.new_figure(1, 2)
    good = Slice2D(grid, grid, torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="one axes .and title. per slice, got 1 slices, 2 axes"):
        plot_slice_panels([good], axes[0])
    with pytest.raises(ValueError, match="needs positive losses, got a minimum of 0.0"):
        plot_slice_panels([good, Slice2D(grid, grid, torch.zeros(3, 3, dtype=torch.float64))], axes[0])
    with pytest.raises(ValueError, match="at least 2 points along each axis, got 1 alphas"):
        plot_slice_panels([good, Slice2D(grid[:1], grid, torch.ones(1, 3, dtype=torch.float64))], axes[0])


def test_shared_norm_spans_every_panel_and_widens_a_flat_one():
    norm = style.shared_norm([np.array([[2.0, 3.0]]), np.array([0.5, np.nan, 9.0])], log=True)
    assert (norm.vmin, norm.vmax) == (0.5, 9.0)
    flat = style.shared_norm([np.full(4, 2.0)])
    assert flat.vmin == 2.0 and flat.vmax > 2.0
    with pytest.raises(ValueError, match="at least one finite value across the panels"):
        style.shared_norm([np.array([np.nan])])
    with pytest.raises(ValueError, match="needs positive values, got a minimum of -1.0"):
        style.shared_norm([np.array([-1.0, 1.0])], log=True)


@pytest.mark.parametrize("lo,hi", [(1.1, 8.57), (0.5, 25.0), (1.1, 1.45), (0.01, 1000.0), (3.1, 9.9), (2.3, 2.3023)])
def test_nice_ticks_are_a_few_values_inside_the_range(lo, hi):
    ticks = style.nice_ticks(lo, hi)
    assert 3 <= len(ticks) <= 6 and ((lo <= ticks) & (ticks <= hi)).all() and (np.diff(ticks) > 0).all()


def test_provenance_caption_names_the_data_first_and_refuses_none():
    text = style.provenance_caption("AWA2 (synthetic data)", "cnzsl landscape: 5 epochs", commit="abcdef0123456789")
    assert text == "AWA2 (synthetic data); cnzsl landscape: 5 epochs; commit abcdef0123"
    with pytest.raises(ValueError, match="needs the data source"):
        style.provenance_caption(" ")
