"""figures/loss_surface, loss_slices, spectral_density and their shared training cache
(figures/landscape_models.py), on a tiny budget of the synthetic AWA2 preset: caches,
the numbers checked against independent recomputations, the drawn files."""

from __future__ import annotations

import copy

import matplotlib.image
import numpy as np
import pytest
import torch

from analysis.training import build_model, train
from figures import landscape_models as shared
from figures import loss_slices, loss_surface, spectral_density
from figures.context import FigureContext, read_cache
from landscape.hvp import HessianOperator, gradient_norm
from landscape.top_eigenvalues import lanczos_top_eigenvalues
from landscape.objective import Batch, Objective

MODULES = (loss_surface, loss_slices, spectral_density)
SEEDS = (1, 2)
# 512 training samples = 2 steps of 256, both probed; 5 x 5 slices; 2 SLQ probes x 6 steps
TINY = {
    shared.EXTRA_KEY: {"epochs": 1, "trainval_samples": 512, "probe_every": 1, "lanczos_max_steps": 6},
    loss_surface.NAME: {"max_seeds": 2},
    loss_slices.NAME: {"points": 5, "samples": 128},
    spectral_density.NAME: {"probes": 2, "steps": 6, "samples": 128, "lanczos_max_steps": 12, "grid_points": 200},
}


def _ctx(out, **extra_overrides) -> FigureContext:
    extra = {key: {**value, **extra_overrides.get(key, {})} for key, value in TINY.items()}
    return FigureContext(out=out, fast=True, seeds=SEEDS, only_datasets=("AWA2",), progress=False, extra=extra)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """Compute and plot the three figures in one folder; record the model caches' mtimes
    right after the first figure trained them."""
    ctx = _ctx(tmp_path_factory.mktemp("landscape_figures"))
    caches, drawn = {}, {}
    caches[loss_surface.NAME] = loss_surface.compute(ctx)
    mtimes = {s: shared.model_cache_path(ctx, s).stat().st_mtime_ns for s in SEEDS}
    for module in MODULES[1:]:
        caches[module.NAME] = module.compute(ctx)
    for module in MODULES:
        drawn[module.NAME] = module.plot(ctx)
    return ctx, caches, drawn, mtimes


def test_every_figure_writes_its_cache_and_a_png_and_pdf(figures):
    ctx, caches, drawn, _ = figures
    for module in MODULES:
        assert caches[module.NAME] == ctx.cache_path(module.NAME)
        cache = read_cache(ctx, module.NAME)
        provenance = cache["provenance"]
        assert provenance["datasets"] == [{"name": "AWA2", "source": "synthetic"}]
        assert provenance["settings"]["training"]["trainval_samples"] == 512
        png, pdf = ctx.figure_paths(module.NAME)
        assert drawn[module.NAME] == [png, pdf]
        image = matplotlib.image.imread(png)
        assert image.ndim == 3 and image.shape[1] >= 800 and image.shape[0] >= 200
        assert pdf.read_bytes().startswith(b"%PDF")


def test_the_model_cache_is_reused_by_the_later_figures(figures):
    ctx, _, _, mtimes = figures
    assert {s: shared.model_cache_path(ctx, s).stat().st_mtime_ns for s in SEEDS} == mtimes
    assert shared.trained_models(ctx, SEEDS[0]).reused


def test_loss_surface_cache_holds_finite_series_per_seed_and_step(figures):
    ctx = figures[0]
    cache = read_cache(ctx, loss_surface.NAME)
    assert cache["steps"] == [0, 1] and cache["seeds"] == list(SEEDS)
    assert list(cache["models"]) == list(shared.MODELS)
    for model in cache["models"].values():
        for key in loss_surface.QUANTITIES:
            values = np.asarray(model[key])
            assert values.shape == (len(SEEDS), 2) and np.isfinite(values).all() and (values > 0).all()
            np.testing.assert_allclose(model["mean"][key], values.mean(axis=0), rtol=1e-12)
        assert model["summary"]["max_top_eigenvalue"] == np.max(model["top_eigenvalue"])
        assert model["summary"]["probes"] == 2 * len(SEEDS)


@pytest.mark.parametrize("name", shared.MODELS)
def test_recorded_probes_match_a_direct_recomputation_at_the_first_step(figures, name):
    """Replay the first training step (the run is deterministic and the probes pure), then
    recompute the gradient norm and the top eigenvalue (same Lanczos start) on its batch."""
    ctx = figures[0]
    record = {key: read_cache(ctx, loss_surface.NAME)["models"][name][key][0][0]
              for key in ("gradient_norm", "top_eigenvalue")}
    budget, data, seed = shared.training_budget(ctx), shared.landscape_data(ctx), SEEDS[0]
    first = {}

    def capture(info):
        if info.step == 0:
            first["model"] = copy.deepcopy(info.model)
            first["batch"] = Batch(info.features.clone(), info.targets.clone(), info.attributes.clone())

    train(build_model(shared.model_config(name, data.train), seed), data.train,
          shared.train_config(ctx, budget, seed), on_step=capture)
    objective = Objective(first["model"])
    hessian = HessianOperator(objective, [first["batch"]])
    assert gradient_norm(objective, [first["batch"]]) == pytest.approx(record["gradient_norm"], rel=1e-5)
    top = lanczos_top_eigenvalues(hessian.matvec, objective.num_parameters, tol=budget.lanczos_tol,
                                  max_steps=budget.lanczos_max_steps, generator=torch.Generator().manual_seed(seed + 1),
                                  dtype=objective.dtype)
    assert float(top.eigenvalues[0]) == pytest.approx(record["top_eigenvalue"], rel=1e-5)
    v = (2 * torch.randint(0, 2, (objective.num_parameters,), generator=torch.Generator().manual_seed(5)) - 1).float()
    assert float(v @ hessian.matvec(v) / (v @ v)) <= record["top_eigenvalue"]


def test_slice_origin_is_the_loss_of_the_cached_model_exactly(figures):
    ctx = figures[0]
    cache = read_cache(ctx, loss_slices.NAME)
    assert cache["alphas"] == cache["betas"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    data = shared.landscape_data(ctx)
    stored = torch.load(shared.model_cache_path(ctx, cache["seed"]), weights_only=True)
    batches = shared.evaluation_batches(data, 128)
    assert cache["samples"] == sum(b.size for b in batches) == 128
    for name in shared.MODELS:
        losses = np.asarray(cache["models"][name]["losses"])
        assert losses.shape == (5, 5) and np.isfinite(losses).all() and (losses > 0).all()
        model = build_model(shared.model_config(name, data.train), cache["seed"])
        model.load_state_dict(stored["models"][name])
        objective = Objective(model)
        with torch.no_grad():
            expected = float(objective.mean_loss(objective.params(), batches))
        assert losses[2, 2] == cache["models"][name]["origin_loss"] == expected


def test_spectral_density_is_a_probability_density_inside_the_extreme_eigenvalues(figures):
    ctx = figures[0]
    cache = read_cache(ctx, spectral_density.NAME)
    for name in shared.MODELS:
        m = cache["models"][name]
        nodes, weights = np.asarray(m["nodes"]), np.asarray(m["weights"])
        assert nodes.shape == weights.shape == (2, 6)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
        grid, density = np.asarray(m["grid"]), np.asarray(m["density"])
        assert grid.shape == density.shape == (200,) and (density >= 0).all()
        assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)
        slack = 1e-3 * max(abs(m["lambda_max"]), abs(m["lambda_min"]))  # the Lanczos tolerance
        assert m["lambda_min"] - slack <= nodes.min() and nodes.max() <= m["lambda_max"] + slack
        model = build_model(shared.model_config(name, shared.landscape_data(ctx).train), SEEDS[0])
        assert m["lambda_max"] > 0 and m["n"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_plot_without_a_cache_asks_to_compute_first(tmp_path, module):
    with pytest.raises(FileNotFoundError, match="compute it first"):
        module.plot(FigureContext(out=tmp_path, fast=True))


def test_model_cache_is_retrained_when_the_budget_changes_or_the_file_is_unreadable(tmp_path):
    tiny = {"trainval_samples": 256, "probe_every": 100, "lanczos_max_steps": 4}  # 1 step, probed
    ctx = _ctx(tmp_path, **{shared.EXTRA_KEY: tiny})
    path = shared.model_cache_path(ctx, 1)
    assert not shared.trained_models(ctx, 1).reused
    mtime = path.stat().st_mtime_ns
    again = shared.trained_models(ctx, 1)
    assert again.reused and path.stat().st_mtime_ns == mtime
    longer = _ctx(tmp_path, **{shared.EXTRA_KEY: {**tiny, "lanczos_max_steps": 5}})
    retrained = shared.trained_models(longer, 1)
    assert not retrained.reused and path.stat().st_mtime_ns != mtime
    assert retrained.key["budget"]["lanczos_max_steps"] == 5
    assert shared.trained_models(longer, 1).reused
    path.write_bytes(b"not a torch file")
    assert not shared.trained_models(longer, 1).reused


def test_stratified_subset_keeps_every_class_in_balanced_numbers():
    labels = torch.arange(7).repeat_interleave(torch.tensor([30, 5, 12, 40, 8, 9, 20]))  # [124]
    indices = torch.arange(labels.numel())
    subset = shared.stratified_subset(indices, labels, 30, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[subset], minlength=7)
    assert subset.numel() == 30 and torch.equal(subset, subset.unique()) and (counts >= 4).all()
    assert counts.max() - counts.min() <= 1
    again = shared.stratified_subset(indices, labels, 30, generator=torch.Generator().manual_seed(0))
    assert torch.equal(subset, again)
    with pytest.raises(ValueError, match="cannot keep all 7 classes"):
        shared.stratified_subset(indices, labels, 6, generator=torch.Generator().manual_seed(0))


def test_bad_budgets_and_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown budget entry \['epoch'\].*known: epochs"):
        shared.training_budget(FigureContext(out=tmp_path, extra={shared.EXTRA_KEY: {"epoch": 1}}))
    with pytest.raises(TypeError, match="must be a dict"):
        shared.training_budget(FigureContext(out=tmp_path, extra={shared.EXTRA_KEY: 3}))
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        shared.TrainingBudget(epochs=0)
    with pytest.raises(ValueError, match="trainval_samples must be a positive integer"):
        shared.TrainingBudget(trainval_samples=0)
    with pytest.raises(ValueError, match="lanczos_tol must be positive"):
        shared.TrainingBudget(lanczos_tol=0)
    with pytest.raises(ValueError, match="eta_multipliers must be positive"):
        shared.TrainingBudget(eta_multipliers=(1.0, -2.0))
    with pytest.raises(ValueError, match="points must be an odd integer"):
        loss_slices.SliceBudget(points=4)
    with pytest.raises(ValueError, match="range must be positive"):
        loss_slices.SliceBudget(range=0.0)
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        loss_slices.SliceBudget(samples=0)
    with pytest.raises(ValueError, match="probes must be a positive integer"):
        spectral_density.DensityBudget(probes=0)
    with pytest.raises(ValueError, match="sigma_fraction must be positive"):
        spectral_density.DensityBudget(sigma_fraction=-1.0)
    with pytest.raises(ValueError, match="max_seeds must be a positive integer or None"):
        loss_surface.SurfaceBudget(max_seeds=0)
    with pytest.raises(ValueError, match="unknown landscape model 'mlp'"):
        shared.model_config("mlp", None)


def test_slice_grid_is_symmetric_with_an_exact_zero():
    grid = loss_slices.slice_grid(21, 1.0)
    assert grid[10].item() == 0.0 and torch.equal(grid, -grid.flip(0)) and grid[-1].item() == 1.0


def test_loss_surface_refuses_seeds_with_different_probe_steps(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path)
    records = lambda steps: {n: [{"step": s} for s in steps] for n in shared.MODELS}  # noqa: E731
    fake = {1: records([0, 1]), 2: records([0, 2])}
    monkeypatch.setattr(shared, "landscape_data", lambda ctx, budget=None: None)
    monkeypatch.setattr(shared, "trained_models", lambda ctx, seed, **_: shared.TrainedModels(
        seed, {}, fake[seed], {}, tmp_path, True))
    with pytest.raises(RuntimeError, match="seed 2, classifier: probed steps differ"):
        loss_surface.compute(ctx)


def test_a_torn_or_stale_model_cache_is_discarded_with_the_reason(tmp_path, capsys):
    """Only the errors a bad file raises are caught, and the user is told why the cache goes."""
    import json

    import torch

    from analysis.checkpoint import state_digest
    from figures.landscape_models import _read_cache

    key = {"format": 1, "seed": 1}
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"not a checkpoint at all")
    assert _read_cache(torn, key) is None
    err = capsys.readouterr().err
    assert f"discarding the model cache {torn}: it cannot be read" in err and "retraining" in err
    stale = tmp_path / "stale.pt"
    torch.save({"key": json.dumps({"format": 1, "seed": 2}, sort_keys=True)}, stale)
    assert _read_cache(stale, key) is None
    assert "it was made with other settings" in capsys.readouterr().err
    good = tmp_path / "good.pt"
    states = {name: {"w": torch.ones(2)} for name in shared.MODELS}
    payload = {"key": json.dumps(key, sort_keys=True), "models": states,
               "state_sha256": {name: state_digest(state) for name, state in states.items()}}
    torch.save(payload, good)
    assert _read_cache(good, key).keys() == payload.keys()
    assert capsys.readouterr().err == ""
    torch.save({**payload, "state_sha256": {}}, good)  # a cache without the sha256 of its tensors
    assert _read_cache(good, key) is None
    assert "its tensors do not match the sha256 stored" in capsys.readouterr().err
    assert _read_cache(tmp_path / "missing.pt", key) is None and capsys.readouterr().err == ""
