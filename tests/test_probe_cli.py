"""``cnzsl probe``: end to end on a tiny budget for a class and a factory, and every error path."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

import figures.probe as probe_cli
import figures.probe_battery as battery
from analysis.cli import main
from analysis.user_model import ModelContractError, check_model, resolve_model
from figures.probe import OUTPUT_FILES, run_probe
from figures.probe_battery import ProbeRun
from tests.conftest import REPO

TINY = {"epochs": 1, "init_seeds": 3, "probe_every": 2, "top_k": 2, "trace_probes": 4, "slq_probes": 2,
        "slq_steps": 6, "slice_points": 3, "probe_samples": 64, "lanczos_steps": 12, "spectrum_steps": 12}
RESIDUAL = f"{REPO}/examples/residual_layernorm.py:ResidualLayerNormEmbedder"
FACTORY = f"{REPO}/examples/batchnorm_dropout.py:batchnorm_dropout_embedder"


def _run(tmp_path, tiny_data, model, kwargs, compare=()):
    run = ProbeRun(out=tmp_path / "out", model=model, model_kwargs=kwargs, compare=compare, progress=False,
                   device="cpu", **TINY)
    return run, run_probe(run, data=tiny_data)


def _check_payload(run, payload):
    assert sorted(p.name for p in run.out.iterdir()) == sorted(OUTPUT_FILES)
    assert json.loads((run.out / "probe.json").read_text())["models"].keys() == payload["models"].keys()
    assert {"models", "settings", "data", "environment"} <= payload.keys()
    table = (run.out / "probe.md").read_text()
    for label, m in payload["models"].items():
        assert {"init", "training", "trajectory", "spectrum", "layers", "pure"} <= m.keys()
        assert m["pure"]["all"] and {"trajectory", "lanczos", "slice_2d", "profile_batch"} <= m["pure"].keys()
        sp = m["spectrum"]
        # the slice's centre is the loss at the trained point, on the same batch
        centre = sp["slice"]["losses"][1][1]
        assert centre == pytest.approx(sp["loss"], rel=1e-5)
        # per-layer gradient norms add up in squares to the total one
        assert math.fsum(v["gradient_norm"] ** 2 for v in m["layers"].values()) == pytest.approx(
            sp["gradient_norm"] ** 2, rel=1e-4)
        # Cauchy interlacing: a block's top eigenvalue cannot exceed the full Hessian's
        # (both Lanczos estimates; each within its residual of an eigenvalue)
        for group in m["layers"].values():
            assert group["top_eigenvalue"] <= sp["top_eigenvalues"][0] + sp["residuals"][0] + 1e-3
        assert len(m["trajectory"]) >= 1 and m["trajectory"][0]["step"] == 0
        assert f"| {label} | {m['parameters']:,} |" in table
        zsl = m["training"]["mean_std"]["zsl_unseen"][0]
        assert f" {zsl:.1f} |" in table


def test_probe_a_class_end_to_end(tmp_path, tiny_data):
    run, payload = _run(tmp_path, tiny_data, RESIDUAL, {"width": 16}, compare=("cn",))
    _check_payload(run, payload)
    assert list(payload["models"]) == ["ResidualLayerNormEmbedder", "cn"]
    # V4 at init for the CN preset: the prediction sits within 4 standard errors (+ eps bias)
    init = payload["models"]["cn"]["init"]
    for stat in ("class_variance", "second_moment"):
        value, stderr = init["prototypes"][stat]
        assert abs(value - init["predictions"][stat]) <= 4 * stderr + 1e-3 * init["predictions"][stat]
    assert payload["models"]["ResidualLayerNormEmbedder"]["init"]["predictions"] is None
    # V4 is compared with V's output before the output ReLU, an entry named in the payload,
    # and every layer at init names its module type
    assert init["prototypes_entry"] == "prototypes_pre_activation"
    assert payload["models"]["ResidualLayerNormEmbedder"]["init"]["prototypes_entry"] == "prototypes"
    types = {layer["name"]: layer["module_type"] for layer in init["layers"]}
    assert types["embedder.0"] == "Linear" and types["embedder.3"] == "ClassStandardization"
    assert types["prototypes_pre_activation"] == types["prototypes"] == "AttributeEmbedderModel"
    assert types["logits_ns"] == ""
    assert "after any output activation" in (run.out / "probe.md").read_text()  # the residual model has no method
    assert payload["data"]["source"] == "synthetic" and "stand-in" in (run.out / "probe.md").read_text()


def test_probe_a_factory_with_batchnorm_and_dropout_end_to_end(tmp_path, tiny_data):
    run, payload = _run(tmp_path, tiny_data, FACTORY, {"width": 16, "dropout": 0.3})
    _check_payload(run, payload)
    layers = payload["models"]["batchnorm_dropout_embedder"]["layers"]
    assert "log_temperature" in layers  # a learned scalar at the root is its own group
    again = run_probe(ProbeRun(out=tmp_path / "again", model=FACTORY, model_kwargs={"width": 16, "dropout": 0.3},
                               compare=(), progress=False, device="cpu", **TINY), data=tiny_data)
    m1, m2 = payload["models"]["batchnorm_dropout_embedder"], again["models"]["batchnorm_dropout_embedder"]
    assert m1["training"]["per_seed"][0]["final_loss"] == m2["training"]["per_seed"][0]["final_loss"]  # dropout seeded
    assert m1["spectrum"]["top_eigenvalues"] == m2["spectrum"]["top_eigenvalues"]


def test_cli_runs_the_zoo_and_refuses_to_overwrite(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(probe_cli, "load_dataset", lambda *a, **k: tiny_data)
    out = tmp_path / "zoo"
    args = ["probe", "--model", "preset:ln", "--compare", "rmsnorm", "--out", str(out), "--no-progress",
            "--device", "cpu", *[x for k, v in TINY.items() for x in (f"--{k.replace('_', '-')}", str(v))]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| ln |" in printed and "| rmsnorm |" in printed and "wrote" in printed
    assert json.loads((out / "probe.json").read_text())["settings"]["epochs"] == TINY["epochs"]
    before = (out / "probe.json").read_bytes()
    assert main(args) == 2
    assert "already holds" in capsys.readouterr().err
    assert (out / "probe.json").read_bytes() == before


@pytest.fixture
def no_training(monkeypatch):
    """Errors must come before any training: training would fail the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("training started before the model was checked")
    monkeypatch.setattr(battery, "train", forbidden)


def _user_file(tmp_path, body: str) -> str:
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


WRONG_SHAPE = """
    import torch
    from torch import nn
    class Net(nn.Module):
        def __init__(self, attribute_dim, feature_dim, generator=None):
            super().__init__()
            self.lin = nn.Linear(attribute_dim, feature_dim)
        def forward(self, features, attributes):
            return features @ self.lin(attributes).T.sum(1, keepdim=True)   # [B, 1]
    """
NAN = """
    import torch
    from torch import nn
    class Net(nn.Module):
        def __init__(self, attribute_dim, feature_dim, generator=None):
            super().__init__()
            self.lin = nn.Linear(attribute_dim, feature_dim)
        def forward(self, features, attributes):
            p = self.lin(attributes)
            return features @ (p / (p - p)).T
    """
WRONG_SIGNATURE = """
    from torch import nn
    def Net(width):
        return nn.Linear(width, width)
    """
RAISES = """
    raise RuntimeError("broken on import")
    """
NOT_A_MODULE = """
    def Net(attribute_dim, feature_dim, generator=None):
        return 42
    """


@pytest.mark.parametrize("body, name, message", [
    (WRONG_SHAPE, "Net", r"returned a torch.float32 tensor of shape \(8, 1\), expected floating logits \[8, "),
    (NAN, "Net", r"logits at init are NaN or infinite"),
    (WRONG_SIGNATURE, "Net", r"cannot be called as Net\(attribute_dim, feature_dim, generator=\.\.\.\).*contract"),
    (RAISES, "Net", r"importing model file .* failed with RuntimeError: broken on import"),
    (NOT_A_MODULE, "Net", r"returned a int, not an nn.Module"),
    (WRONG_SIGNATURE, "Missing", r"has no 'Missing'; it defines Net"),
], ids=["wrong-shape", "nan-logits", "wrong-signature", "import-fails", "not-a-module", "missing-name"])
def test_contract_errors_are_one_line_before_training(body, name, message, tmp_path, tiny_data, no_training,
                                                      monkeypatch, capsys):
    model = f"{_user_file(tmp_path, body)}:{name}"
    with pytest.raises(ModelContractError, match=message):
        run_probe(ProbeRun(out=tmp_path / "out", model=model, compare=("mlp",), progress=False, **TINY), data=tiny_data)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(probe_cli, "load_dataset", lambda *a, **k: tiny_data)
    assert main(["probe", "--model", model, "--out", str(tmp_path / "out"), "--fast"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnzsl: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--model", "examples/none.py:Net"], "model file 'examples/none.py' does not exist"),
    (["--model", "no_such_package.models:Net"], "cannot import module 'no_such_package.models'"),
    (["--model", "Net"], "is not of the form preset:NAME, PATH.py:NAME or package.module:NAME"),
    (["--model", "preset:gn"], "unknown preset 'gn'"),
    (["--model", "preset:ln", "--model-kwargs", "{\"width\": 3}"], "cannot be passed to a preset"),
    (["--model", "preset:ln", "--model-kwargs", "width=3"], "--model-kwargs must be a JSON object"),
    (["--model", "preset:ln", "--compare", "cn,gn"], "unknown preset(s) ['gn'] in --compare"),
    (["--model", "preset:ln", "--seeds", "1,a"], "--seeds must be comma-separated integers"),
    (["--model", "preset:ln", "--epochs", "0"], "epochs must be a positive integer, got 0"),
    (["--model", "preset:ln", "--init-seeds", "1"], "init_seeds must be at least 2"),
    (["--model", "preset:ln", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_options_are_one_line_errors(args, message, tmp_path, no_training, capsys):
    assert main(["probe", *args, "--out", str(tmp_path / "out"), "--fast", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused(tmp_path, no_training, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["probe", "--model", "preset:ln", "--out", str(tmp_path / "file"), "--fast"]) == 2
    assert "is a file, not a folder; pass a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


def test_model_kwargs_reach_the_builder_and_models_are_checked_on_a_copy():
    by_module = resolve_model("examples.residual_layernorm:ResidualLayerNormEmbedder", {"width": 8})
    assert by_module.label == "ResidualLayerNormEmbedder" and by_module.build(5, 7).out.in_features == 8
    spec = resolve_model(RESIDUAL, {"width": 8, "depth": 3})
    model = spec.build(5, 7, torch.Generator().manual_seed(0))
    assert len(model.blocks) == 3 and model.inp.out_features == 8
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_model(model, torch.rand(4, 7), torch.rand(6, 5))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ModelContractError, match=r"building the model failed with TypeError"):
        resolve_model(RESIDUAL, {"width": "wide"}).build(5, 7)


def test_the_battery_reads_a_learned_temperature_at_its_init_value():
    """head.gamma as a 0-dim Parameter is read detached (no warning: warnings are errors here);
    a number is kept, and a model without head.gamma gets the reference scale 5."""
    model = torch.nn.Module()
    model.head = torch.nn.Module()
    model.head.gamma = torch.nn.Parameter(torch.tensor(3.0))
    assert battery._ns_scale(model) == 3.0 and model.head.gamma.requires_grad
    del model.head.gamma
    model.head.gamma = 2
    assert battery._ns_scale(model) == 2.0 and isinstance(battery._ns_scale(model), float)
    assert battery._ns_scale(torch.nn.Linear(2, 2)) == 5.0
