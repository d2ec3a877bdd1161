"""``cnzsl variance`` and ``cnzsl attributes``: tables, JSON, refusals."""

from __future__ import annotations

import json

import pytest

from analysis.cli import main
from analysis.gbu import read_att_splits
from tests.conftest import GBU_ROOT, real_att_splits
from variance.attribute_statistics import attribute_statistics


@pytest.fixture(scope="module")
def variance_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("variance")
    rc = main(["variance", "--dataset", "CUB", "--out", str(out), "--num-inits", "24", "--width", "64"])
    return rc, out


def test_variance_writes_every_claim_and_the_expected_verdicts(variance_run, capsys):
    rc, out = variance_run
    assert rc == 0
    rows = json.loads((out / "variance.json").read_text())["rows"]
    assert {r["claim"] for r in rows} == {"V1", "V2", "V3", "V4", "V5"}
    assert all(r["source"] == "synthetic" and r["dataset"] == "CUB" for r in rows)
    for r in rows:
        assert set(r) >= {"predicted", "measured", "stderr", "z", "verdict", "expected", "confirmed"}
    by_claim = {c: [r for r in rows if r["claim"] == c] for c in ("V2", "V3", "V4", "V5")}
    assert all(r["verdict"] == "pass" for c in ("V2", "V4", "V5") for r in by_claim[c])
    assert sum(r["verdict"] == "fail" for r in by_claim["V3"]) >= len(by_claim["V3"]) - 2
    assert len(by_claim["V4"]) == 10  # depth 1..5, prototypes and logits


def test_variance_refuses_to_overwrite(variance_run, capsys):
    _, out = variance_run
    rc = main(["variance", "--dataset", "CUB", "--out", str(out), "--num-inits", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds variance.json" in err and "--overwrite" in err


def test_attributes_json_matches_the_module_on_real_data(capsys):
    path = real_att_splits("SUN")
    rc = main(["attributes", "--dataset", "SUN", "--data-root", str(GBU_ROOT), "--json"])
    printed = json.loads(capsys.readouterr().out)
    expected = attribute_statistics(read_att_splits(path).attributes).summary()
    assert rc == 0 and printed == pytest.approx(expected)


def test_attributes_table_on_synthetic_presets(capsys):
    rc = main(["attributes", "--dataset", "AWA1,APY"])
    out = capsys.readouterr().out
    assert rc == 0 and "AWA1 (synthetic)" in out and "APY (synthetic)" in out and "median chi2" in out


def test_unknown_dataset_is_a_one_line_error(tmp_path, capsys):
    rc = main(["attributes", "--dataset", "FLO"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "cnzsl: error: unknown data set 'FLO'; choose one of AWA1, AWA2, CUB, SUN, APY"
