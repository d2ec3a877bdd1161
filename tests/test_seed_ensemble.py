"""Many seeds at once: the vectorized ensemble equals separate runs, member by member."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from analysis.evaluation import evaluate
from analysis.model import ClassifierConfig, preset_config
from analysis.seed_ensemble import SeedEnsemble, train_seeds
from analysis.training import TrainConfig, build_model, train

SMALL = dict(hidden_dims=(16, 16))
RECIPE = TrainConfig(epochs=3, batch_size=64, lr_step_epochs=2, progress=False, device="cpu")


def _float64(data):
    return replace(data, features=data.features.double(), attributes=data.attributes.double())


def _separate_run(config, data, seed, dtype):
    model = build_model(config, seed).to(dtype)
    return model, train(model, data, replace(RECIPE, seed=seed))


@pytest.mark.parametrize("preset", ["cn", "mlp", "classifier"])
def test_members_equal_separate_runs_in_float64(tiny_data, preset):
    """Exact oracle: S separate float64 runs.  Batched matmuls round differently from single
    ones (1e-16 relative per op); over 12 Adam steps that stays below 1e-10."""
    data = _float64(tiny_data)
    config = (ClassifierConfig(data.seen_classes.numel(), data.feature_dim) if preset == "classifier"
              else preset_config(preset, data.attribute_dim, data.feature_dim, **SMALL))
    seeds = [3, 1, 7]
    models, histories = train_seeds(config, data, RECIPE, seeds, dtype=torch.float64)
    assert len(models) == len(histories) == 3
    for seed, model, history in zip(seeds, models, histories):
        ref, ref_history = _separate_run(config, data, seed, torch.float64)
        torch.testing.assert_close(torch.tensor(history.loss), torch.tensor(ref_history.loss), rtol=1e-12, atol=0)
        ours, theirs = model.state_dict(), ref.state_dict()
        assert list(ours) == list(theirs)  # CN running statistics included
        for name in theirs:
            torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-10, msg=name)
        assert history.steps == ref_history.steps and history.path == "plain"


def test_float32_members_follow_separate_runs_and_evaluate_alike(tiny_data):
    """float32: the loss trajectories agree to rounding (1e-5 relative: a few hundred
    float32 ops per loss), the parameters to Adam's rounding bound (lr per step, a
    near-zero gradient may flip sign) and the accuracies of the members are those of the
    separate runs within one test image per class."""
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    models, histories = train_seeds(config, tiny_data, RECIPE, [1, 2])
    for seed, model, history in zip([1, 2], models, histories):
        ref, ref_history = _separate_run(config, tiny_data, seed, torch.float32)
        torch.testing.assert_close(torch.tensor(history.loss), torch.tensor(ref_history.loss), rtol=1e-5, atol=0)
        for a, b in zip(model.parameters(), ref.parameters()):
            assert (a - b).abs().max() <= RECIPE.lr * history.steps
        ours, theirs = evaluate(model, tiny_data), evaluate(ref, tiny_data)
        # accuracies are fractions: one test image of the smallest unseen class moves the
        # per-class mean by at most 1 / N_min (N_min = 30 on the tiny data)
        counts = torch.bincount(tiny_data.labels[tiny_data.test_unseen])
        one_image = 1.0 / int(counts[counts > 0].min())
        assert abs(ours.zsl_unseen - theirs.zsl_unseen) <= one_image


def test_ensemble_forward_is_each_member_forward(tiny_data):
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    models = [build_model(config, s).double() for s in (1, 2, 3)]
    ensemble = SeedEnsemble(models)
    x = tiny_data.features[:20].double()
    att = tiny_data.attributes.double()
    for mode in ("train", "eval"):
        ensemble.train(mode == "train")
        for m in models:
            m.train(mode == "train")
        logits = ensemble(torch.stack([x, 2 * x, x.flip(0)]), att)
        expected = torch.stack([models[0](x, att), models[1](2 * x, att), models[2](x.flip(0), att)])
        torch.testing.assert_close(logits, expected, rtol=1e-12, atol=1e-12)
    # the members come back as separate models with the same state (parameters bitwise;
    # the running statistics both models just updated, to the rounding of batched statistics)
    for member, model in zip(ensemble.members(), models):
        assert type(member) is type(model) and not member.training
        for (k, a), b in zip(member.named_parameters(), model.parameters()):
            assert torch.equal(a, b), k
        for (k, a), b in zip(member.named_buffers(), model.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15, msg=k)
    before = [p.clone() for p in models[0].parameters()]
    with torch.no_grad():
        for p in ensemble.parameters():
            p.add_(1.0)  # the ensemble holds copies: the input models are untouched
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), before))


def test_each_member_keeps_its_own_class_statistics(tiny_data):
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    models, _ = train_seeds(config, tiny_data, replace(RECIPE, epochs=1), [1, 2])
    means = [dict(m.named_buffers())["embedder.3.running_mean"] for m in models]
    assert not torch.equal(means[0], means[1])  # different seeds, different statistics
    assert all(not torch.equal(m, torch.zeros_like(m)) for m in means)  # and they were updated


def test_bad_input_is_refused_with_the_fix(tiny_data):
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    with pytest.raises(ValueError, match="needs at least one model"):
        SeedEnsemble([])
    other = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, hidden_dims=(8, 16))
    with pytest.raises(ValueError, match="member 1 .* differs in architecture"):
        SeedEnsemble([build_model(config, 1), build_model(other, 1)])
    ensemble = SeedEnsemble([build_model(config, 1), build_model(config, 2)])
    with pytest.raises(ValueError, match=r"expected features of shape \[S=2, B, d_z\]"):
        ensemble(tiny_data.features[:4], tiny_data.attributes)
    with pytest.raises(ValueError, match=r"seeds must be distinct integers, at least one, got \[1, 1\]"):
        train_seeds(config, tiny_data, RECIPE, [1, 1])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        train_seeds(config, tiny_data, RECIPE, [])
    with pytest.raises(ValueError, match="pass dtype=torch.float32"):
        train_seeds(config, tiny_data, RECIPE, [1], dtype=torch.float64)
