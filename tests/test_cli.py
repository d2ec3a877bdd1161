"""The ``cnzsl train`` command: outputs, reproducibility from model.pt, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from analysis.checkpoint import load_checkpoint
from analysis.cli import main
from analysis.datasets import load_dataset
from analysis.evaluation import evaluate
from tests.conftest import GBU_ROOT, real_att_splits

KEYS = ("zsl_unseen", "gzsl_unseen", "gzsl_seen", "gzsl_harmonic", "train_seconds")


@pytest.fixture(scope="module")
def apy_run(tmp_path_factory):
    """One short real run of the CLI on the smallest synthetic preset (APY: 20 + 12 classes)."""
    out = tmp_path_factory.mktemp("run") / "apy"
    rc = main(["train", "--dataset", "apy", "--epochs", "2", "--out", str(out), "--no-progress"])
    return rc, out


def test_train_writes_results_config_environment_and_model(apy_run, capsys):
    rc, out = apy_run
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert all(0 <= results[k] <= 100 for k in KEYS[:4]) and results["train_seconds"] > 0
    # well above chance after only 2 epochs: 12 unseen classes, chance 8.3 % (seen 22.5 %)
    assert results["zsl_unseen"] > 2 * 100 / 12 and results["gzsl_harmonic"] > 2 * 100 / 32
    assert results["data_source"] == "synthetic" and len(results["loss"]) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["preset"] == "cn" and config["run"]["train"]["epochs"] == 2
    assert config["model"]["final_init"] == "eq10" and config["data"]["num_unseen_classes"] == 12
    env = json.loads((out / "environment.json").read_text())
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_saved_model_reproduces_the_reported_numbers(apy_run):
    _, out = apy_run
    model, meta = load_checkpoint(out / "model.pt")
    scores = evaluate(model, load_dataset("APY", seed=meta["run"]["data_seed"])).percent()
    results = json.loads((out / "results.json").read_text())
    for key in KEYS[:4]:
        assert scores[key] == pytest.approx(results[key], abs=1e-9)


def test_existing_outputs_are_never_overwritten(apy_run, capsys):
    _, out = apy_run
    before = (out / "results.json").read_bytes()
    rc = main(["train", "--dataset", "APY", "--epochs", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "already holds results.json" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "results.json").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "FLO"], "unknown data set 'FLO'; choose one of AWA1, AWA2, CUB, SUN, APY"),
        (["--preset", "resnet"], "unknown preset 'resnet'; choose one of mlp, mlp+eq9, mlp+eq10, cn"),
        (["--synthetic-features"], "--synthetic-features needs --data-root"),
        (["--data-root", "/nonexistent/gbu"], "GBU root folder /nonexistent/gbu does not exist"),
        (["--seen-logit-scale", "0"], "--seen-logit-scale must be a finite positive number"),
        (["--epochs", "0"], "epochs must be a positive integer"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message, tmp_path, capsys):
    rc = main(["train", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("cnzsl: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_real_root_without_features_points_at_synthetic_features(tmp_path, capsys):
    real_att_splits("CUB")
    rc = main(["train", "--dataset", "CUB", "--data-root", str(GBU_ROOT), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "res101.mat not found" in err and "--synthetic-features" in err


def test_semi_synthetic_run_on_real_attributes(tmp_path):
    real_att_splits("SUN")
    out = tmp_path / "sun"
    rc = main(["train", "--dataset", "SUN", "--data-root", str(GBU_ROOT), "--synthetic-features",
               "--epochs", "1", "--preset", "mlp", "--out", str(out), "--no-progress", "--no-save-model"])
    assert rc == 0 and not (out / "model.pt").exists()
    results = json.loads((out / "results.json").read_text())
    assert results["data_source"] == "semi-synthetic" and results["dataset"] == "SUN"
    assert results["zsl_unseen"] > 5 * 100 / 72  # 72 unseen classes


def test_console_script_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "analysis", "train", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--dataset", "--data-root", "--synthetic-features", "--preset", "--epochs", "--seed",
                   "--device", "--out", "--overwrite", "--standardization-mode", "--seen-logit-scale"):
        assert option in out


def test_train_with_several_seeds_reports_mean_and_std_and_saves_each_model(tmp_path, capsys):
    out = tmp_path / "seeds"
    rc = main(["train", "--dataset", "APY", "--epochs", "1", "--seeds", "2,5", "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [2, 5] and [r["seed"] for r in results["per_seed"]] == [2, 5]
    for key in KEYS[:4]:
        values = [r[key] for r in results["per_seed"]]
        assert results[key] == pytest.approx(sum(values) / 2, abs=1e-12)
        assert results["std"][key] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, abs=1e-12)
    assert f"ZSL-U      {results['zsl_unseen']:6.1f} ± {results['std']['zsl_unseen']:4.1f} %" in printed
    assert "seeds 2,5 (mean ± std)" in printed
    for row in results["per_seed"]:  # each saved member reproduces its own row
        model, meta = load_checkpoint(out / f"model-seed{row['seed']}.pt")
        assert meta["seed"] == row["seed"]
        scores = evaluate(model, load_dataset("APY", seed=0)).percent()
        assert scores["zsl_unseen"] == pytest.approx(row["zsl_unseen"], abs=1e-9)
    assert not (out / "model.pt").exists()


def test_bad_seed_lists_are_refused(tmp_path, capsys):
    assert main(["train", "--dataset", "APY", "--seeds", "1,1", "--out", str(tmp_path)]) == 2
    assert "--seeds repeats seed(s) [1] in '1,1'; give each seed once" in capsys.readouterr().err
    assert main(["train", "--dataset", "APY", "--seeds", "1,x", "--out", str(tmp_path)]) == 2
    assert "--seeds must be comma-separated integers, got '1,x'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--seed", "1", "--seeds", "1,2", "--out", str(tmp_path)])
    assert "not allowed with argument --seed" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["train"], ["czsl"], ["landscape"], ["figures", "--only", "normalize_scale"], ["probe", "--model", "preset:cn"],
])
@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "tpu"])
def test_a_malformed_device_is_one_line_in_every_command(command, device, tmp_path, capsys):
    """torch.device('cuda:abc') raises a RuntimeError deep inside: every command refuses the
    name itself, in one line with exit status 2, and writes nothing."""
    assert main([*command, "--device", device, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnzsl: error: unknown device '{device}'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", [
    ["train"], ["czsl"], ["figures", "--only", "ablation_table"], ["probe", "--model", "preset:cn"],
])
@pytest.mark.parametrize(("seeds", "message"), [
    ("1,1", "--seeds repeats seed(s) [1] in '1,1'; give each seed once"),
    ("1,x", "--seeds must be comma-separated integers, got '1,x'"),
    (",", "--seeds must name at least one seed"),
    ("1,99999999999999999999", "--seeds seeds must lie in [0, 2^63 - 1], got [99999999999999999999]"),
])
def test_one_seed_parser_for_every_command(command, seeds, message, tmp_path, capsys):
    """czsl and figures used to accept '1,1' and report a zero spread from one seed counted twice."""
    assert main([*command, "--seeds", seeds, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", [
    ["train"], ["czsl"], ["landscape"], ["variance", "--dataset", "CUB"], ["figures", "--only", "normalize_scale"],
    ["probe", "--model", "preset:cn"],
])
@pytest.mark.parametrize("where", ["file", "inside_file"])
def test_an_output_folder_that_cannot_be_one_is_refused_before_any_work(command, where, tmp_path, capsys):
    """--out FILE used to train first and then fail; --out FILE/sub ended in a traceback."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker if where == "file" else blocker / "sub"
    assert main([*command, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    expected = "is a file, not a folder" if where == "file" else "lies inside the file"
    assert err.startswith("cnzsl: error: --out") and expected in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "mine"


def test_an_os_error_at_the_command_edge_is_one_line(monkeypatch, capsys):
    """A file-system refusal (permissions, disk full) is one line with exit 2, not a traceback."""
    import analysis.cli as cli

    def refused(run, report=None):
        raise PermissionError(13, "Permission denied", "/read-only/results.json")

    monkeypatch.setattr(cli, "run_train", refused)
    assert main(["train", "--dataset", "APY", "--epochs", "1", "--out", "/tmp/never-written"]) == 2
    err = capsys.readouterr().err
    assert err == "cnzsl: error: Permission denied: /read-only/results.json\n"


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--dataset", "APY", "--seen-logit-scale", "inf"], "--seen-logit-scale must be a finite positive number"),
    (["train", "--dataset", "APY", "--seed", "99999999999999999999"], "seed must be an integer in [0, 2^63 - 1]"),
    (["train", "--dataset", "APY", "--batch-size", "100000"], "--batch-size 100000 exceeds the"),
    (["train", "--dataset", "APY", "--data-root", "FILE"], "is a file, not a folder"),
    (["variance", "--dataset", "CUB", "--num-inits", "0"], "--num-inits must be at least 2"),
    (["variance", "--dataset", "CUB", "--width", "0"], "--width must be at least 1, got 0"),
    (["landscape", "--slice-points", "1"], "--slice-points must be at least 2"),
])
def test_options_are_validated_before_any_training(args, message, tmp_path, capsys, monkeypatch):
    """Each of these used to fail late (after training), with an internal message, or not at all."""
    import analysis.training as training

    def forbidden(*a, **k):
        raise AssertionError("training started before the options were checked")

    monkeypatch.setattr(training, "fit", forbidden)
    (tmp_path / "FILE").write_text("x")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cnzsl {version('cnzsl-toolkit')}"
