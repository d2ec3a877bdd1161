"""``cnzsl landscape``'s budget (issue i18): the default and ``--fast`` budgets, explicit options
winning over ``--fast``, the resolved budget in landscape.json, and the expected-time line,
checked against the formula of :func:`landscape.budget.expected_seconds` on injected unit costs
(never against a clock)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import landscape.cli
import landscape.comparison
from analysis.cli import build_parser, main
from analysis.training import TrainConfig, build_model
from landscape.budget import (
    DEFAULT_BUDGET,
    FAST_BUDGET,
    LandscapeEstimate,
    UnitCosts,
    WorkCounts,
    expected_seconds,
    expected_time_line,
    format_duration,
    measure_unit_costs,
    work_counts,
)
from landscape.comparison import MODEL_KINDS, model_config
from landscape.objective import zsl_batches


@pytest.fixture
def tiny(monkeypatch, tiny_data):
    """``cnzsl landscape`` on the tiny data set of tests/conftest.py (240 trainval samples: one
    step of 256 per epoch)."""
    monkeypatch.setattr(landscape.comparison, "load_dataset", lambda *args, **kwargs: tiny_data)
    return tiny_data


@pytest.fixture
def captured_run(monkeypatch):
    """The LandscapeRun the command builds, captured instead of run."""
    runs = []

    def capture(run, report=None, announce=None):
        runs.append(run)
        return {}

    monkeypatch.setattr(landscape.cli, "run_landscape", capture)
    return runs


# ------------------------------------------------------------------------------ the budgets
def test_the_documented_budgets():
    """The values README.md and --help state; --fast is smaller in every entry."""
    assert DEFAULT_BUDGET == {"epochs": 2, "probe_every": 25, "lanczos_max_steps": 40, "slice_points": 15,
                              "slice_samples": 2048}
    assert FAST_BUDGET == {"epochs": 1, "probe_every": 30, "lanczos_max_steps": 12, "slice_points": 5,
                           "slice_samples": 512}
    cheaper = {"probe_every": lambda fast, default: fast >= default}  # fewer probes: a longer interval
    for name, value in FAST_BUDGET.items():
        assert cheaper.get(name, lambda fast, default: fast < default)(value, DEFAULT_BUDGET[name]), name
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    text = " ".join(sub.choices["landscape"].format_help().split())
    for name, value in DEFAULT_BUDGET.items():
        assert f"(default: {value}; --fast: {FAST_BUDGET[name]})" in text, name


@pytest.mark.parametrize(("argv", "expected", "fast"), [
    ([], DEFAULT_BUDGET, False),
    (["--fast"], FAST_BUDGET, True),
    (["--fast", "--epochs", "3", "--slice-points", "7"], {**FAST_BUDGET, "epochs": 3, "slice_points": 7}, True),
    # an explicit value equal to the default still wins over --fast
    (["--fast", "--lanczos-max-steps", "40"], {**FAST_BUDGET, "lanczos_max_steps": 40}, True),
    (["--probe-every", "5", "--slice-samples", "64"], {**DEFAULT_BUDGET, "probe_every": 5, "slice_samples": 64},
     False),
])
def test_fast_resolves_to_its_budget_and_explicit_options_win(argv, expected, fast, captured_run, tmp_path):
    assert main(["landscape", *argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    (run,) = captured_run
    assert {name: getattr(run, name) for name in DEFAULT_BUDGET} == expected and run.fast is fast


def test_landscape_json_records_the_resolved_budget(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["landscape", "--fast", "--slice-points", "3", "--device", "cpu", "--out", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    doc = json.loads((out / "landscape.json").read_text())
    assert {name: doc["config"][name] for name in DEFAULT_BUDGET} == {**FAST_BUDGET, "slice_points": 3}
    assert doc["config"]["fast"] is True
    estimate = doc["estimate"]
    assert set(estimate["counts"]) == set(estimate["unit_seconds"]) == set(MODEL_KINDS)
    # one step per epoch on the tiny data: 1 step, 1 probe of at most 12 products, 3 x 3 points
    for c in estimate["counts"].values():
        assert (c["steps"], c["probes"], c["slice_points"]) == (1, 1, 9) and 1 <= c["hvps"] <= 12
    assert estimate["expected_seconds"] > 0 and estimate["seconds"] > 0
    assert all(v > 0 for costs in estimate["unit_seconds"].values() for v in costs.values())
    for kind, model in doc["models"].items():  # the rest of the output is as before
        assert len(model["slice"]["losses"]) == 3 and model["summary"]["probes"] == len(model["trajectory"]) == 1


# ------------------------------------------------------------------------- the estimate line
INJECTED = {  # seconds per unit and Lanczos steps per probe, one set per model: every term moves the total
    "classifier": (UnitCosts(step=1.0, probe=2.0, hvp=0.25, slice_point=0.2), 4),
    "mlp": (UnitCosts(step=2.0, probe=3.0, hvp=0.5, slice_point=0.4), 6),
    "cn": (UnitCosts(step=3.0, probe=4.0, hvp=0.75, slice_point=0.6), 8),
}


def test_the_expected_time_line_comes_first_and_equals_the_formula(tiny, monkeypatch, tmp_path, capsys):
    calls = []

    def injected(model, data, config, slice_batches, etas, **kwargs):
        kind = MODEL_KINDS[len(calls)]  # measured in the order of --models
        calls.append(kind)
        return INJECTED[kind]

    monkeypatch.setattr(landscape.comparison, "measure_unit_costs", injected)
    out = tmp_path / "out"
    argv = ["landscape", "--fast", "--epochs", "3", "--probe-every", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0  # progress bars on: the training output on stderr
    captured = capsys.readouterr()
    # by hand, per model: S = 3 epochs x 1 step, P = ceil(3 / 2) = 2, H = 2 x (4, 6, 8), K = 5 x 5
    #   classifier 3*1 + 2*2 + 8*0.25 + 25*0.2 = 14, mlp 6 + 6 + 12*0.5 + 10 = 28,
    #   cn 9 + 8 + 16*0.75 + 15 = 44: 86 s
    by_hand = 86.0
    line = ("cnzsl landscape: about 86 s expected on this machine (3 models x 3 training epochs, "
            "about 36 Hessian-vector products, 75 slice points) (--fast budget)")
    assert captured.err.splitlines()[0] == line and format_duration(by_hand) == "86 s"
    assert captured.err.index(line) < captured.err.index("train traditional classifier")
    assert calls == list(MODEL_KINDS)
    doc = json.loads((out / "landscape.json").read_text())
    assert doc["estimate"]["expected_seconds"] == pytest.approx(by_hand, rel=1e-12)
    assert doc["estimate"]["unit_seconds"]["mlp"] == {"step": 2.0, "probe": 3.0, "hvp": 0.5, "slice_point": 0.4}


def test_without_fast_the_line_points_at_it():
    estimate = LandscapeEstimate({"cn": WorkCounts(184, 8, 320, 225)}, {"cn": INJECTED["cn"][0]}, 5400.0)
    assert expected_time_line(estimate, 2, fast=False) == (
        "cnzsl landscape: about 1.5 h expected on this machine (1 models x 2 training epochs, about 320 "
        "Hessian-vector products, 225 slice points); --fast for a smoke run")


# ------------------------------------------------------------------------------ the estimator
def test_expected_seconds_is_counts_times_unit_costs():
    counts = {"a": WorkCounts(10, 2, 8, 4), "b": WorkCounts(3, 1, 5, 9)}
    costs = {"a": UnitCosts(1.0, 10.0, 100.0, 1000.0), "b": UnitCosts(0.5, 0.25, 2.0, 0.125)}
    assert expected_seconds(counts, costs) == pytest.approx((10 + 20 + 800 + 4000) + (1.5 + 0.25 + 10 + 1.125),
                                                            rel=1e-12)
    assert expected_seconds({}, {}) == 0
    with pytest.raises(ValueError, match=r"counts and costs must name the same models, got \['a'\] and \['b'\]"):
        expected_seconds({"a": counts["a"]}, {"b": costs["b"]})


@pytest.mark.parametrize(("kwargs", "expected"), [
    (dict(epochs=2, steps_per_epoch=92, probe_every=25, lanczos_steps=15, slice_points=15),
     WorkCounts(184, 8, 120, 225)),  # the default on AWA2: steps 0, 25, ..., 175
    (dict(epochs=1, steps_per_epoch=92, probe_every=30, lanczos_steps=12, slice_points=5),
     WorkCounts(92, 4, 48, 25)),  # --fast on AWA2: steps 0, 30, 60, 90
    (dict(epochs=3, steps_per_epoch=1, probe_every=1, lanczos_steps=7, slice_points=2),
     WorkCounts(3, 3, 21, 4)),
])
def test_work_counts(kwargs, expected):
    assert work_counts(**kwargs) == expected


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42.4, "42 s"), (90, "1.5 min"), (5399, "90.0 min"),
                                               (5400, "1.5 h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_unit_costs_are_measured_on_a_copy_with_the_given_clock(tiny_data):
    """A clock that advances one second per reading: every timed interval is 1 s, the products share theirs."""
    ticks = iter(range(1000))
    model = build_model(model_config("cn", tiny_data), 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slices = zsl_batches(tiny_data, batch_size=64)[:1]
    costs, lanczos_steps = measure_unit_costs(model, tiny_data, TrainConfig(epochs=1, device="cpu", progress=False),
                                              slices, (1e-4, 1e-3), lanczos_max_steps=5,
                                              timer=lambda: float(next(ticks)))
    assert costs.step == 1.0 and costs.probe == 1.0 and costs.slice_point == 1.0
    assert 1 <= lanczos_steps <= 5 and costs.hvp == 1.0 / lanczos_steps
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.training
