"""Model: presets reproduce the paper's ablation rows, NS head, attributes normalization."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from analysis.class_standardization import ClassStandardization
from analysis.init import weight_variance
from analysis.model import (
    AttributeEmbedderModel,
    ClassifierConfig,
    EmbedderConfig,
    LinearClassifier,
    preset_config,
)
from analysis.normalization import NormalizeScale, normalize_attributes, normalize_scale_logits


def _layout(model: AttributeEmbedderModel) -> list[str]:
    names = []
    for m in model.embedder:
        if isinstance(m, nn.Linear):
            names.append(f"Linear({m.in_features},{m.out_features})")
        else:
            names.append("S" if isinstance(m, ClassStandardization) else type(m).__name__)
    return names


def test_cn_preset_is_the_reference_architecture():
    model = AttributeEmbedderModel(preset_config("cn", 85), generator=torch.Generator().manual_seed(0))
    assert _layout(model) == ["Linear(85,1024)", "ReLU", "Linear(1024,1024)", "S", "ReLU", "S",
                              "Linear(1024,2048)", "ReLU"]
    assert model.head.gamma == 5.0
    # Eq. (10): uniform with variance 1/(d_h d_z), i.e. bound sqrt(3/(1024*2048))
    bound = math.sqrt(3 * weight_variance("eq10", 1024, 2048))
    last = model.embedder[6].weight
    assert last.abs().max() <= bound and last.abs().max() > 0.99 * bound


@pytest.mark.parametrize(
    ("preset", "has_s", "final_bound"),
    [("mlp", False, 1 / math.sqrt(1024)), ("mlp+eq9", True, 1 / math.sqrt(1024)),
     ("mlp+eq10", False, math.sqrt(3 / (1024 * 2048))), ("cn", True, math.sqrt(3 / (1024 * 2048)))],
)
def test_ablation_presets_differ_only_in_eq9_and_eq10(preset, has_s, final_bound):
    model = AttributeEmbedderModel(preset_config(preset, 312), generator=torch.Generator().manual_seed(0))
    layout = _layout(model)
    assert ("S" in layout) == has_s
    assert [x for x in layout if x != "S"] == ["Linear(312,1024)", "ReLU", "Linear(1024,1024)", "ReLU",
                                              "Linear(1024,2048)", "ReLU"]
    w = model.embedder[-2].weight
    assert w.abs().max() <= final_bound and w.abs().max() > 0.99 * final_bound


def test_configurable_depth_placement_and_linear_embedder():
    cfg = EmbedderConfig(attribute_dim=4, feature_dim=6, hidden_dims=(5, 5, 5), cn_layers=(0, -1),
                         cn_placement="post", output_relu=False)
    assert _layout(AttributeEmbedderModel(cfg)) == [
        "Linear(4,5)", "ReLU", "S", "Linear(5,5)", "ReLU", "Linear(5,5)", "ReLU", "S", "Linear(5,6)"]
    pre = EmbedderConfig(attribute_dim=4, feature_dim=6, hidden_dims=(5,), cn_placement="pre")
    assert _layout(AttributeEmbedderModel(pre))[:3] == ["Linear(4,5)", "S", "ReLU"]
    linear = EmbedderConfig(attribute_dim=4, feature_dim=6, hidden_dims=(), cn_layers=(), bias=False,
                            output_relu=False)
    model = AttributeEmbedderModel(linear)
    a = torch.randn(3, 4)
    torch.testing.assert_close(model.prototypes(a), a @ model.embedder[0].weight.T)


def test_logits_are_gamma_squared_cosine():
    g = torch.Generator().manual_seed(0)
    cfg = preset_config("cn", 7, feature_dim=9, hidden_dims=(8, 8), gamma=3.0)
    model = AttributeEmbedderModel(cfg, generator=g).double()
    z = torch.rand(4, 9, generator=g, dtype=torch.float64)
    a = torch.rand(5, 7, generator=g, dtype=torch.float64)
    p = model.prototypes(a)
    expected = 9.0 * torch.nn.functional.cosine_similarity(z[:, None, :], p[None, :, :], dim=-1)
    torch.testing.assert_close(model(z, a), expected, rtol=1e-12, atol=1e-12)
    assert model(z, a).abs().max() <= 9.0 + 1e-12


@pytest.mark.parametrize("output_relu", [True, False])
def test_pre_activation_prototypes_are_the_output_of_v(output_relu):
    """V h + b_V, before the output ReLU (bitwise the last Linear's output); prototypes() is its
    ReLU, and without an output ReLU the two are the same tensor values."""
    cfg = preset_config("cn", 7, feature_dim=9, hidden_dims=(8, 8), output_relu=output_relu)
    model = AttributeEmbedderModel(cfg, generator=torch.Generator().manual_seed(0))
    a = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
    pre = model.pre_activation_prototypes(a)
    last = [i for i, m in enumerate(model.embedder) if isinstance(m, nn.Linear)][-1]
    assert torch.equal(pre, model.embedder[: last + 1](a))
    assert torch.equal(model.prototypes(a), pre.relu() if output_relu else pre)
    assert bool((pre < 0).any()) and bool((model.prototypes(a) < 0).any()) is not output_relu
    with pytest.raises(ValueError, match=r"attributes of shape \[K, 7\], got \(2, 4\)"):
        model.pre_activation_prototypes(torch.zeros(2, 4))


def test_ns_head_survives_a_zero_prototype():
    logits = normalize_scale_logits(torch.ones(2, 3), torch.zeros(1, 3), gamma=5.0)
    assert torch.equal(logits, torch.zeros(2, 1))


def test_traditional_classifier_uses_weight_rows_and_the_same_head():
    clf = LinearClassifier(ClassifierConfig(num_classes=4, feature_dim=6, gamma=2.0),
                           generator=torch.Generator().manual_seed(0)).double()
    z = torch.rand(3, 6, dtype=torch.float64)
    expected = 4.0 * torch.nn.functional.cosine_similarity(z[:, None], clf.weight[None], dim=-1)
    torch.testing.assert_close(clf(z, torch.zeros(4, 11)), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(clf(z), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="scores 4 classes, got attributes for 5"):
        clf(z, torch.zeros(5, 11))


def test_same_seed_same_model():
    cfg = preset_config("cn", 5, feature_dim=4, hidden_dims=(3, 3))
    a = AttributeEmbedderModel(cfg, generator=torch.Generator().manual_seed(1)).state_dict()
    b = AttributeEmbedderModel(cfg, generator=torch.Generator().manual_seed(1)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_dims": (4, 0)}, "hidden_dims must be positive"),
        ({"cn_layers": (2,)}, "cn_layers entry 2 is out of range for 2 hidden"),
        ({"cn_layers": (1, -1)}, "names a hidden layer twice"),
        ({"cn_placement": "middle"}, "cn_placement must be one of"),
        ({"final_init": "he"}, "unknown final_init 'he'"),
        ({"gamma": -1.0}, "gamma must be a positive"),
        ({"standardization_mode": "sqrt"}, "standardization_mode must be one of"),
        ({"feature_dim": 0}, "feature_dim must be positive"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbedderConfig(attribute_dim=3, hidden_dims=kwargs.pop("hidden_dims", (4, 4)), **kwargs)


def test_other_errors():
    with pytest.raises(ValueError, match="unknown preset 'resnet'; choose one of mlp, mlp"):
        preset_config("resnet", 3)
    model = AttributeEmbedderModel(preset_config("cn", 3, feature_dim=4, hidden_dims=(5, 5)))
    with pytest.raises(ValueError, match=r"attributes of shape \[K, 3\], got \(2, 4\)"):
        model.prototypes(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="num_classes and feature_dim must be positive"):
        ClassifierConfig(num_classes=0)
    with pytest.raises(ValueError, match="unknown init 'he'"):
        ClassifierConfig(num_classes=2, init="he")
    with pytest.raises(ValueError, match="gamma must be a positive finite"):
        NormalizeScale(float("nan"))
    with pytest.raises(ValueError, match="same d"):
        normalize_scale_logits(torch.zeros(2, 3), torch.zeros(2, 4), 1.0)


def test_attribute_normalizations():
    a = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(normalize_attributes(a, "l2"), torch.tensor([[0.6, 0.8, 0], [0, 0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(normalize_attributes(a, "l2_sqrt").norm(dim=1), torch.full((2,), math.sqrt(3), dtype=torch.float64))
    # per-attribute standardization across classes: column (3, 0) -> (1, -1)
    torch.testing.assert_close(normalize_attributes(a, "standardize")[:, 0], torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.equal(normalize_attributes(a, "none"), a)
    with pytest.raises(ValueError, match="unknown attribute normalization 'unit'"):
        normalize_attributes(a, "unit")
    with pytest.raises(ValueError, match=r"\[C, d_a\] matrix"):
        normalize_attributes(a[0])


def test_building_a_seeded_model_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    AttributeEmbedderModel(preset_config("cn", 5, feature_dim=4, hidden_dims=(3, 3)),
                           generator=torch.Generator().manual_seed(0))
    LinearClassifier(ClassifierConfig(num_classes=2, feature_dim=4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("name, layer", [("bn", nn.BatchNorm1d), ("ln", nn.LayerNorm), ("rmsnorm", nn.RMSNorm)])
def test_zoo_presets_differ_from_cn_only_in_the_normalization(name, layer):
    """Same seed, same Linear weights as the CN preset; the normalization sits where CN sits."""
    cn = AttributeEmbedderModel(preset_config("cn", 12, 32, hidden_dims=(16, 8)), generator=torch.Generator().manual_seed(3))
    zoo = AttributeEmbedderModel(preset_config(name, 12, 32, hidden_dims=(16, 8)), generator=torch.Generator().manual_seed(3))
    kinds = [type(m) for m in zoo.embedder]
    assert kinds == [layer if isinstance(m, ClassStandardization) else type(m) for m in cn.embedder]
    linears = [(a, b) for a, b in zip(cn.embedder, zoo.embedder) if isinstance(a, nn.Linear)]
    assert len(linears) == 3 and all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) for a, b in linears)
    assert zoo.config.final_init == "eq10" and zoo.config.normalization == name


def test_batchnorm_preset_at_init_is_class_standardization_in_training_mode():
    """BatchNorm over the class axis with weight 1, bias 0 and the biased batch variance is
    Eq. (9): the bn and cn presets give the same logits at init (float64)."""
    g = torch.Generator().manual_seed(0)
    a, z = torch.rand(9, 12, generator=g, dtype=torch.float64), torch.rand(4, 32, generator=g, dtype=torch.float64)
    models = [AttributeEmbedderModel(preset_config(p, 12, 32, hidden_dims=(16, 8)),
                                     generator=torch.Generator().manual_seed(3)).double().train() for p in ("cn", "bn")]
    torch.testing.assert_close(models[0](z, a), models[1](z, a), rtol=1e-12, atol=1e-12)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match=r"unknown normalization 'gn'; choose one of \('cn', 'bn', 'ln', 'rmsnorm'\)"):
        EmbedderConfig(12, normalization="gn")
