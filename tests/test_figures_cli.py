"""``cnzsl figures``: listing, option errors, the data choice, and one real run through main()."""

from __future__ import annotations

import json

import pytest

from analysis.cli import main
from analysis.data import DataError
from figures.context import FigureContext
from figures.registry import FIGURE_NAMES, figure_module, select_figures
from tests.conftest import GBU_ROOT, real_att_splits


def test_list_names_every_figure_with_what_it_reproduces(capsys):
    assert main(["figures", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(FIGURE_NAMES)
    for line, name in zip(lines, FIGURE_NAMES):
        module = figure_module(name)
        assert module.PAPER in line and module.TITLE in line and module.NAME == name


@pytest.mark.parametrize("args, message", [
    (["figures"], "--out is required"),
    (["figures", "--out", "OUT", "--seeds", "1,x"], "--seeds must be comma-separated integers, got '1,x'"),
    (["figures", "--out", "OUT", "--data-root", "/no/such/root"], "--data-root /no/such/root is not a folder"),
    (["figures", "--out", "OUT", "--datasets", "FLO"], "unknown data set 'FLO'"),
    (["figures", "--out", "OUT", "--device", "tpu"], "unknown device 'tpu'; choose one of"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_figure_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["figures", "--only", "figure_9", "--out", "x"])
    assert "invalid choice: 'figure_9'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown figure 'figure_9'; choose from variance_vs_depth"):
        select_figures(["figure_9"])
    assert select_figures(["training_time", "loss_slices"]) == ("loss_slices", "training_time")  # paper order


def test_data_choice_synthetic_by_default_real_where_the_root_has_it(tmp_path):
    ctx = FigureContext(out=tmp_path)
    assert [(d.name, d.source) for d in ctx.datasets()] == [(n, "synthetic") for n in
                                                           ("AWA1", "AWA2", "CUB", "SUN", "APY")]
    with pytest.raises(DataError, match="no <DATASET>/att_splits.mat under --data-root"):
        FigureContext(out=tmp_path, data_root=tmp_path).datasets()
    real_att_splits("CUB")
    ctx = FigureContext(out=tmp_path, data_root=GBU_ROOT, only_datasets=("cub", "AWA1"))
    [cub] = ctx.datasets()  # AWA1 has no att_splits.mat in ../shared
    assert cub.name == "CUB" and cub.source == "real attributes, synthetic features"
    assert ctx.load(cub).source == "semi-synthetic"


def test_one_figure_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", "--only", "attribute_statistics", "--fast", "--datasets", "APY", "--out", str(out),
                 "--no-progress"]) == 0
    assert "1 figures in" in capsys.readouterr().out
    summary = json.loads((out / "figures.json").read_text())
    assert [r["name"] for r in summary["figures"]] == ["attribute_statistics"] and summary["figures"][0]["fast"]
    computed = summary["figures"][0]["compute_seconds"]
    assert computed > 0
    assert sorted(summary["figures"][0]["files"]) == ["attribute_statistics.pdf", "attribute_statistics.png"]
    assert (out / "data" / "attribute_statistics.json").is_file()
    # again: refused, nothing changed; --plot-only --overwrite redraws from the cache
    before = (out / "attribute_statistics.png").read_bytes()
    assert main(["figures", "--only", "attribute_statistics", "--fast", "--datasets", "APY", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "attribute_statistics.png").read_bytes() == before
    assert main(["figures", "--only", "attribute_statistics", "--plot-only", "--overwrite", "--out", str(out)]) == 0
    # the log keeps one entry per figure, merged across runs; a redraw keeps the compute time
    assert main(["figures", "--only", "training_time", "--fast", "--datasets", "APY", "--out", str(out),
                 "--no-progress"]) == 0
    log = json.loads((out / "figures.json").read_text())
    assert [r["name"] for r in log["figures"]] == ["attribute_statistics", "training_time"]
    assert log["figures"][0]["compute_seconds"] == computed
    assert log["total_seconds"] == pytest.approx(sum(r["compute_seconds"] + r["plot_seconds"] for r in log["figures"]))
