"""``cnzsl spectrum`` (landscape/spectrum.py): one process, two under torchrun, one-line errors.

The model is a tiny CN embedder (64 -> 8 -> 8 -> 2048, 19 024 parameters) saved as
``cnzsl train`` saves its models, on the synthetic aPY preset (5 932 trainval samples), with
small budgets on its 1 483 test-seen images so that a run takes a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from analysis.checkpoint import save_checkpoint
from analysis.cli import main
from analysis.datasets import load_dataset
from analysis.model import AttributeEmbedderModel, preset_config
from landscape.hvp import gradient_norm
from landscape.objective import Objective, zsl_batches
from tests.conftest import REPO

BUDGET = ["--split", "test_seen", "--top-k", "2", "--max-steps", "16", "--trace-matvecs", "4", "--density-probes", "2",
          "--density-steps", "8", "--dtype", "float64", "--batch-size", "0", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = AttributeEmbedderModel(preset_config("cn", 64, 2048, hidden_dims=(8, 8)),
                                   generator=torch.Generator().manual_seed(0))
    run = {"dataset": "APY", "data_root": None, "synthetic_features": False, "data_seed": 0,
           "train": {"attribute_norm": "l2_sqrt"}}  # what `cnzsl train` stores
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", model, {"run": run})


@pytest.fixture(scope="module")
def single(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    rc = main(["spectrum", "--checkpoint", str(checkpoint), "--per-layer", *BUDGET, "--out", str(out)])
    return rc, out


def test_one_process_writes_the_spectrum_and_its_figure(single, checkpoint, capsys):
    rc, out = single
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == ["spectrum.json", "spectrum.png"]
    result = json.loads((out / "spectrum.json").read_text())
    assert result["data"]["samples"] == 1483 and result["data"]["split"] == "test_seen"
    assert result["distributed"] == {"world_size": 1, "backend": None, "shard_sizes": [1483]}
    top, residuals = result["top_eigenvalues"], result["residuals"]
    assert len(top) == 2 and top[0] >= top[1] and result["lanczos_matvecs"] <= 16
    assert result["lanczos_converged"] == all(r <= 1e-3 * abs(v) for v, r in zip(top, residuals))
    assert result["trace"]["method"] == "hutchinson" and result["trace"]["num_matvecs"] == 4
    assert len(result["density"]["nodes"]) == 2 and result["num_hvps"] > 0


def test_the_gradient_norm_is_the_full_data_one(single, checkpoint):
    """The same number as the Python API on every trainval sample in one batch."""
    _, out = single
    result = json.loads((out / "spectrum.json").read_text())
    model = AttributeEmbedderModel(preset_config("cn", 64, 2048, hidden_dims=(8, 8)),
                                   generator=torch.Generator().manual_seed(0)).double()
    batches = [b.to(dtype=torch.float64) for b in zsl_batches(load_dataset("APY"), split="test_seen")]
    assert math.isclose(result["gradient_norm"], gradient_norm(Objective(model), batches), rel_tol=1e-12)
    layers = result["layers"]
    assert list(layers) == ["embedder.0", "embedder.2", "embedder.6"]
    assert math.isclose(sum(layer["gradient_norm"] ** 2 for layer in layers.values()),
                        result["gradient_norm"] ** 2, rel_tol=1e-12)
    assert sum(layer["parameters"] for layer in layers.values()) == 19024


@pytest.mark.slow  # about 15 s on two shared cores, most of it starting torchrun and two Python processes
def test_two_processes_under_torchrun_give_the_same_spectrum(single, checkpoint, tmp_path):
    """torchrun --standalone --nproc-per-node 2: gloo, rank-strided shards, rank 0 alone prints
    and writes; every number equals the single-process run to float64 round-off."""
    out = tmp_path / "sharded"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "analysis",
         "spectrum", "--checkpoint", str(checkpoint), "--per-layer", *BUDGET, "--timeout", "120", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1 and "2 processes (gloo, shards of 741-742 samples)" in proc.stdout
    sharded = json.loads((out / "spectrum.json").read_text())
    one = json.loads((single[1] / "spectrum.json").read_text())
    assert sharded["distributed"]["shard_sizes"] == [742, 741] and sharded["num_hvps"] == one["num_hvps"]
    close = lambda a, b: torch.testing.assert_close(torch.tensor(a, dtype=torch.float64),  # noqa: E731
                                                   torch.tensor(b, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    for key in ("loss", "gradient_norm", "top_eigenvalues"):
        close(sharded[key], one[key])
    close(sharded["trace"]["value"], one["trace"]["value"])
    close(sharded["density"]["nodes"], one["density"]["nodes"])
    close(sharded["density"]["weights"], one["density"]["weights"])
    for group, layer in one["layers"].items():
        close(sharded["layers"][group]["top_eigenvalues"], layer["top_eigenvalues"])
        close(sharded["layers"][group]["trace"]["value"], layer["trace"]["value"])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["spectrum", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 2
    assert _error(capsys).startswith(f"cnzsl: error: no checkpoint at {tmp_path / 'none.pt'}; train one with")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("content", "message"), [
    (b"not torch", "is not a checkpoint (torch cannot read it"),
    (None, "is not a cnzsl-checkpoint/1 file (found format None)"),
])
def test_a_foreign_checkpoint_is_one_line(content, message, tmp_path, capsys):
    path = tmp_path / "foreign.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    assert main(["spectrum", "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_existing_results_are_never_overwritten(single, checkpoint, capsys):
    _, out = single
    before = (out / "spectrum.json").read_bytes()
    assert main(["spectrum", "--checkpoint", str(checkpoint), *BUDGET, "--out", str(out)]) == 2
    assert "already holds spectrum.png, spectrum.json; choose another --out folder or pass --overwrite" in _error(capsys)
    assert (out / "spectrum.json").read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (["--top-k", "0"], "--top-k must be an integer >= 1, got 0"),
    (["--timeout", "0"], "--timeout must be a positive number of seconds, got 0.0"),
    (["--trace-method", "hutchpp", "--trace-matvecs", "3"], "--trace-matvecs must be an integer >= 4, got 3"),
    (["--dataset", "CUB"], "embeds 64-d attributes into 2048-d features, but the data has 312-d attributes"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_options_are_one_line_before_any_product(args, message, checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["spectrum", "--checkpoint", str(checkpoint), *BUDGET, *args, "--out", str(out)]) == 2
    assert message in _error(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_a_researchers_model_saved_with_its_builder(tmp_path, monkeypatch, capsys):
    """A model of the contract (examples/residual_layernorm.py) saved with its builder and the
    data it was trained on: the command rebuilds it and probes it like a preset."""
    from analysis.user_model import resolve_model

    monkeypatch.chdir(REPO)
    spec = resolve_model("examples/residual_layernorm.py:ResidualLayerNormEmbedder", {"width": 8, "depth": 1})
    model = spec.build(64, 2048, generator=torch.Generator().manual_seed(0))
    path = save_checkpoint(tmp_path / "model.pt", model, {"run": {"dataset": "APY"}}, builder=spec, dims=(64, 2048))
    out = tmp_path / "out"
    assert main(["spectrum", "--checkpoint", str(path), *BUDGET, "--out", str(out)]) == 0
    result = json.loads((out / "spectrum.json").read_text())
    assert result["model"]["type"] == "ResidualLayerNormEmbedder" and len(result["top_eigenvalues"]) == 2
    assert "ResidualLayerNormEmbedder" in capsys.readouterr().out


@pytest.mark.parametrize(("out", "device", "message"), [
    ("out", "cuda:abc", "unknown device 'cuda:abc'"),
    ("out", "tpu", "unknown device 'tpu'"),
    ("file", "cpu", "is a file, not a folder"),
    ("file/sub", "cpu", "lies inside the file"),
])
def test_the_bad_input_every_command_refuses(out, device, message, checkpoint, tmp_path, capsys):
    """The cases of tests/test_cli.py's parametrized bad-input tests, for spectrum: one line,
    exit 2, nothing written."""
    (tmp_path / "file").write_text("mine")
    assert main(["spectrum", "--checkpoint", str(checkpoint), "--device", device, "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "mine"
