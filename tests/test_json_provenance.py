"""Every JSON output explains itself (issue 18): schema version, UTC timestamp, units,
absolute paths, resolved defaults, the seed, ``null`` spread for one seed, completion flag.

The frame is written by one helper, :func:`analysis.io.write_json`; the command runs here
are the cheapest ones (the tiny synthetic data set of ``tests/conftest.py`` swapped in for
the named data set, relative ``--out`` folders to check that recorded paths are absolute).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

import analysis.czsl.experiment as czsl_experiment
import analysis.experiment as train_experiment
from analysis.cli import main
from analysis.czsl.experiment import CZSLExperiment
from analysis.czsl.metrics import TaskEvaluation
from analysis.experiment import format_mean_std, mean_std
from analysis.io import SCHEMA_VERSION, UNITS, write_json
from figures import ablation_table
from figures.context import FigureContext
from landscape.comparison import LandscapeRun, run_landscape
from tests.conftest import REPO


def _read(path: Path) -> dict[str, Any]:
    """The document at ``path``, its frame checked: first keys, timestamp, last key."""
    doc = json.loads(path.read_text())
    keys = list(doc)
    assert keys[:2] == ["schema_version", "created"] and keys[-1] == "complete", keys
    assert doc["schema_version"] == SCHEMA_VERSION and isinstance(doc["schema_version"], int)
    assert doc["complete"] is True
    created = datetime.datetime.fromisoformat(doc["created"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - created) < datetime.timedelta(minutes=10)
    assert all(unit in UNITS for unit in doc.get("units", {}).values())
    return doc


def _nulls(value: Any, where: str = "") -> list[str]:
    """Key paths holding ``null``."""
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{where}.{k}" if where else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{where}[{i}]")]
    return []


# ----------------------------------------------------------------------------- the helper
def test_write_json_frames_the_payload(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_json("doc.json", {"score": 61.25, "folder": Path("runs/x"), "nested": {"p": Path("../y")}},
                      units={"score": "percent"})
    doc = _read(path)
    assert list(doc) == ["schema_version", "created", "units", "score", "folder", "nested", "complete"]
    assert doc["units"] == {"score": "percent"} and doc["score"] == 61.25
    assert doc["folder"] == str(tmp_path / "runs" / "x") and doc["nested"]["p"] == str(tmp_path.parent / "y")
    assert "units" not in _read(write_json(tmp_path / "plain.json", {"a": 1}))  # no units: no key


@pytest.mark.parametrize("payload, units, error, message", [
    ({"complete": False}, None, ValueError, r"uses the key\(s\) \['complete'\] that write_json writes itself"),
    ({"created": "x", "units": {}}, None, ValueError, r"\['created', 'units'\]"),
    ({"a": 1}, {"a": "%"}, ValueError, r"unknown unit\(s\) \['%'\] for d.json; use one of percent"),
    ([1, 2], None, TypeError, "write_json writes a JSON object .* got list"),
])
def test_write_json_refuses(tmp_path, payload, units, error, message):
    with pytest.raises(error, match=message):
        write_json(tmp_path / "d.json", payload, units=units)
    assert not (tmp_path / "d.json").exists()


def test_one_seed_has_no_standard_deviation():
    assert mean_std([61.0]) == (61.0, None)
    assert mean_std([61.0, math.nan]) == (61.0, None)  # one finite value: still no spread
    mean, std = mean_std([1.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(2 ** 0.5)
    assert format_mean_std(61.04, None) == "61.0" and format_mean_std(61.04, 0.26) == "61.0 ± 0.3"


# ------------------------------------------------------------------------------ cnzsl train
@pytest.fixture
def tiny_everywhere(monkeypatch, tiny_data):
    """Every command's data loader returns the tiny data set, whatever the name."""
    def load(*args, **kwargs):
        return tiny_data

    monkeypatch.setattr(train_experiment, "load_dataset", load)
    monkeypatch.setattr(czsl_experiment, "load_dataset", load)
    return tiny_data


def test_train_results_config_and_environment(tmp_path, monkeypatch, tiny_everywhere, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--dataset", "APY", "--epochs", "2", "--batch-size", "64", "--seed", "7",
               "--out", "run", "--no-progress", "--no-save-model"])
    assert rc == 0
    capsys.readouterr()
    results = _read(tmp_path / "run" / "results.json")
    assert results["seed"] == 7 and "std" not in results
    units = results["units"]
    assert {units[k] for k in ("zsl_unseen", "gzsl_unseen", "gzsl_seen", "gzsl_harmonic", "ausuc")} == {"percent"}
    assert units["train_seconds"] == "seconds" and units["loss"] == "nats" and units["seen_logit_scale"] == "dimensionless"
    assert 0 <= results["gzsl_harmonic"] <= 100 and results["gzsl_harmonic"] > 1  # percent, not a fraction
    config = _read(tmp_path / "run" / "config.json")
    assert config["run"]["out"] == str(tmp_path / "run")  # absolute, though --out was relative
    assert config["run"]["seen_logit_scale"] == 0.95 == results["seen_logit_scale"]  # the default, resolved
    assert config["run"]["train"]["seed"] == 7
    # null only where nothing was given and nothing substituted (module docstring of analysis.io)
    assert sorted(_nulls(config)) == ["run.data_root", "run.seeds"]
    environment = _read(tmp_path / "run" / "environment.json")
    assert environment["device"] == "cpu"


def test_train_with_one_seed_in_seeds_writes_a_null_std(tmp_path, tiny_everywhere, capsys):
    rc = main(["train", "--dataset", "CUB", "--epochs", "1", "--batch-size", "64", "--seeds", "3",
               "--out", str(tmp_path / "one"), "--no-progress", "--no-save-model"])
    assert rc == 0
    printed = capsys.readouterr().out
    results = _read(tmp_path / "one" / "results.json")
    assert results["seeds"] == [3] and [r["seed"] for r in results["per_seed"]] == [3]
    assert set(results["std"].values()) == {None}  # undefined, not 0.0
    assert f"ZSL-U      {results['zsl_unseen']:6.1f} %" in printed and "±" not in printed.split("\n", 1)[1]
    assert results["units"]["per_seed[].zsl_unseen"] == "percent" and results["units"]["std.ausuc"] == "percent"
    assert _read(tmp_path / "one" / "config.json")["run"]["seen_logit_scale"] == 1.0  # CUB's default


# ------------------------------------------------------------------------------- cnzsl czsl
def test_czsl_json_says_which_metric_is_percent_and_which_a_fraction(tmp_path, monkeypatch, tiny_everywhere,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["czsl", "--dataset", "CUB", "--method", "sequential", "--seeds", "1", "--tasks", "3",
               "--epochs-per-task", "1", "--batch-size", "64", "--device", "cpu", "--out", "c", "--no-progress"])
    assert rc == 0 and "±" not in capsys.readouterr().out  # one seed: means only
    doc = _read(tmp_path / "c" / "czsl.json")
    units = doc["units"]
    (row,) = doc["rows"]
    (seed,) = row["per_seed"]
    for metric in ("mSA", "mUA", "mH", "mAUC", "mJA", "forgetting", "mUA_from_0", "forgetting_authors",
                   "mSA_samples", "mUA_from_0_samples", "mH_samples"):
        assert units[f"rows[].{metric}.mean"] == units[f"rows[].per_seed[].summary.{metric}"] == "percent"
        assert row[metric]["std"] is None and row[metric]["mean"] == seed["summary"][metric]
    for field in ("seen_accuracy", "unseen_accuracy", "harmonic", "ausuc", "joint_accuracy", "task_accuracies",
                  "generalized_task_accuracies", "seen_accuracy_samples", "unseen_accuracy_samples",
                  "harmonic_samples"):
        assert units[f"rows[].per_seed[].evaluations[].{field}"] == units[f"rows[].per_seed[].before.{field}"] \
            == "fraction"
    assert {k.rsplit(".", 1)[1] for k in units if ".evaluations[]." in k} == \
        {f.name for f in TaskEvaluation.__dataclass_fields__.values()}
    # the units are true: mSA (percent) is 100 x the mean seen accuracy (fraction) over t = 1..T
    seen = [e["seen_accuracy"] for e in seed["evaluations"]]
    assert all(0 <= s <= 1 for s in seen)
    assert row["mSA"]["mean"] == pytest.approx(100 * sum(seen) / len(seen), rel=1e-9)
    config = doc["config"]
    assert config["out"] == str(tmp_path / "c") and config["num_tasks"] == 3
    assert (config["epochs_per_task"], config["batch_size"]) == (1, 64)
    assert doc["methods_config"]["agem_memory_batch"] == 256  # the toolkit protocol's, resolved
    assert sorted(_nulls({k: doc[k] for k in ("config", "methods_config", "data")})) == ["config.data_root"]


def test_czsl_resolves_the_default_number_of_tasks(tmp_path):
    assert CZSLExperiment(out=tmp_path, dataset="cub").num_tasks == 10
    assert CZSLExperiment(out=tmp_path, dataset="SUN", num_tasks=None).num_tasks == 15
    with pytest.raises(ValueError, match=r"no default number of tasks for AWA1; pass num_tasks \(--tasks N\)"):
        CZSLExperiment(out=tmp_path, dataset="AWA1")


# -------------------------------------------------------------------------- cnzsl landscape
def test_landscape_json(tmp_path, monkeypatch, tiny_data):
    monkeypatch.chdir(tmp_path)
    run = LandscapeRun(out="ls", epochs=1, probe_every=4, slice_points=2, slice_samples=32, models=("cn",),
                       data_root="gbu-not-read", progress=False, device="cpu")
    run_landscape(run, data=tiny_data)
    doc = _read(tmp_path / "ls" / "landscape.json")
    assert doc["config"]["out"] == str(tmp_path / "ls") and doc["config"]["data_root"] == str(tmp_path / "gbu-not-read")
    assert doc["units"]["models.*.slice.losses"] == "nats" and doc["units"]["models.*.summary.train_seconds"] == "seconds"
    assert doc["models"]["cn"]["summary"]["train_seconds"] > 0


# --------------------------------------------------------------------------- cnzsl variance
def test_variance_json(tmp_path, monkeypatch, capsys):
    import variance.cli

    monkeypatch.setattr(variance.cli, "training_rows", lambda **kwargs: [])  # V4 along training: not this test's
    monkeypatch.chdir(tmp_path)
    assert main(["variance", "--dataset", "CUB", "--num-inits", "2", "--width", "8", "--out", "v"]) == 0
    capsys.readouterr()
    doc = _read(tmp_path / "v" / "variance.json")
    assert doc["config"]["datasets"] == ["CUB"] and doc["summary"]["rows"] == len(doc["rows"]) > 0


# ---------------------------------------------------------------------------- cnzsl figures
def test_figure_cache_and_log(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["figures", "--only", "attribute_statistics", "--fast", "--datasets", "APY", "--out", "f",
                 "--no-progress"]) == 0
    capsys.readouterr()
    log = _read(tmp_path / "f" / "figures.json")
    assert log["out"] == str(tmp_path / "f")
    assert log["figures"][0]["files"] == ["attribute_statistics.png", "attribute_statistics.pdf"]  # names in "out"
    assert log["units"]["figures[].compute_seconds"] == "seconds"
    cache = _read(tmp_path / "f" / "data" / "attribute_statistics.json")
    assert cache["provenance"]["device"] == "cpu" and cache["provenance"]["seeds"] == [1, 2, 3]
    # a redraw reads its cache back through the frame
    assert main(["figures", "--only", "attribute_statistics", "--plot-only", "--overwrite", "--out", "f"]) == 0


def test_ablation_table_of_one_seed(tmp_path):
    ctx = FigureContext(out=tmp_path, seeds=(1,), device="cpu")
    row = {"per_seed": [{k: 50.0 for k in ablation_table.METRICS}],
           "mean": {k: 50.0 for k in ablation_table.METRICS}, "std": {k: None for k in ablation_table.METRICS},
           "train_seconds": 1.0}
    write_json(ctx.cache_path(ablation_table.NAME),
               {"results": {"APY": {"source": "synthetic", "rows": {p: row for p in ablation_table.ROWS}}},
                "published": ablation_table.PUBLISHED, "seeds": [1], "provenance": {"settings": {"epochs": 1}}})
    assert ablation_table.table_rows(json.loads(ctx.cache_path(ablation_table.NAME).read_text()))[0]["H"] == "50.0"
    paths = ablation_table.plot(ctx)  # no error bar for a single seed, and no warning
    assert {p.suffix for p in paths} == {".png", ".pdf", ".md", ".csv"}


# ------------------------------------------------------------------------------ cnzsl probe
def test_probe_json(tmp_path, monkeypatch, tiny_data):
    from figures.probe import run_probe
    from figures.probe_battery import ProbeRun
    from tests.test_probe_cli import TINY

    monkeypatch.chdir(REPO)  # the model named by a path relative to the working folder
    run = ProbeRun(out=tmp_path / "p", model="examples/residual_layernorm.py:ResidualLayerNormEmbedder",
                   model_kwargs={"width": 16}, compare=(), progress=False, device="cpu", **TINY)
    run_probe(run, data=tiny_data)
    doc = _read(tmp_path / "p" / "probe.json")
    assert doc["settings"]["model_file"] == os.path.join(REPO, "examples", "residual_layernorm.py")
    assert doc["units"]["models.*.training.per_seed[].gzsl_harmonic"] == "percent"
    (model,) = doc["models"].values()
    assert model["training"]["mean_std"]["zsl_unseen"][1] is None  # one seed


def test_czsl_shows_a_bar_over_the_tasks_of_each_run(tmp_path, monkeypatch, tiny_everywhere):
    """Besides the bar over runs, each run has a bar over its tasks, named by method, CN and
    seed, that reaches its total (recorded through the bar objects: what tqdm draws depends on
    its refresh interval)."""
    bars = []
    real = czsl_experiment.tqdm

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(czsl_experiment, "tqdm", recording)
    monkeypatch.chdir(tmp_path)
    rc = main(["czsl", "--dataset", "CUB", "--method", "sequential", "--both-cn", "--seeds", "1", "--tasks", "3",
               "--epochs-per-task", "1", "--batch-size", "64", "--device", "cpu", "--out", "c"])
    assert rc == 0
    tasks = {b.desc: (b.n, b.total) for b in bars if b.unit == "task"}
    assert tasks == {"sequential, seed 1": (3, 3), "sequential + CN, seed 1": (3, 3)}
