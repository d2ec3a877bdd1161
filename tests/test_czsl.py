"""CZSL tasks, protocol and command line (metrics and methods have their own files)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from analysis.cli import main
from analysis.czsl.experiment import format_czsl_table
from analysis.czsl.protocol import METHODS, CZSLConfig, run_czsl
from analysis.czsl.tasks import continual_split, split_classes_into_tasks


def test_tasks_are_a_seeded_near_equal_partition_of_the_classes():
    tasks = split_classes_into_tasks(717, 15, generator=torch.Generator().manual_seed(0))  # SUN
    sizes = sorted(t.numel() for t in tasks)
    assert sizes == [47] * 3 + [48] * 12
    assert torch.equal(torch.cat(tasks).sort().values, torch.arange(717))
    again = split_classes_into_tasks(717, 15, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(tasks, again))
    assert [t.numel() for t in split_classes_into_tasks(200, 10, generator=torch.Generator())] == [20] * 10  # CUB
    with pytest.raises(ValueError, match=r"num_tasks must lie in \[1, 5\]"):
        split_classes_into_tasks(5, 6, generator=torch.Generator())


def test_every_class_is_split_into_train_and_test_images(tiny_data):
    split = continual_split(tiny_data, 3, seed=4)
    assert split.num_tasks == 3
    train_labels, test_labels = tiny_data.labels[split.train], tiny_data.labels[split.test]
    assert set(train_labels.tolist()) == set(test_labels.tolist()) == set(range(9))
    assert not torch.isin(split.train, split.test).any()
    everything = torch.cat([tiny_data.trainval, tiny_data.test_seen, tiny_data.test_unseen])
    assert torch.equal(torch.cat([split.train, split.test]).sort().values, everything.sort().values)
    assert split.seen_classes(0).numel() == 0 and split.seen_classes(3).numel() == 9
    with pytest.raises(ValueError, match="no default number of tasks for TINY"):
        continual_split(tiny_data)
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
        continual_split(tiny_data, 3, test_fraction=1.0)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_is_deterministic(tiny_data, method):
    split = continual_split(tiny_data, 3, seed=0)
    config = CZSLConfig(method=method, cn=True, epochs_per_task=2, batch_size=32, seed=0)
    first, second = run_czsl(tiny_data, split, config), run_czsl(tiny_data, split, config)
    assert first.summary == second.summary
    assert len(first.evaluations) == 3
    s = first.summary.percent()
    assert all(0 <= s[k] <= 100 for k in ("mSA", "mUA", "mH", "mJA")) and math.isfinite(s["forgetting"])


def test_a_methods_rows_do_not_depend_on_the_other_methods_of_the_command(tmp_path, capsys):
    # each run is seeded by its own (method, CN, seed): `--method all` can be split across
    # commands (or machines) and the rows are the same (the authors' protocol, whose
    # multitask continues one model; the toolkit's runs through the same loop)
    def rows(methods, name, protocol="authors"):
        args = ["czsl", "--dataset", "CUB", "--method", methods, "--seeds", "1,2", "--tasks", "2",
                "--epochs-per-task", "1", "--batch-size", "512", "--protocol", protocol, "--out", str(tmp_path / name),
                "--no-progress"]
        assert main(args) == 0
        return {(r["method"], r["cn"]): r for r in json.loads((tmp_path / name / "czsl.json").read_text())["rows"]}

    together = rows("sequential,ewc,multitask", "all")
    alone = {**rows("ewc", "ewc"), **rows("multitask,sequential", "rest")}
    assert together.keys() == alone.keys()
    for key in together:
        assert together[key] == alone[key], key
    capsys.readouterr()


def test_cli_writes_the_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "czsl"
    rc = main(["czsl", "--dataset", "CUB", "--method", "sequential,agem", "--both-cn", "--seeds", "1",
               "--tasks", "2", "--epochs-per-task", "1", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "mH" in printed and "forgetting" in printed
    assert "toolkit protocol, its definitions: mUA and mAUC over t = 1..T-1" in printed
    rows = json.loads((out / "czsl.json").read_text())["rows"]
    assert {(r["method"], r["cn"]) for r in rows} == {("sequential", False), ("sequential", True),
                                                       ("agem", False), ("agem", True)}
    for r in rows:
        assert set(r) >= {"mSA", "mUA", "mH", "mAUC", "mJA", "forgetting", "mUA_from_0", "mAUC_from_0",
                          "forgetting_authors", "mSA_samples", "mUA_from_0_samples", "mH_samples"}
    assert (out / "czsl.png").read_bytes()[:4] == b"\x89PNG"
    rc = main(["czsl", "--dataset", "CUB", "--seeds", "1", "--out", str(out)])
    assert rc == 2 and "already holds czsl.json" in capsys.readouterr().err


def test_cli_runs_the_authors_protocol(tmp_path, capsys):
    out = tmp_path / "czsl"
    rc = main(["czsl", "--dataset", "CUB", "--method", "sequential", "--seeds", "1", "--tasks", "2",
               "--protocol", "authors", "--epochs-per-task", "1", "--batch-size", "512", "--out", str(out),
               "--no-progress"])  # 512: a few steps per task, the test is about the command
    printed = capsys.readouterr().out
    assert rc == 0
    assert "authors protocol · 1 epochs per task of batches of 512" in printed
    assert "authors protocol, its definitions: mUA and mAUC over t = 0..T-1" in printed
    (row,) = json.loads((out / "czsl.json").read_text())["rows"]
    config = row["per_seed"][0]["config"]
    assert (config["protocol"], config["optimizer"], config["momentum"], config["batch_size"],
            config["epochs_per_task"]) == ("authors", "sgd", 0.9, 512, 1)
    assert row["per_seed"][0]["before"]["task_accuracies"] == []
    assert row["mUA_from_0"]["mean"] == row["per_seed"][0]["summary"]["mUA_from_0"]
    assert "mSA, mUA, mH: sample means (mH: harmonic per step, then the mean)" in printed
    seed = row["per_seed"][0]
    seen = [e["seen_accuracy_samples"] for e in seed["evaluations"]]  # fractions, t = 1..T
    assert row["mSA_samples"]["mean"] == pytest.approx(100 * sum(seen) / len(seen), rel=1e-12)
    unseen = [seed["before"]["unseen_accuracy_samples"], seed["evaluations"][0]["unseen_accuracy_samples"]]
    assert row["mUA_from_0_samples"]["mean"] == pytest.approx(100 * sum(unseen) / 2, rel=1e-12)  # t = 0, 1
    assert row["mH_samples"]["mean"] == pytest.approx(100 * seed["evaluations"][0]["harmonic_samples"], rel=1e-12)


def test_the_table_shows_each_protocols_definitions():
    """Under `authors` the mSA, mUA and mH columns are the sample means, mUA and mAUC from t = 0,
    forgetting the authors'; under `toolkit` the per-class means over t = 1..T-1."""
    values = {"mSA": 1.0, "mUA": 2.0, "mH": 3.0, "mAUC": 4.0, "mJA": 5.0, "forgetting": 6.0, "mUA_from_0": 7.0,
              "mAUC_from_0": 8.0, "forgetting_authors": 9.0, "mSA_samples": 10.0, "mUA_from_0_samples": 11.0,
              "mH_samples": 12.0}
    rows = [{"method": "sequential", "cn": True, **{k: {"mean": v, "std": None} for k, v in values.items()}}]
    cells = {p: format_czsl_table(rows, p).splitlines()[-1].split() for p in ("toolkit", "authors")}
    assert cells["toolkit"] == ["sequential", "yes", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0"]
    assert cells["authors"] == ["sequential", "yes", "10.0", "11.0", "12.0", "8.0", "5.0", "9.0"]
    assert "accuracies: per-class means" in format_czsl_table(rows, "toolkit").splitlines()[0]


def test_cli_errors_are_one_line(tmp_path, capsys):
    for args, message in ((["--method", "lwf"], "unknown method(s) ['lwf']"),
                          (["--seeds", "1,x"], "--seeds must be comma-separated integers")):
        rc = main(["czsl", *args, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_same_seed_gives_the_same_table(tmp_path, capsys):
    args = ["czsl", "--dataset", "CUB", "--method", "ewc", "--seeds", "2", "--tasks", "2",
            "--epochs-per-task", "1", "--no-progress"]
    tables = []
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
        printed = capsys.readouterr().out
        assert "toolkit protocol · 1 epochs per task of batches of 256" in printed  # the default protocol
        tables.append(printed.splitlines()[1:-1])  # without the "wrote ..." line
        rows = json.loads((tmp_path / name / "czsl.json").read_text())["rows"]
        tables.append([{k: r[k] for k in ("mSA", "mUA", "mH", "mAUC", "mJA", "forgetting")} for r in rows])
    assert tables[0] == tables[2] and tables[1] == tables[3]


def _twenty_classes(name: str):
    from dataclasses import replace as replace_spec

    from analysis.synthetic import make_synthetic
    from tests.conftest import TINY_SPEC

    spec = replace_spec(TINY_SPEC, name=name, num_seen=15, num_unseen=5, trainval=300, test_seen=60, test_unseen=100)
    return make_synthetic(spec, seed=0)


def test_default_task_count_is_found_whatever_the_case_of_the_data_set_name():
    assert continual_split(_twenty_classes("cub")).num_tasks == 10  # CUB: 10 tasks
    assert continual_split(_twenty_classes("Cub")).num_tasks == 10


def test_the_split_follows_its_seed_and_holds_out_the_stated_fraction(tiny_data):
    """Another seed permutes the classes differently; each class keeps round(0.2 n) test images
    (at least 1, at most n - 1), here counted per class by hand."""
    a, b = continual_split(tiny_data, 3, seed=4), continual_split(tiny_data, 3, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.task_classes, continual_split(tiny_data, 3, seed=4).task_classes))
    assert not all(torch.equal(x, y) for x, y in zip(a.task_classes, b.task_classes))
    everything = torch.cat([tiny_data.trainval, tiny_data.test_seen, tiny_data.test_unseen])
    per_class = torch.bincount(tiny_data.labels[everything], minlength=tiny_data.num_classes)
    held_out = torch.bincount(tiny_data.labels[a.test], minlength=tiny_data.num_classes)
    expected = [min(max(1, round(0.2 * int(n))), int(n) - 1) for n in per_class]
    assert held_out.tolist() == expected and max(expected) > 1
    small = continual_split(tiny_data, 3, seed=4, test_fraction=0.01)  # round(0.01 n) = 0 -> 1 each
    assert torch.bincount(tiny_data.labels[small.test], minlength=tiny_data.num_classes).tolist() == [1] * 9


def test_czsl_config_errors_name_the_value():
    with pytest.raises(ValueError, match="unknown method 'lwf'; choose one of sequential, ewc, mas, agem, multitask"):
        CZSLConfig(method="lwf")
    assert CZSLConfig(batch_size=1, epochs_per_task=1).batch_size == 1
    with pytest.raises(ValueError, match="epochs_per_task and batch_size must be positive, got 1 and 0"):
        CZSLConfig(batch_size=0, epochs_per_task=1)
