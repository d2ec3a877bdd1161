"""V2-V4: batched inits equal the model, and the prototype/logit variance claims hold
(or, for V3, fail) with tolerances from the returned standard errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.class_standardization import frozen_class_statistics
from analysis.init import weight_variance
from analysis.model import AttributeEmbedderModel, EmbedderConfig
from variance.batched_embedder import batched_embedder_forward, draw_embedder, iter_draws
from variance.estimate import check
from variance.prototype_variance import (
    check_v2,
    check_v3,
    check_v4,
    final_layer_variances,
    measure_prototype_moments,
    predicted_hidden_norm_sq,
    predicted_prototype_variance,
)

K_SIGMA = 4.5


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _attributes(kind: str, k: int, d_a: int, g: torch.Generator) -> torch.Tensor:
    """Attribute matrices of the kinds the claims must survive."""
    x = torch.randn(k, d_a, generator=g, dtype=torch.float64)
    if kind == "nonnegative":
        return x.relu() + 0.01
    if kind == "heavy_tailed":  # log-normal: heavy right tail
        return torch.exp(2.0 * x)
    if kind == "correlated":
        mix = torch.randn(d_a, d_a, generator=g, dtype=torch.float64)
        return x @ mix + 3.0
    if kind == "low_rank":
        return torch.randn(k, 2, generator=g, dtype=torch.float64) @ torch.randn(2, d_a, generator=g, dtype=torch.float64)
    raise ValueError(kind)


@pytest.mark.parametrize("cfg", [
    EmbedderConfig(7, 9, hidden_dims=(6, 5), cn_layers=(0, -1), output_relu=False),
    # no CN after the first layer, whose bias CN would remove: the bias's sign shows
    EmbedderConfig(7, 9, hidden_dims=(6,), cn_layers=(), output_relu=False),
    EmbedderConfig(7, 9, hidden_dims=(), cn_layers=(), output_relu=False),
    # the authors' unbiased variance (K - 1) in both the statistics and the standardization
    EmbedderConfig(7, 9, hidden_dims=(6, 5), cn_layers=(0, -1), output_relu=False, standardization_mode="notebook"),
], ids=["cn", "no-cn", "linear", "notebook"])
def test_batched_forward_equals_the_model_with_the_same_parameters(cfg):
    draw = draw_embedder(cfg, 3, dtype=torch.float64, generator=_gen(0))
    att = torch.rand(4, 7, dtype=torch.float64, generator=_gen(1))
    out = batched_embedder_forward(draw, att)
    for s in range(3):
        model = AttributeEmbedderModel(cfg).double().train()
        linears = [m for m in model.embedder if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            for lin, layer in zip(linears, draw.layers):
                lin.weight.copy_(layer.weight[s])
                lin.bias.copy_(layer.bias[s])
        with frozen_class_statistics(model):
            torch.testing.assert_close(out.prototypes[s], model.prototypes(att), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scheme", ["pytorch", "eq10", "kaiming_fan_in"])
def test_drawn_weights_have_the_scheme_variance(scheme):
    cfg = EmbedderConfig(30, 40, hidden_dims=(20,), final_init=scheme, hidden_init=scheme)
    draw = draw_embedder(cfg, 50, dtype=torch.float64, generator=_gen(2))
    w = draw.layers[-1].weight
    target = weight_variance(scheme, 20, 40)
    # mean of w^2 over 40000 i.i.d. uniform entries; Var[w^2] = (9/5 - 1) target^2
    assert abs(w.pow(2).mean().item() - target) <= K_SIGMA * math.sqrt(0.8 / w.numel()) * target
    assert draw.layers[-1].bias.abs().max() <= 1 / math.sqrt(20)


def test_chunks_reuse_one_buffer_and_cover_every_init():
    cfg = EmbedderConfig(3, 4, hidden_dims=(2,))
    sizes = [d.num_inits for d in iter_draws(cfg, 10, chunk=4, generator=_gen(0))]
    assert sizes == [4, 4, 2]
    with pytest.raises(ValueError, match="chunk must be at least 1"):
        next(iter_draws(cfg, 3, chunk=0))
    with pytest.raises(ValueError, match="num_inits must be at least 1"):
        draw_embedder(cfg, 0)
    assert [d.num_inits for d in iter_draws(cfg, 3, chunk=1, generator=_gen(0))] == [1, 1, 1]  # the bound
    four = draw_embedder(cfg, 4, generator=_gen(0))
    with pytest.raises(ValueError, match="out holds 4 draws of another config; pass out=None"):
        draw_embedder(cfg, 3, out=four)  # same config, other count
    with pytest.raises(ValueError, match="out holds 4 draws of another config"):
        draw_embedder(EmbedderConfig(3, 4, hidden_dims=(5,)), 4, out=four)  # same count, other config


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), d_a=st.integers(2, 48), scale=st.floats(1e-2, 1e2),
       scheme=st.sampled_from(["pytorch", "xavier", "eq10", "kaiming_fan_out"]), bias=st.booleans())
def test_v2_linear_embedder_variance_is_sigma2_times_attribute_norm(seed, d_a, scale, scheme, bias):
    g = _gen(seed)
    att = torch.rand(6, d_a, generator=g, dtype=torch.float64) * scale
    z = torch.rand(8, 32, generator=g, dtype=torch.float64)
    cfg = EmbedderConfig(d_a, 32, hidden_dims=(), cn_layers=(), final_init=scheme, bias=bias)
    for row in check_v2(cfg, att.float(), z.float(), num_inits=400, k=K_SIGMA, generator=g):
        assert row.passed, row


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), depth=st.integers(1, 5), width=st.integers(8, 48),
       kind=st.sampled_from(["nonnegative", "heavy_tailed", "correlated", "low_rank"]),
       placement=st.sampled_from(["both", "post"]))
def test_v4_cn_variance_is_independent_of_depth_width_and_attributes(seed, depth, width, kind, placement):
    g = _gen(seed)
    att = _attributes(kind, 12, 10, g).float()
    z = torch.rand(8, 24, generator=g)
    cfg = EmbedderConfig(10, 24, hidden_dims=(width,) * depth, cn_layers=(-1,), cn_placement=placement,
                         final_init="eq10", bias=False)
    rows = check_v4(cfg, att, z, num_inits=300, k=K_SIGMA, generator=g)
    for row in rows:
        assert row.passed, row
    assert rows[0].predicted == pytest.approx(1 / 24, rel=1e-12)  # 1/d_z exactly


def test_a_wrong_prediction_fails_the_same_check():
    g = _gen(0)
    att = _attributes("nonnegative", 12, 10, g).float()
    cfg = EmbedderConfig(10, 24, hidden_dims=(16, 16), final_init="eq10", bias=False)
    right = check_v4(cfg, att, num_inits=300, generator=_gen(1))
    wrong = check_v4(cfg, att, num_inits=300, generator=_gen(1), assumed_final_init="eq10_relu")
    assert right[0].passed and not wrong[0].passed
    assert wrong[0].measured == right[0].measured  # same measurement, other prediction


def test_v3_deep_embedders_without_cn_depart_from_the_linear_value():
    g = _gen(0)
    att = _attributes("nonnegative", 20, 16, g)
    att = (att / att.norm(dim=1, keepdim=True) * 4.0).float()  # l2_sqrt: ||a||^2 = d_a
    for depth in (1, 3):
        cfg = EmbedderConfig(16, 32, hidden_dims=(64,) * depth, cn_layers=(), final_init="eq10", bias=False)
        rows = check_v3(cfg, att, num_inits=200, generator=g)
        assert rows[0].predicted == pytest.approx(1 / 32, rel=1e-6)  # the linear embedder's value
        assert not rows[0].passed and abs(rows[0].z) > 10


@pytest.mark.parametrize(("widths", "scheme"), [((64,), "pytorch"), ((48, 64, 32), "pytorch"), ((40, 40), "xavier")])
def test_no_cn_hidden_norm_follows_the_exact_relu_recursion(widths, scheme):
    g = _gen(5)
    att = _attributes("correlated", 20, 16, g).float()
    cfg = EmbedderConfig(16, 32, hidden_dims=widths, cn_layers=(), hidden_init=scheme, final_init="eq10", bias=False)
    n_a = float(att.double().pow(2).sum(dim=1).mean())
    n_h = predicted_hidden_norm_sq(cfg, n_a)
    moments = measure_prototype_moments(cfg, att, num_inits=400, generator=g)
    assert check("V3", "n_h", n_h, moments.input_norm_sq, k=K_SIGMA).passed, (n_h, moments.input_norm_sq)
    s_v2, _ = final_layer_variances(cfg)
    assert check("V3", "P", predicted_prototype_variance(s_v2, n_h), moments.prototype, k=K_SIGMA).passed
    if scheme == "pytorch" and len(set(widths)) == 1:  # equal widths: a factor 1/6 per layer
        assert n_h == pytest.approx(n_a * widths[0] / 16 / 6 ** len(widths), rel=1e-12)


def test_hidden_norm_recursion_refuses_biases_and_cn():
    assert predicted_hidden_norm_sq(EmbedderConfig(4, 6, hidden_dims=(), cn_layers=(), bias=False), 2.5) == 2.5
    with pytest.raises(ValueError, match="needs a bias-free embedder without CN"):
        predicted_hidden_norm_sq(EmbedderConfig(4, 6, hidden_dims=(3,), cn_layers=(), bias=True), 1.0)
    with pytest.raises(ValueError, match="needs a bias-free embedder without CN"):
        predicted_hidden_norm_sq(EmbedderConfig(4, 6, hidden_dims=(3,), bias=False), 1.0)
    with pytest.raises(ValueError, match="attribute_norm_sq must be >= 0"):
        predicted_hidden_norm_sq(EmbedderConfig(4, 6, hidden_dims=(3,), cn_layers=(), bias=False), -1.0)


def test_v4_with_biases_includes_the_bias_variance():
    cfg = EmbedderConfig(10, 24, hidden_dims=(16,), final_init="eq10", bias=True)
    rows = check_v4(cfg, _attributes("correlated", 12, 10, _gen(3)).float(), num_inits=300, generator=_gen(4))
    assert rows[0].passed and rows[0].predicted == pytest.approx(1 / 24 + 1 / (3 * 16), rel=1e-12)


def test_errors():
    att = torch.rand(5, 4)
    with pytest.raises(ValueError, match="V2 is about linear embedders"):
        check_v2(EmbedderConfig(4, 6, hidden_dims=(3,)), att)
    with pytest.raises(ValueError, match="V4 needs class standardization directly before the last layer"):
        check_v4(EmbedderConfig(4, 6, hidden_dims=(3,), cn_layers=()), att)
    with pytest.raises(ValueError, match="V4 needs class standardization"):
        check_v4(replace(EmbedderConfig(4, 6, hidden_dims=(3,)), cn_placement="pre"), att)
    with pytest.raises(ValueError, match=r"features must be \[B, 6\]"):
        measure_prototype_moments(EmbedderConfig(4, 6, hidden_dims=(), cn_layers=()), att, torch.rand(2, 5),
                                  num_inits=2)
    with pytest.raises(ValueError, match=r"expected attributes of shape \[K, 4\]"):
        batched_embedder_forward(draw_embedder(EmbedderConfig(4, 6), 2), torch.rand(3, 5))


def test_same_generator_seed_same_draws_another_seed_other_draws_and_fewer_inits_than_streams():
    cfg = EmbedderConfig(5, 6, hidden_dims=(4,))
    a = draw_embedder(cfg, 3, generator=_gen(7))
    b = draw_embedder(cfg, 3, generator=_gen(7))
    assert all(torch.equal(x.weight, y.weight) and torch.equal(x.bias, y.bias) for x, y in zip(a.layers, b.layers))
    c = draw_embedder(cfg, 3, generator=_gen(8))
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)
    one = draw_embedder(cfg, 1, generator=_gen(7))  # fewer inits than random streams
    assert torch.isfinite(one.layers[-1].weight).all() and one.layers[-1].weight.abs().max() > 0


def test_vectorized_embedder_refuses_other_normalizations():
    """The vectorized Monte Carlo implements class standardization only: another layer of the
    zoo would be silently replaced by CN, so it is refused with the way out."""
    from variance.batched_embedder import draw_embedder

    with pytest.raises(ValueError, match=r"normalization='ln'.*variance.profile_at_init"):
        draw_embedder(EmbedderConfig(12, 32, hidden_dims=(8,), normalization="ln"), 2)


def test_drawing_leaves_no_thread_behind():
    """The parallel draw used a module-level thread pool that was never shut down."""
    import threading

    draw_embedder(EmbedderConfig(5, 6, hidden_dims=(4,)), 3, generator=_gen(0))
    assert not [t for t in threading.enumerate() if t.name.startswith("variance-draw")]


@pytest.mark.parametrize("claim", ["v2", "v3", "v4"])
def test_checks_measure_with_the_features_generator_and_inits_they_are_given(claim):
    """Each check's rows are the moments ``measure_prototype_moments`` returns for the same
    features, generator seed and number of inits (so none of them is dropped on the way),
    with the documented defaults: 1000 inits, k = 4, and the setting named after the check."""
    g = _gen(11)
    att = _attributes("nonnegative", 6, 5, g).float()
    z = torch.rand(7, 8, generator=g)
    cfg = {"v2": EmbedderConfig(5, 8, hidden_dims=(), cn_layers=(), bias=False),
           "v3": EmbedderConfig(5, 8, hidden_dims=(6,), cn_layers=(), bias=False),
           "v4": EmbedderConfig(5, 8, hidden_dims=(6,), bias=False)}[claim]
    run = {"v2": check_v2, "v3": check_v3, "v4": check_v4}[claim]
    setting = {"v2": "linear", "v3": "depth 1, no CN", "v4": "depth 1, CN"}[claim]
    for num_inits, kwargs in ((40, {"num_inits": 40}), (1000, {})):
        rows = run(cfg, att, z, generator=_gen(3), **kwargs)
        moments = measure_prototype_moments(cfg, att, z, num_inits=num_inits, generator=_gen(3))
        assert [r.setting for r in rows] == [f"Var[p] {setting}", f"Var[<z,p>] {setting}"]
        assert rows[0].measured == moments.prototype.value and rows[0].stderr == moments.prototype.stderr
        assert rows[1].measured == moments.logit.value and rows[1].stderr == moments.logit.stderr
        assert all(r.k == 4.0 for r in rows)
        assert all(r.claim == claim.upper() for r in rows)
        if claim != "v4":  # exact predictions: no bias bound (V4's is tested below)
            assert all(r.bias_bound == 0.0 for r in rows)
    assert run(cfg, att, generator=_gen(3), num_inits=40, k=2.5, setting="mine")[0].setting == "Var[p] mine"
    assert [r.k for r in run(cfg, att, z, generator=_gen(3), num_inits=40, k=2.5)] == [2.5, 2.5]  # both rows
    assert [r.k for r in run(cfg, att, generator=_gen(3), num_inits=40, k=2.5)] == [2.5]  # no features: one row


@pytest.mark.parametrize("n_a", [0.0, 0.5])
def test_hidden_norm_recursion_accepts_every_non_negative_attribute_norm(n_a):
    cfg = EmbedderConfig(4, 6, hidden_dims=(3,), cn_layers=(), hidden_init="pytorch", bias=False)
    assert predicted_hidden_norm_sq(cfg, n_a) == pytest.approx(n_a * 3 * weight_variance("pytorch", 4, 3) / 2,
                                                               abs=0.0, rel=1e-15)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_v4_bias_bound_is_the_final_weight_variance_times_the_standardization_gap_at_its_eps(eps):
    """``bias_bound = s_V^2 max_init sum_j eps / (v_j + eps)`` for the eps passed (0 at eps 0)."""
    att = _attributes("nonnegative", 6, 5, _gen(2)).float()
    cfg = EmbedderConfig(5, 8, hidden_dims=(6,), bias=False)
    z = torch.rand(7, 8, generator=_gen(4))
    rows = check_v4(cfg, att, z, num_inits=30, eps=eps, generator=_gen(9))
    moments = measure_prototype_moments(cfg, att, z, num_inits=30, eps=eps, generator=_gen(9))
    s_v2, _ = final_layer_variances(cfg)
    assert rows[0].bias_bound == s_v2 * moments.standardization_gap
    # the logit row's bound: m_z = E||z||^2 times the prototype row's
    assert rows[1].bias_bound == pytest.approx(moments.feature_norm_sq * s_v2 * moments.standardization_gap,
                                               rel=1e-15, abs=0.0)
    assert (rows[0].bias_bound == 0.0) is (eps == 0.0)


def test_predicted_variances_by_hand():
    """P = s_V^2 n_h + s_b^2 and L = m_z P, with s_b^2 = 0 by default."""
    from variance.prototype_variance import predicted_raw_logit_variance

    assert predicted_prototype_variance(2.0, 3.0) == 6.0
    assert predicted_prototype_variance(2.0, 3.0, 0.5) == 6.5
    assert predicted_raw_logit_variance(2.0, 3.0, 5.0) == 30.0
    assert predicted_raw_logit_variance(2.0, 3.0, 5.0, 0.5) == 32.5


def test_v3_predicts_with_the_linear_embedder_of_its_config_even_when_it_has_cn():
    """V3's prediction is the *linear* embedder's (no hidden layers, hence no CN layers) with
    the same last-layer scheme, whatever the deep config holds: a config with CN still gets
    ``s_V^2 mean ||a||^2``."""
    att = _attributes("nonnegative", 6, 5, _gen(5)).float()
    cfg = EmbedderConfig(5, 8, hidden_dims=(6,), bias=False)  # CN after its hidden layer
    rows = check_v3(cfg, att, num_inits=20, generator=_gen(1))
    s_v2, s_b2 = final_layer_variances(replace(cfg, hidden_dims=(), cn_layers=()))
    assert rows[0].predicted == pytest.approx(s_v2 * float(att.double().pow(2).sum(1).mean()) + s_b2, rel=1e-15)
