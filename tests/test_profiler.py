"""Tests of variance/profiler.py: exact oracles, purity, Monte Carlo over inits, the recorder."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from analysis.class_standardization import ClassStandardization
from analysis.init import weight_variance
from analysis.model import AttributeEmbedderModel, ClassifierConfig, LinearClassifier, preset_config
from analysis.normalization import normalize_attributes
from analysis.data import ZSLData
from analysis.training import History, StepInfo, TrainConfig, train
from tests.conftest import TINY_SPEC
from variance.profiler import (
    MOMENTS,
    LayerStatistics,
    VarianceRecorder,
    profile_at_init,
    profile_layers,
    prototypes_entry,
)
from variance.prototype_variance import final_layer_variances


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run hundreds of tiny forward passes: on a busy 2-core machine, waking a
    second OpenMP thread costs milliseconds per op (about 500 times the op), so use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _oracle(h: Tensor) -> dict[str, float]:
    """The four statistics written out in float64 with explicit sums."""
    h = h.double()
    k, d = h.shape
    centered = h - h.sum(0) / k
    return {"mean": float(h.sum() / (k * d)),
            "class_variance": float(centered.square().sum() / (k * d)),
            "second_moment": float(h.square().sum() / (k * d)),
            "norm_sq": float(h.square().sum() / k)}


def _assert_stats(stats: LayerStatistics, expected: dict[str, float], rel: float = 1e-12) -> None:
    for stat in MOMENTS:
        assert getattr(stats, stat) == pytest.approx(expected[stat], rel=rel, abs=rel), stat


def _cn_model(seed: int = 0, **overrides: object) -> AttributeEmbedderModel:
    overrides = {"hidden_dims": (16, 16), **overrides}
    config = preset_config("cn", TINY_SPEC.attribute_dim, TINY_SPEC.feature_dim, **overrides)
    return AttributeEmbedderModel(config, generator=torch.Generator().manual_seed(seed))


def _attributes(k: int = 6, d: int = TINY_SPEC.attribute_dim, seed: int = 0) -> Tensor:
    raw = torch.rand(k, d, generator=torch.Generator().manual_seed(seed))
    return normalize_attributes(raw, "l2_sqrt")


class ResidualMLP(nn.Module):
    """A custom embedder, not from analysis: x + MLP(LayerNorm(x)) blocks, one shared ReLU."""

    def __init__(self, d_a: int, width: int, d_z: int, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.inp = nn.Linear(d_a, width)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.act = nn.ReLU()  # called twice per forward pass
        self.out = nn.Linear(width, d_z)
        with torch.no_grad():
            for p in self.parameters():
                if p.ndim == 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=generator)

    def prototypes(self, attributes: Tensor) -> Tensor:
        h = self.act(self.inp(attributes))
        h = h + self.act(self.fc(self.norm(h)))  # residual
        return self.out(h)


# -- exact oracles ----------------------------------------------------------------------

def test_hand_computed_linear():
    """p = W a with W, a integers: every statistic worked out by hand."""
    model = nn.Sequential(nn.Linear(3, 4, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]))
    a = torch.tensor([[1.0, 2, 0], [3, 0, 1]])  # rows of h: [1, 2, 0, 3] and [3, 0, 1, 4]
    profile = profile_layers(model, a)
    assert list(profile) == ["0", "prototypes"]  # no `prototypes` method: model(a) is called
    # mean 14/8; class variances ((x1-x2)/2)^2 = 1, 1, 1/4, 1/4; squares 40/8; norms 14, 26
    expected = {"mean": 1.75, "class_variance": 0.625, "second_moment": 5.0, "norm_sq": 20.0}
    for name, module_type in (("0", "Linear"), ("prototypes", "Sequential")):
        assert profile[name] == LayerStatistics(name, (2, 4), **expected, module_type=module_type)
    assert profile["0"].as_dict() == expected
    assert LayerStatistics.of("0", model(a).detach(), "Linear") == profile["0"]


@given(k=st.integers(2, 9), d=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_class_standardization_output(k, d, seed):
    """After S in train mode: class variance = mean_j v_j/(v_j+eps), mean 0; eval: /(1+eps)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, d), ClassStandardization(d))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(generator=g)
    a = torch.randn(k, 4, generator=g)
    h = model[0](a).detach().double()
    v, eps = h.var(0, correction=0), model[1].eps
    train_profile = profile_layers(model, a)
    _assert_stats(train_profile["0"], _oracle(h), rel=1e-6)
    assert train_profile["1"].class_variance == pytest.approx(float((v / (v + eps)).mean()), rel=1e-5)
    # float32 rounding of (h - mu) / sigma is about eps32 |h| / sigma per entry: a column
    # with a large mean and a small spread has a visibly nonzero mean after S
    rounding = torch.finfo(torch.float32).eps * float((h.abs().amax(0) / (v + eps).sqrt()).max())
    assert abs(train_profile["1"].mean) <= 8 * rounding
    # eval mode: running statistics (0, 1) -> S(h) = h / sqrt(1 + eps), rounded to float32:
    # entries move by eps32 |h|, so a column's variance by about 2 eps32 |h| sqrt(v) (visible
    # when the spread is small against the mean)
    eval_profile = profile_layers(model, a, statistics="running")
    float32_error = 4 * torch.finfo(torch.float32).eps * float(h.abs().max()) * float(v.sqrt().max())
    assert eval_profile["1"].class_variance == pytest.approx(float(v.mean()) / (1 + eps), rel=1e-5,
                                                             abs=float32_error + 1e-12)


def test_logits_match_features_times_prototypes():
    model = _cn_model()
    a = _attributes()
    z = torch.rand(5, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(1))
    profile = profile_layers(model, a, z)
    assert list(profile)[-3:] == ["prototypes", "logits_raw", "logits_ns"]
    with torch.no_grad():
        p = model.prototypes(a).double()
    _assert_stats(profile["prototypes"], _oracle(p))
    raw = z.double() @ p.T  # [B, K]; recorded class-major as [K, B]
    assert profile["logits_raw"].shape == (6, 5)
    _assert_stats(profile["logits_raw"], _oracle(raw.T))
    cos = nn.functional.normalize(z.double(), dim=1) @ nn.functional.normalize(p, dim=1).T
    _assert_stats(profile["logits_ns"], _oracle(25.0 * cos.T))  # gamma = model.head.gamma = 5
    ns = profile["logits_ns"]
    # an explicit gamma replaces the head's: second moment scales as gamma^4
    scaled = profile_layers(model, a, z, gamma=2.0)["logits_ns"]
    assert scaled.second_moment == pytest.approx(ns.second_moment * (2.0 / 5.0) ** 4, rel=1e-12)


def test_custom_module_and_repeated_calls():
    g = torch.Generator().manual_seed(3)
    model = ResidualMLP(TINY_SPEC.attribute_dim, 8, TINY_SPEC.feature_dim, generator=g)
    a = _attributes()
    profile = profile_layers(model, a, torch.rand(4, TINY_SPEC.feature_dim), gamma=5.0)
    assert list(profile) == ["inp", "act", "norm", "fc", "act#2", "out", "prototypes",
                             "logits_raw", "logits_ns"]
    with torch.no_grad():
        _assert_stats(profile["prototypes"], _oracle(model.prototypes(a)))
        _assert_stats(profile["norm"], _oracle(model.norm(model.act(model.inp(a)))), rel=1e-9)
    only = profile_layers(model, a, layers=["fc"])
    assert list(only) == ["fc", "prototypes"] and only["fc"] == profile["fc"]


def test_linear_classifier_profiles_its_weight_rows():
    """A model whose prototypes() runs no submodule: only the prototypes and logits entries."""
    model = LinearClassifier(ClassifierConfig(6, TINY_SPEC.feature_dim, gamma=3.0),
                             generator=torch.Generator().manual_seed(0))
    profile = profile_layers(model, _attributes(), torch.rand(4, TINY_SPEC.feature_dim))
    assert list(profile) == ["prototypes", "logits_raw", "logits_ns"]
    _assert_stats(profile["prototypes"], _oracle(model.weight.detach()))
    z = torch.rand(4, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(5))
    profile = profile_layers(model, _attributes(), z)
    w = model.weight.detach().double()
    cos = nn.functional.normalize(z.double(), dim=1) @ nn.functional.normalize(w, dim=1).T  # [B, K]
    _assert_stats(profile["logits_ns"], _oracle(9.0 * cos.T))  # gamma^2 = 9, class-major


# -- purity -----------------------------------------------------------------------------

def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}


def _bits(t: Tensor) -> Tensor:
    t = t.detach().reshape(-1)
    return t.view(torch.uint8) if t.is_floating_point() else t


def _assert_untouched(model: nn.Module, before: dict[str, Tensor]) -> None:
    """Parameters and buffers bitwise equal to ``before``, and no hook left anywhere."""
    after = dict([*model.named_parameters(), *model.named_buffers()])
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(_bits(after[k]), _bits(v)), k
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("statistics", ["batch", "running"])
def test_purity(training, statistics):
    model = _cn_model()
    model.train(training)
    model.embedder[0].train(not training)  # mixed flags are restored one by one
    flags = [m.training for m in model.modules()]
    a, z = _attributes(), torch.rand(3, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(2))
    before = _snapshot(model)
    rng = torch.get_rng_state()
    profile_layers(model, a, z, statistics=statistics)
    _assert_untouched(model, before)
    assert [m.training for m in model.modules()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.update_running_stats for m in model.modules() if isinstance(m, ClassStandardization))


def test_purity_batchnorm_dropout_and_user_hooks():
    """Any stateful module: BatchNorm buffers, dropout draws, and a user's own hook survive."""
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    seen = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    a = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    before = _snapshot(model)
    rng = torch.get_rng_state()
    profile = profile_layers(model, a)
    assert torch.equal(torch.get_rng_state(), rng) and seen == [(7, 6)]
    after = dict(model.named_buffers())
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[k], before[k]), k
    assert len(model[0]._forward_hooks) == 1 and all(not m._forward_hooks for m in model[1:])
    assert profile["1"].class_variance == pytest.approx(1.0, abs=1e-3)  # batch statistics


def test_hooks_removed_when_forward_raises():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cs = ClassStandardization(4)
            self.lin = nn.Linear(3, 4)

        def prototypes(self, attributes: Tensor) -> Tensor:
            self.cs(self.lin(attributes))
            raise RuntimeError("boom")

    model = Broken().eval()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        profile_layers(model, torch.randn(5, 3))
    _assert_untouched(model, before)
    assert not model.training and model.cs.update_running_stats


# -- Monte Carlo over initializations ---------------------------------------------------

def _linear_build(d_a: int, d_z: int):
    config = preset_config("mlp+eq10", d_a, d_z, hidden_dims=(), output_relu=False)
    return lambda g: AttributeEmbedderModel(config, generator=g)


def test_profile_at_init_exact_stderr_and_scaling():
    build, a = _linear_build(12, 32), _attributes()
    estimates = profile_at_init(build, a, seeds=range(5))
    per_seed = torch.tensor([profile_layers(build(torch.Generator().manual_seed(s)), a)["prototypes"].norm_sq
                             for s in range(5)], dtype=torch.float64)
    e = estimates["prototypes"]["norm_sq"]
    assert e.samples == 5 and e.value == pytest.approx(float(per_seed.mean()), rel=1e-12)
    assert e.stderr == pytest.approx(float(per_seed.std() / math.sqrt(5)), rel=1e-12)
    # stderr ~ n^(-1/2): fitted log-log slope
    ns = [16, 32, 64, 128, 256]
    se = [profile_at_init(build, a, seeds=range(n))["prototypes"]["second_moment"].stderr for n in ns]
    slope = np.polyfit(np.log(ns), np.log(se), 1)[0]
    assert abs(slope + 0.5) < 0.15, slope


def test_profile_at_init_eq10_linear_embedder():
    """p_c = V a_c + b: E[second moment] = sigma_V^2 mean ||a_c||^2 + 1/(3 d_a) (V, b independent),
    E[class variance] = sigma_V^2 (1/K) sum_c ||a_c - abar||^2 (the bias cancels), E[mean] = 0;
    for fixed z (V2): E[<z_b, p_c>^2] = ||z_b||^2 (sigma_V^2 ||a_c||^2 + 1/(3 d_a))."""
    d_a, d_z = 12, 32
    a = _attributes(k=6, d=d_a).double()
    sigma2 = weight_variance("eq10", d_a, d_z)
    expected = {
        "second_moment": sigma2 * float(a.square().sum(1).mean()) + 1.0 / (3 * d_a),
        "class_variance": sigma2 * float((a - a.mean(0)).square().sum(1).mean()),
        "mean": 0.0,
    }
    expected["norm_sq"] = d_z * expected["second_moment"]
    z = torch.rand(5, d_z, generator=torch.Generator().manual_seed(1))
    estimates = profile_at_init(_linear_build(d_a, d_z), a.float(), z, seeds=range(400))
    for stat, value in expected.items():
        e = estimates["embedder.0"][stat]
        assert abs(e.value - value) <= 4.5 * e.stderr, (stat, e, value)
        assert estimates["prototypes"][stat] == e
    logit = estimates["logits_raw"]["second_moment"]
    predicted = float(z.double().square().sum(1).mean()) * expected["second_moment"]
    assert abs(logit.value - predicted) <= 4.5 * logit.stderr, (logit, predicted)


# -- the training callback --------------------------------------------------------------

def _run(data: ZSLData, recorder: VarianceRecorder | None) -> tuple[nn.Module, History]:
    model = _cn_model(seed=7)
    history = train(model, data, TrainConfig(epochs=2, batch_size=64, progress=False, device="cpu"),
                    on_step=recorder)
    return model, history


def test_recorder_does_not_disturb_training(tiny_data):
    recorder = VarianceRecorder(every=3)
    model_a, history_a = _run(tiny_data, None)
    model_b, history_b = _run(tiny_data, recorder)
    assert history_a.loss == history_b.loss and history_a.steps == history_b.steps == 8
    _assert_untouched(model_b, _snapshot(model_a))
    assert recorder.steps.tolist() == [0, 3, 6] and recorder.epochs.tolist() == [0, 0, 1]
    arrays = recorder.as_arrays()
    assert list(arrays)[-3:] == ["prototypes", "logits_raw", "logits_ns"]
    cv = arrays["embedder.5"]["class_variance"]  # after the second S: var / (var + eps) ~ 1
    assert cv.shape == (3,) and np.all(np.abs(cv - 1.0) < 1e-3)
    step, epoch, profile = recorder.records[-1]
    assert (step, epoch) == (6, 1) and arrays["logits_raw"]["norm_sq"][-1] == profile["logits_raw"].norm_sq


# -- errors -----------------------------------------------------------------------------

def test_errors():
    model, a = _cn_model(), _attributes()
    with pytest.raises(ValueError, match=r"attributes must be a 2-D .* got \(12,\)"):
        profile_layers(model, a[0])
    with pytest.raises(ValueError, match=r"attributes must be a 2-D"):
        profile_at_init(_linear_build(12, 32), a[None], seeds=[0, 1])
    with pytest.raises(ValueError, match=r"unknown statistics 'train'.*'batch'.*'running'"):
        profile_layers(model, a, statistics="train")
    with pytest.raises(ValueError, match=r"unknown statistics"):
        VarianceRecorder(statistics="Running")
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['embedder.99'\].*embedder.0"):
        profile_layers(model, a, layers=["embedder.0", "embedder.99"])
    with pytest.raises(ValueError, match=r"\['head'\] produced no 2-D"):
        profile_layers(model, a, layers=["head"])
    with pytest.raises(ValueError, match=r"seeds must hold at least 2 seeds.*got \[\]"):
        profile_at_init(_linear_build(12, 32), a, seeds=[])
    with pytest.raises(ValueError, match=r"seeds must be distinct.*\[1, 1\]"):
        profile_at_init(_linear_build(12, 32), a, seeds=[1, 1])
    with pytest.raises(TypeError, match=r"build must return an nn.Module, got str"):
        profile_at_init(lambda g: "model", a, seeds=[0, 1])
    with pytest.raises(ValueError, match=r"model of seed 1 has layers"):
        profile_at_init(lambda g: _cn_model(hidden_dims=(16,) * (2 + int(g.initial_seed()))), a, seeds=[0, 1])
    with pytest.raises(ValueError, match=r"features must be a 2-D \[B, d_z\] matrix, got \(32,\)"):
        profile_layers(model, a, torch.rand(32))
    with pytest.raises(ValueError, match=r"features have d_z = 7 .* pass \[B, 32\]"):
        profile_layers(model, a, torch.rand(3, 7))
    with pytest.raises(ValueError, match=r"no head.gamma; pass gamma="):
        profile_layers(nn.Sequential(nn.Linear(12, 4)), a, torch.rand(3, 4))
    with pytest.raises(ValueError, match=r"gamma must be a positive finite number, got -1.0"):
        profile_layers(model, a, torch.rand(3, 32), gamma=-1.0)
    with pytest.raises(ValueError, match=r"must return prototypes \[K, d_z\], got \(6, 2, 2\)"):
        profile_layers(nn.Sequential(nn.Linear(12, 4), nn.Unflatten(1, (2, 2))), a)
    with pytest.raises(ValueError, match=r"\['logits_raw'\] clash with the profile entries"):
        profile_layers(nn.Sequential(OrderedDict(logits_raw=nn.Linear(12, 4))), a)
    with pytest.raises(ValueError, match=r"every must be a positive integer.*got 0"):
        VarianceRecorder(every=0)
    with pytest.raises(ValueError, match=r"expected a \[K, d\] activation for 'x', got shape \(3,\)"):
        LayerStatistics.of("x", torch.ones(3))


# -- the recorder passes its options through ----------------------------------------------

def _step(model: nn.Module, step: int, seed: int = 0) -> StepInfo:
    features = torch.rand(5, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(seed))
    return StepInfo(step=step, epoch=0, loss=torch.tensor(0.0), model=model, features=features,
                    targets=torch.zeros(5, dtype=torch.int64), attributes=_attributes(seed=seed))


@pytest.mark.parametrize("use_features", [True, False])
def test_recorder_profiles_exactly_what_profile_layers_returns_for_its_options(use_features):
    """layers, gamma, statistics and use_features reach profile_layers unchanged; the default
    records every step."""
    model = _cn_model()
    model.train()
    with torch.no_grad():  # running statistics far from the batch ones, so "running" differs from "batch"
        for module in model.modules():
            if isinstance(module, ClassStandardization):
                module.running_mean.fill_(3.0)
                module.running_var.fill_(0.25)
    layers = ["embedder.1", "embedder.3"]
    recorder = VarianceRecorder(layers=layers, gamma=2.5, statistics="running", use_features=use_features)
    for step in range(3):
        recorder(_step(model, step, seed=step))
    assert recorder.steps.tolist() == [0, 1, 2]
    info = _step(model, 2, seed=2)
    expected = profile_layers(model, info.attributes, info.features if use_features else None, layers=layers,
                              gamma=2.5, statistics="running")
    got = recorder.records[-1][2]
    assert list(got) == list(expected)
    assert ("logits_ns" in got) is use_features
    for name in expected:
        assert got[name] == expected[name], name
    if use_features:  # logits_ns = gamma^2 cos: gamma 2.5 scales their second moment by 2.5^4 against gamma 1
        unit = profile_layers(model, info.attributes, info.features, layers=layers, gamma=1.0,
                              statistics="running")
        assert got["logits_ns"].second_moment == pytest.approx(2.5 ** 4 * unit["logits_ns"].second_moment, rel=1e-6)
    batch = profile_layers(model, info.attributes, None, layers=layers, statistics="batch")
    assert got["embedder.3"] != batch["embedder.3"]  # the statistics option mattered


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "2"])
def test_recorder_refuses_every_that_is_not_a_positive_integer(every):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        VarianceRecorder(every=every)


def test_recorder_arrays_are_nan_where_a_layer_is_absent():
    recorder = VarianceRecorder()
    a = LayerStatistics(name="a", shape=(2, 3), mean=1.0, class_variance=2.0, second_moment=3.0, norm_sq=4.0)
    b = LayerStatistics(name="b", shape=(2, 3), mean=5.0, class_variance=6.0, second_moment=7.0, norm_sq=8.0)
    recorder.records += [(0, 0, {"a": a}), (1, 0, {"a": a, "b": b})]
    arrays = recorder.as_arrays()
    assert arrays["a"]["norm_sq"].dtype == np.float64 and arrays["a"]["norm_sq"].tolist() == [4.0, 4.0]
    assert np.isnan(arrays["b"]["mean"][0]) and arrays["b"]["mean"][1] == 5.0


def test_profile_at_init_passes_layers_gamma_and_statistics_to_every_seed():
    """Each seed's profile is ``profile_layers`` with the same ``layers``, ``gamma`` and
    ``statistics``: the mean over seeds equals the mean of those profiles exactly."""
    a = _attributes(k=5)
    z = torch.rand(4, 32, generator=torch.Generator().manual_seed(1))

    def build(g: torch.Generator) -> AttributeEmbedderModel:
        return _cn_model(int(g.initial_seed()))  # running statistics (0, 1): "running" != "batch"

    options = {"layers": ["embedder.0"], "gamma": 2.5, "statistics": "running"}
    estimates = profile_at_init(build, a, z, seeds=[3, 4], **options)
    per_seed = [profile_layers(build(torch.Generator().manual_seed(s)), a, z, **options) for s in (3, 4)]
    assert list(estimates) == list(per_seed[0]) == ["embedder.0", "prototypes_pre_activation", "prototypes",
                                                    "logits_raw", "logits_ns"]
    for name in estimates:
        for stat in MOMENTS:
            mean = (getattr(per_seed[0][name], stat) + getattr(per_seed[1][name], stat)) / 2
            assert estimates[name][stat].value == pytest.approx(mean, rel=1e-12, abs=1e-300), (name, stat)
    # the options matter: other ones give other numbers
    default = profile_at_init(build, a, z, seeds=[3, 4])
    assert "embedder.0" in default and len(default) > len(estimates)
    assert default["logits_ns"]["second_moment"].value != estimates["logits_ns"]["second_moment"].value
    batch = profile_at_init(build, a, z, seeds=[3, 4], layers=["embedder.0"], gamma=2.5)
    assert batch["prototypes"]["mean"].value != estimates["prototypes"]["mean"].value


def test_profiler_boundaries_one_class_zero_gamma_and_a_leaf_root():
    """One class (K = 1) is profiled; no class (K = 0) and gamma = 0 are refused; a model that
    is itself a leaf (a bare ``nn.Linear``) has only its "prototypes" entry, not a "" layer."""
    linear = nn.Linear(TINY_SPEC.attribute_dim, 32)
    a = _attributes(k=3)
    one = profile_layers(linear, a[:1])
    assert one["prototypes"].shape == (1, 32)
    assert list(profile_layers(linear, a)) == ["prototypes"]
    with pytest.raises(ValueError, match=r"one row per class \(K >= 1\), got \(0, "):
        profile_layers(linear, a[:0])
    with pytest.raises(ValueError, match=r"gamma must be a positive finite number, got 0"):
        profile_layers(linear, a, torch.rand(2, 32), gamma=0.0)


# -- entries explain themselves: module types, the pre-activation prototypes ---------------

def test_every_entry_names_its_module_type_in_every_output():
    """Hooked entries carry their module's class, the prototype entries the model's class,
    the logits ""; as_record is the JSON form, as_dict stays the four numbers, and the
    recorder keeps the types beside its arrays."""
    model = ResidualMLP(TINY_SPEC.attribute_dim, 8, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(3))
    profile = profile_layers(model, _attributes(), torch.rand(4, TINY_SPEC.feature_dim), gamma=5.0)
    types = {name: stats.module_type for name, stats in profile.items()}
    assert types == {"inp": "Linear", "act": "ReLU", "norm": "LayerNorm", "fc": "Linear", "act#2": "ReLU",
                     "out": "Linear", "prototypes": "ResidualMLP", "logits_raw": "", "logits_ns": ""}
    cn = profile_layers(_cn_model(), _attributes())
    assert cn["embedder.3"].module_type == "ClassStandardization"
    assert cn["prototypes_pre_activation"].module_type == cn["prototypes"].module_type == "AttributeEmbedderModel"
    record = json.loads(json.dumps(profile["norm"].as_record()))
    assert record == {"name": "norm", "module_type": "LayerNorm", "shape": [6, 8], **profile["norm"].as_dict()}
    assert list(profile["norm"].as_dict()) == list(MOMENTS)
    recorder = VarianceRecorder()
    recorder(_step(_cn_model(), 0))
    assert recorder.module_types == {name: stats.module_type for name, stats in recorder.records[0][2].items()}
    assert list(recorder.module_types) == list(recorder.as_arrays())
    assert recorder.module_types["embedder.0"] == "Linear" and recorder.module_types["logits_ns"] == ""


@pytest.mark.parametrize("output_relu", [True, False])
def test_pre_activation_prototypes_entry_is_the_output_of_v(output_relu):
    """The entry equals the hooked last Linear's statistics (the same tensor), comes right
    before "prototypes", and adds no module entry; prototypes_entry picks it."""
    model = _cn_model(output_relu=output_relu)
    before = _snapshot(model)
    profile = profile_layers(model, _attributes(), torch.rand(3, TINY_SPEC.feature_dim))
    _assert_untouched(model, before)
    names = list(profile)
    assert names[-4:] == ["prototypes_pre_activation", "prototypes", "logits_raw", "logits_ns"]
    assert not any(name.endswith("#2") for name in names)  # the second pass runs without hooks
    pre, out = profile["prototypes_pre_activation"], profile["prototypes"]
    assert pre.as_dict() == profile["embedder.6"].as_dict()  # the last Linear, V
    assert prototypes_entry(profile) == "prototypes_pre_activation"
    if output_relu:
        assert pre.mean < 0 < out.mean and out.second_moment < pre.second_moment
    else:
        assert pre.as_dict() == out.as_dict()
    # a model without the method: "prototypes" is all there is
    residual = ResidualMLP(TINY_SPEC.attribute_dim, 8, TINY_SPEC.feature_dim)
    assert prototypes_entry(profile_layers(residual, _attributes())) == "prototypes"


def test_v4_prediction_holds_for_the_pre_activation_prototypes_and_fails_after_the_relu():
    """V4 at init for the shipped CN model (output ReLU on): the prototypes' second moment
    s_V^2 d_L + s_b^2 and class variance s_V^2 d_L (CN right before V, Eq. 10) hold for the
    entry prototypes_entry picks, within 4.5 standard errors plus the eps bias of CN
    (each standardized coordinate has second moment v/(v + eps), 1 - 1e-3 or more here).
    The old comparison with "prototypes", after the ReLU, misses by about half: a silent
    failure this test makes loud."""
    config = preset_config("cn", TINY_SPEC.attribute_dim, TINY_SPEC.feature_dim, hidden_dims=(16, 16))
    assert config.output_relu
    s_v2, s_b2 = final_layer_variances(config)
    predicted = {"second_moment": s_v2 * 16 + s_b2, "class_variance": s_v2 * 16}
    estimates = profile_at_init(lambda g: AttributeEmbedderModel(config, generator=g), _attributes(k=10),
                                seeds=range(64))
    entry = prototypes_entry(estimates)
    assert entry == "prototypes_pre_activation"
    for stat, value in predicted.items():
        e = estimates[entry][stat]
        assert abs(e.value - value) <= 4.5 * e.stderr + 1e-3 * value, (stat, e, value)
        after_relu = estimates["prototypes"][stat]
        assert abs(after_relu.value - value) > 0.3 * value > 10 * after_relu.stderr, (stat, after_relu, value)


class _TemperatureHead(nn.Module):
    """An NS head whose scale is learned: gamma is a 0-dim nn.Parameter."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(gamma))

    def forward(self, features: Tensor, prototypes: Tensor) -> Tensor:
        cos = nn.functional.normalize(features, dim=1) @ nn.functional.normalize(prototypes, dim=1).T
        return self.gamma.square() * cos


def test_a_learned_temperature_is_read_as_the_ns_scale():
    """head.gamma as a 0-dim Parameter (or an explicit tensor gamma) is read detached, at each
    call; the Parameter, its grad and the model are left as they were (and the read raises
    no warning: warnings are errors here)."""
    model = _cn_model()
    model.head = _TemperatureHead(3.0)
    a, z = _attributes(), torch.rand(4, TINY_SPEC.feature_dim, generator=torch.Generator().manual_seed(5))
    before = _snapshot(model)
    learned = profile_layers(model, a, z)
    _assert_untouched(model, before)
    assert model.head.gamma.requires_grad and model.head.gamma.grad is None
    assert learned["logits_ns"] == profile_layers(model, a, z, gamma=3.0)["logits_ns"]
    assert profile_layers(model, a, z, gamma=torch.tensor(2.0))["logits_ns"] == \
        profile_layers(model, a, z, gamma=2.0)["logits_ns"]
    assert profile_layers(model, a, z, gamma=np.float32(2.0))["logits_ns"] == \
        profile_layers(model, a, z, gamma=2.0)["logits_ns"]
    # the recorder reads the temperature as it is at each recorded step
    recorder = VarianceRecorder()
    info = _step(model, 0)
    recorder(info)
    with torch.no_grad():
        model.head.gamma.fill_(1.5)
    recorder(_step(model, 1))
    first, second = recorder.records[0][2]["logits_ns"], recorder.records[1][2]["logits_ns"]
    assert second.second_moment == pytest.approx(first.second_moment * (1.5 / 3.0) ** 4, rel=1e-12)


@pytest.mark.parametrize("gamma, match", [
    (torch.ones(2), r"gamma must be a positive finite number or a one-element real tensor, got a torch.float32 "
                    r"tensor of shape \(2,\)"),
    (True, r"gamma must be a positive finite number or a one-element tensor, got True"),
    ("5", r"gamma must be a positive finite number or a one-element tensor, got '5'"),
    (torch.tensor(float("nan")), r"gamma must be a positive finite number, got nan \(from gamma\)"),
])
def test_gamma_that_is_not_one_positive_number_is_refused(gamma, match):
    with pytest.raises(ValueError, match=match):
        profile_layers(_cn_model(), _attributes(), torch.rand(3, TINY_SPEC.feature_dim), gamma=gamma)


def test_a_learned_temperature_out_of_range_names_where_it_was_read():
    model = _cn_model()
    model.head = _TemperatureHead(-1.0)
    with pytest.raises(ValueError, match=r"got -1.0 \(from AttributeEmbedderModel.head.gamma\)"):
        profile_layers(model, _attributes(), torch.rand(3, TINY_SPEC.feature_dim))


class _LogitsOnly(nn.Module):
    """Follows the training contract (forward(features, attributes) -> logits) but has no
    prototypes(): the profiler cannot reach the prototypes."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(TINY_SPEC.attribute_dim, TINY_SPEC.feature_dim)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        return features @ self.embed(attributes).T


def test_a_model_without_prototypes_gets_one_line_naming_the_contract():
    model = _LogitsOnly()
    before = _snapshot(model)
    contract = (r"_LogitsOnly has no prototypes\(\) method and its forward\(features, attributes\) does not take "
                r"the attributes alone; the profiler needs model\.prototypes\(attributes \[K, d_a\]\) -> \[K, d_z\]")
    with pytest.raises(TypeError, match=contract) as err:
        profile_layers(model, _attributes())
    assert "\n" not in str(err.value) and "model contract" in str(err.value)
    _assert_untouched(model, before)
    with pytest.raises(TypeError, match=contract):
        profile_at_init(lambda g: _LogitsOnly(), _attributes(), seeds=[0, 1])
    with pytest.raises(TypeError, match=contract):
        VarianceRecorder()(_step(model, 0))


def test_pre_activation_prototypes_of_another_shape_are_refused():
    class Wrong(nn.Sequential):
        def pre_activation_prototypes(self, attributes: Tensor) -> Tensor:
            return self[0](attributes)[:, :3]

    model = Wrong(nn.Linear(TINY_SPEC.attribute_dim, 4), nn.ReLU())
    with pytest.raises(ValueError, match=r"Wrong.pre_activation_prototypes\(attributes\) returned \(6, 3\), "
                                         r"expected the prototypes' shape \(6, 4\)"):
        profile_layers(model, _attributes())
    with pytest.raises(ValueError, match=r"the profile has no prototypes entry \(entries: embedder.0\)"):
        prototypes_entry({"embedder.0": None})


class _TupleLeaf(nn.Module):
    """A leaf whose output is not a tensor (as an RNN's (output, state))."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin, self.pair = nn.Linear(TINY_SPEC.attribute_dim, 8), _TupleLeaf()

    def forward(self, attributes: Tensor) -> Tensor:
        return self.pair(self.lin(attributes))[0]


def test_inputs_that_are_not_tensors_and_outputs_that_are_not_matrices():
    """Non-tensor attributes, features or prototypes are named in one line; a leaf with a
    non-tensor output is skipped; ``layers`` given as one string is one name."""
    a = _attributes(k=4)
    linear = nn.Linear(TINY_SPEC.attribute_dim, 32)
    with pytest.raises(ValueError, match=r"attributes must be a 2-D .* got list"):
        profile_layers(linear, a.tolist())
    with pytest.raises(ValueError, match=r"features must be a 2-D \[B, d_z\] matrix, got list"):
        profile_layers(linear, a, [[0.0] * 32], gamma=1.0)
    assert list(profile_layers(_TupleModel(), a)) == ["lin", "prototypes"]
    model = _cn_model()
    assert list(profile_layers(model, a, layers="embedder.0"))[0] == "embedder.0"
    assert [n for n in profile_layers(model, a, layers="embedder.0") if n.startswith("embedder")] == ["embedder.0"]
