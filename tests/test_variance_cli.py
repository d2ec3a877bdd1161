"""``cnzsl variance`` and ``cnzsl attributes``: tables, JSON, refusals."""

from __future__ import annotations

import json

import pytest

from analysis.cli import main
from analysis.gbu import read_att_splits
from tests.conftest import GBU_ROOT, real_att_splits
from variance.attribute_statistics import attribute_statistics
from variance.estimate import Check
from variance.report import KINDS


@pytest.fixture(scope="module")
def variance_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("variance")
    rc = main(["variance", "--dataset", "CUB", "--out", str(out), "--num-inits", "24", "--width", "64"])
    return rc, out


def test_variance_writes_every_claim_and_the_expected_verdicts(variance_run, capsys):
    rc, out = variance_run
    assert rc == 0
    written = json.loads((out / "variance.json").read_text())
    rows = written["rows"]
    assert {r["claim"] for r in rows} == {"V1", "V2", "V3", "V4", "V5"}
    assert all(r["source"] == "synthetic" for r in rows)
    assert {r["dataset"] for r in rows} == {"CUB", "V4-TRAIN"}  # V4 along training: its own small setting
    for r in rows:
        assert set(r) >= {"predicted", "measured", "stderr", "z", "verdict", "expected", "confirmed", "kind"}
    of_kind = {kind: [r for r in rows if r["kind"] == kind] for kind in KINDS}
    assert all(r["verdict"] == "pass" for r in of_kind["claim"] + of_kind["identity"])
    assert all(r["verdict"] == "fail" for r in of_kind["expected-failure"])
    assert all(r["verdict"] == "observed" and r["confirmed"] is None for r in of_kind["observation"])
    # V1: d_z (2 identities), d = 32, 64, 128 (claims), the real-like observation
    v1 = [r for r in rows if r["claim"] == "V1"]
    assert [r["kind"] for r in v1] == ["identity", "identity", "claim", "claim", "claim", "observation"]
    assert all(r["supports"] == "exact 1/d" for r in v1 if r["kind"] == "claim")
    # the V1 claims resolve a 5 % error of their prediction (the share claims do too at the
    # default width, not at this test's width 64: tests/test_variance_kinds.py checks them)
    fields = set(Check.__dataclass_fields__)
    for r in v1:
        if r["kind"] == "claim":
            row = Check(**{key: (tuple(v) if key == "labels" else v) for key, v in r.items() if key in fields})
            assert not row.with_prediction(1.05 * row.predicted).passed
            assert not row.with_prediction(0.95 * row.predicted).passed
    # V3: 10 depth rows (expected failures), 3 share claims, 1 share expected failure
    v3 = [r for r in rows if r["claim"] == "V3"]
    assert sum(r["kind"] == "expected-failure" for r in v3) == 11 and sum(r["kind"] == "claim" for r in v3) == 3
    # V4: depth 1..5 at init (identities), along training (band, no-CN band, two drifts)
    v4 = [r for r in rows if r["claim"] == "V4"]
    assert [r["kind"] for r in v4].count("identity") == 11 and len(v4) == 14
    # the summary counts each kind, in the JSON and in the printed line
    counts = {kind: len(of_kind[kind]) for kind in KINDS}
    assert written["summary"]["by_kind"] == {kind: {"rows": counts[kind],
                                                    "as_expected": 0 if kind == "observation" else counts[kind]}
                                             for kind in KINDS}
    assert written["summary"]["line"] == (
        f"claims {counts['claim']}/{counts['claim']} pass, identities {counts['identity']}/{counts['identity']} "
        f"hold, expected failures {counts['expected-failure']}/{counts['expected-failure']} fail as predicted, "
        f"observations {counts['observation']}")
    assert counts == {"claim": 6, "identity": 21, "expected-failure": 12, "observation": 3}


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
