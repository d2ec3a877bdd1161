"""analysis.evaluation: metrics match a hand computation; no side effects on the model."""

from __future__ import annotations

import pytest
import torch

from analysis.evaluation import ZSLEvaluation, class_logits, default_seen_logit_scale, evaluate
from analysis.metrics import ausuc, gzsl_accuracies, zsl_accuracy
from analysis.model import AttributeEmbedderModel, preset_config
from analysis.normalization import normalize_attributes


def small_model(data, seed: int = 0) -> AttributeEmbedderModel:
    config = preset_config("cn", attribute_dim=data.attribute_dim, feature_dim=data.feature_dim,
                           hidden_dims=(16, 16))
    return AttributeEmbedderModel(config, generator=torch.Generator().manual_seed(seed))


def warmed_model(data) -> AttributeEmbedderModel:
    """A model whose CN running statistics are non-trivial (one training-mode forward)."""
    model = small_model(data)
    model.train()
    with torch.no_grad():
        attributes = normalize_attributes(data.attributes[data.seen_classes])
        model(data.features[data.trainval[:8]], attributes)
    return model


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def by_hand(model, data, scale: float, norm: str = "l2_sqrt") -> ZSLEvaluation:
    model.eval()
    attributes = normalize_attributes(data.attributes, norm)
    with torch.no_grad():
        ls = model(data.features[data.test_seen], attributes)
        lu = model(data.features[data.test_unseen], attributes)
    ys, yu = data.labels[data.test_seen], data.labels[data.test_unseen]
    seen, unseen = data.seen_classes, data.unseen_classes
    gzsl = gzsl_accuracies(ls, ys, lu, yu, seen, scale)
    return ZSLEvaluation(
        zsl_unseen=zsl_accuracy(lu, yu, unseen),
        gzsl_unseen=gzsl.unseen,
        gzsl_seen=gzsl.seen,
        gzsl_harmonic=gzsl.harmonic,
        ausuc=ausuc(ls, ys, lu, yu, seen, unseen),
        seen_logit_scale=scale,
    )


@pytest.mark.parametrize("scale", [None, 1.0, 0.8])
def test_evaluate_matches_hand_computation(tiny_data, scale):
    model = warmed_model(tiny_data)
    result = evaluate(model, tiny_data, seen_logit_scale=scale)
    expected_scale = 0.95 if scale is None else scale  # "TINY" is not CUB
    assert result == by_hand(model, tiny_data, expected_scale)
    for value in (result.zsl_unseen, result.gzsl_unseen, result.gzsl_seen, result.gzsl_harmonic, result.ausuc):
        assert 0.0 <= value <= 1.0


def test_evaluate_uses_attribute_norm(tiny_data):
    model = warmed_model(tiny_data)
    result = evaluate(model, tiny_data, attribute_norm="l2", seen_logit_scale=1.0)
    assert result == by_hand(model, tiny_data, 1.0, norm="l2")


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_restores_mode_and_leaves_state_unchanged(tiny_data, training):
    model = warmed_model(tiny_data)
    model.train(training)
    before = snapshot(model)
    assert any("running_mean" in k for k in before)
    evaluate(model, tiny_data)
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(p.grad is None for p in model.parameters())


def test_default_seen_logit_scale():
    assert default_seen_logit_scale("CUB") == 1.0
    assert default_seen_logit_scale("cub") == 1.0
    assert default_seen_logit_scale("AWA1") == 0.95
    assert default_seen_logit_scale("SUN") == 0.95


def test_percent():
    result = ZSLEvaluation(zsl_unseen=0.5, gzsl_unseen=0.25, gzsl_seen=0.75, gzsl_harmonic=0.375,
                           ausuc=0.125, seen_logit_scale=0.95)
    assert result.percent() == {"zsl_unseen": 50.0, "gzsl_unseen": 25.0, "gzsl_seen": 75.0,
                                "gzsl_harmonic": 37.5, "ausuc": 12.5, "seen_logit_scale": 0.95}


@pytest.mark.parametrize("training", [True, False])
def test_class_logits_batching(tiny_data, training):
    model = warmed_model(tiny_data)
    model.train(training)
    before = snapshot(model)
    features = tiny_data.features[:37]
    attributes = normalize_attributes(tiny_data.attributes)
    whole = class_logits(model, features, attributes)
    chunked = class_logits(model, features, attributes, batch_size=5)
    assert whole.shape == (37, tiny_data.num_classes)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    assert model.training is training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not whole.requires_grad


def test_class_logits_restores_every_submodule_flag_and_updates_nothing():
    """A model with a submodule the user put in eval mode (and BatchNorm, dropout) comes
    back bitwise as it was; the logits are the eval-mode ones (dropout off)."""
    import torch
    from torch import nn

    from analysis.evaluation import class_logits

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Linear(4, 5))

        def forward(self, z, a):
            return z @ self.embed(a).T

    g = torch.Generator().manual_seed(0)
    model = Net()
    model.train()
    model.embed[1].eval()  # mixed flags
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    z, a = torch.rand(6, 5, generator=g), torch.rand(7, 3, generator=g)
    logits = class_logits(model, z, a, batch_size=4)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        expected = model(z, a)
    torch.testing.assert_close(logits, expected)
    assert not logits.requires_grad
