"""landscape/ end to end: Lanczos and Hutchinson on exact HVPs against a dense float64
Hessian, per-layer restriction of every probe, the trajectory probe and the comparison."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.cli import main
from analysis.model import AttributeEmbedderModel, preset_config
from analysis.training import TrainConfig, build_model, train
from landscape.comparison import LandscapeRun, TrajectoryProbe, model_config, run_landscape
from landscape.hutchinson import hutchinson_trace
from landscape.hvp import HessianOperator, gradient_norm
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Batch, Objective, parameter_names, zsl_batches


def _setup(parameters=None):
    g = torch.Generator().manual_seed(0)
    model = AttributeEmbedderModel(preset_config("cn", 4, 6, hidden_dims=(5, 4)), generator=g).double()
    batch = Batch(torch.rand(9, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (9,), generator=g),
                  torch.rand(3, 4, generator=g, dtype=torch.float64))
    objective = Objective(model, parameters=parameters)
    theta = objective.params()

    def flat_loss(x):
        return objective.loss(objective.unflatten(x), batch)

    dense = torch.func.hessian(flat_loss)(objective.flatten(theta))
    return model, batch, objective, HessianOperator(objective, [batch]), dense


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_lanczos_on_exact_hvps_matches_the_dense_hessian(which):
    _, _, objective, op, dense = _setup()
    exact = torch.linalg.eigvalsh(dense)
    result = lanczos_top_eigenvalues(op.matvec, objective.num_parameters, k=3, which=which, tol=1e-10,
                                     generator=torch.Generator().manual_seed(1))
    expected = exact.flip(0)[:3] if which == "largest" else exact[:3]
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-8, atol=1e-8 * exact.abs().max().item())


def test_every_probe_restricts_to_one_layer():
    names = parameter_names(_setup()[0], "embedder.6")  # the last Linear, V
    model, batch, objective, op, dense = _setup(names)
    assert objective.num_parameters == sum(p.numel() for n, p in model.named_parameters() if n in names)
    top = lanczos_top_eigenvalues(op.matvec, objective.num_parameters, tol=1e-10,
                                  generator=torch.Generator().manual_seed(1))
    assert top.eigenvalues[0].item() == pytest.approx(torch.linalg.eigvalsh(dense)[-1].item(), rel=1e-8)
    trace = hutchinson_trace(op.matvec, objective.num_parameters, 400, generator=torch.Generator().manual_seed(2))
    assert abs(trace.value - torch.trace(dense).item()) <= 4 * trace.stderr
    full = Objective(model)
    grads = dict(zip(full.names, full.gradient(full.params(), [batch])))
    expected = torch.cat([grads[n].flatten() for n in names]).norm().item()
    assert gradient_norm(objective, [batch]) == pytest.approx(expected, rel=1e-12)


def test_trajectory_probe_leaves_the_training_run_unchanged(tiny_data):
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, hidden_dims=(16, 16))
    cfg = TrainConfig(epochs=2, batch_size=64, progress=False)
    plain = build_model(config, 1)
    h_plain = train(plain, tiny_data, cfg)
    probed = build_model(config, 1)
    probe = TrajectoryProbe(every=3, etas=(1e-4, 5e-4), seed=7)
    h_probed = train(probed, tiny_data, cfg, on_step=probe)
    assert h_plain.loss == h_probed.loss
    for (name, a), b in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r["step"] for r in probe.records] == list(range(0, h_probed.steps, 3))
    assert all(r["top_eigenvalue"] > 0 and r["gradient_norm"] > 0 for r in probe.records)


def test_comparison_writes_json_plots_and_refuses_to_overwrite(tiny_data, tmp_path):
    run = LandscapeRun(out=tmp_path, dataset="AWA2", epochs=2, probe_every=1, slice_points=3,
                       slice_samples=50, progress=False)
    result = run_landscape(run, data=tiny_data)
    assert set(result["models"]) == {"classifier", "mlp", "cn"}
    saved = json.loads((tmp_path / "landscape.json").read_text())
    for kind, r in saved["models"].items():
        assert len(r["slice"]["losses"]) == 3 and len(r["slice"]["losses"][0]) == 3
        assert r["summary"]["probes"] == len(r["trajectory"]) >= 2
        # the slice's centre is the loss of the trained model on the slice batch: retrain
        # the same model (the probes are pure, so the run is that of a plain train) and
        # evaluate the objective on the first slice_samples trainval samples
        model = build_model(model_config(kind, tiny_data), run.seed)
        train(model, tiny_data, TrainConfig(epochs=run.epochs, seed=run.seed, device="cpu", progress=False))
        batch = zsl_batches(tiny_data)[0]
        sub = Batch(batch.features[:run.slice_samples], batch.targets[:run.slice_samples], batch.attributes)
        objective = Objective(model)
        centre = float(objective.loss(objective.params(), sub))
        assert r["slice"]["losses"][1][1] == pytest.approx(centre, rel=1e-5)
    for png in ("trajectories.png", "slices.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="already holds landscape.json"):
        run_landscape(run, data=tiny_data)


def test_landscape_options_are_checked(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown model kind"):
        LandscapeRun(out=tmp_path, models=("resnet",))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        LandscapeRun(out=tmp_path, epochs=0)
    rc = main(["landscape", "--models", "cn,svm", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown model kind(s) ['svm']" in err and len(err.strip().splitlines()) == 1


def test_model_config_names_the_three_models(tiny_data):
    classifier = model_config("classifier", tiny_data)
    assert classifier.num_classes == tiny_data.seen_classes.numel() == 6
    assert model_config("cn", tiny_data) == preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim)
    assert model_config("mlp", tiny_data).cn_layers == ()
    with pytest.raises(ValueError, match="unknown model kind 'zsl_cn'; choose one of classifier, mlp, cn"):
        model_config("zsl_cn", tiny_data)
