"""Tests of the CZSL baselines (analysis/czsl/methods.py): EWC-online, MAS-online, A-GEM."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

from analysis.czsl.methods import (
    EpisodicMemory,
    EWCOnline,
    MASOnline,
    MethodConfig,
    QuadraticAnchorPenalty,
    agem_memory_for,
    agem_project,
    agem_reference_gradient,
    assign_flat_grad,
    ewc_importance,
    flat_grad,
    mas_importance,
)
from analysis.model import AttributeEmbedderModel, ClassifierConfig, EmbedderConfig, LinearClassifier

D_Z, K = 5, 3
EPS = torch.finfo(torch.float64).eps


class _Affine(nn.Module):
    """Tiny protocol model: logits = x W^T + b (the attribute matrix only fixes K)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(D_Z, K, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(K, D_Z, generator=g, dtype=torch.float64))
            self.linear.bias.copy_(torch.randn(K, generator=g, dtype=torch.float64))

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        return self.linear(features)


def _models(seed: int) -> list[nn.Module]:
    g = torch.Generator().manual_seed(seed)
    return [_Affine(seed), LinearClassifier(ClassifierConfig(K, D_Z), generator=g).double()]


def _batches(seed: int, n: int = 3, size: int = 4) -> list[tuple[Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    attributes = torch.randn(K, 2, generator=g, dtype=torch.float64)
    return [(torch.randn(size, D_Z, generator=g, dtype=torch.float64),
             torch.randint(K, (size,), generator=g), attributes) for _ in range(n)]


def _random_like(model: nn.Module, g: torch.Generator, positive: bool = False) -> dict[str, Tensor]:
    out = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}
    return {n: v.abs() for n, v in out.items()} if positive else out


def _set_params(model: nn.Module, values: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(values[n])


PENALTIES = [lambda: EWCOnline(), lambda: MASOnline(), lambda: QuadraticAnchorPenalty(0.5, 3.0)]


# ---------------------------------------------------------------- (1) quadratic penalty


@pytest.mark.parametrize("make", PENALTIES, ids=["ewc", "mas", "generic"])
@given(seed=st.integers(0, 2**31 - 1),
       s=st.one_of(st.just(0.0), st.floats(0.01, 100.0), st.floats(-100.0, -0.01)))
def test_penalty_zero_at_anchor_and_quadratic_along_directions(make, seed: int, s: float) -> None:
    g = torch.Generator().manual_seed(seed)
    for model in _models(seed):
        method = make()
        assert method.penalty(model).item() == 0.0  # before any consolidation
        importance = _random_like(model, g, positive=True)
        method.consolidate(model, importance)
        anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        assert method.penalty(model).item() == 0.0  # exactly 0 at the anchor
        direction = _random_like(model, g)
        _set_params(model, {n: anchor[n] + direction[n] for n in anchor})
        unit = method.penalty(model).item()
        # the hand formula weight/2 sum I (theta - a)^2, with theta - a as stored in float64
        hand = 0.5 * method.weight * sum(
            float((importance[n] * (p.detach() - anchor[n]) ** 2).sum())
            for n, p in model.named_parameters())
        assert unit == pytest.approx(hand, rel=1e-13)
        _set_params(model, {n: anchor[n] + s * direction[n] for n in anchor})
        # theta - a = s d up to the rounding of a + s d: relative error <= eps (|a| + |s d|) / |s d|
        # (the factor 100 is a loose bound on |a| / |d| for these draws; s = 0 is exact)
        rel = 8 * EPS * (1 + 1 / max(abs(s), 1e-300)) * 100
        assert method.penalty(model).item() == pytest.approx(s * s * unit, rel=rel, abs=1e-300)


@pytest.mark.parametrize("make", PENALTIES, ids=["ewc", "mas", "generic"])
def test_penalty_gradient_is_weight_times_importance_times_displacement(make) -> None:
    g = torch.Generator().manual_seed(3)
    model = _Affine(3)
    method = make()
    importance = _random_like(model, g, positive=True)
    method.consolidate(model, importance)
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    _set_params(model, {n: anchor[n] + v for n, v in _random_like(model, g).items()})
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(method.penalty(model), list(params.values()))
    for (n, p), grad in zip(params.items(), grads):
        torch.testing.assert_close(grad, method.weight * importance[n] * (p.detach() - anchor[n]),
                                   rtol=1e-13, atol=0.0)


# ---------------------------------------------------------------- (2) online accumulation


@pytest.mark.parametrize("make", PENALTIES, ids=["ewc", "mas", "generic"])
def test_two_consolidations_accumulate_decay_i1_plus_i2(make) -> None:
    g = torch.Generator().manual_seed(5)
    model = _Affine(5)
    method = make()
    i1, i2 = _random_like(model, g, positive=True), _random_like(model, g, positive=True)
    method.consolidate(model, i1)
    for n in i1:
        assert torch.equal(method.importance[n], i1[n])
    _set_params(model, _random_like(model, g))
    method.consolidate(model, i2)
    for n, p in model.named_parameters():
        assert torch.equal(method.importance[n], method.decay * i1[n] + i2[n])
        assert torch.equal(method.anchor[n], p.detach())
    before = {n: a.clone() for n, a in method.anchor.items()}
    _set_params(model, _random_like(model, g))  # the anchor is a copy, not a view
    for n in before:
        assert torch.equal(method.anchor[n], before[n])


def test_methods_take_decay_and_weight_from_config() -> None:
    config = MethodConfig(ewc_decay=0.3, ewc_weight=2.0, mas_decay=0.7, mas_weight=5.0)
    assert (EWCOnline(config).decay, EWCOnline(config).weight) == (0.3, 2.0)
    assert (MASOnline(config).decay, MASOnline(config).weight) == (0.7, 5.0)
    assert (EWCOnline().decay, EWCOnline().weight, MASOnline().decay, MASOnline().weight) == \
        (0.99, 10.0, 0.95, 1e-4)
    # the memory batch is the protocol's unless given (toolkit 256, authors 128: test_czsl_authors_methods)
    assert MethodConfig().agem_memory_per_class == 10 and MethodConfig().agem_memory_batch is None
    assert [agem_memory_for(d) for d in ("CUB", "sun", "AWA2", "awa1", "APY")] == [10, 5, 25, 25, 10]


# ---------------------------------------------------------------- (3) importances by hand


def _hand_softmax_grads(model: _Affine, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """d mean CE / d (W, b) = ((P - Y)^T X / B, mean(P - Y))."""
    w, b = model.linear.weight.detach(), model.linear.bias.detach()
    residual = torch.softmax(x @ w.T + b, dim=1) - nn.functional.one_hot(y, K).double()
    return residual.T @ x / x.shape[0], residual.mean(0)


def _hand_norm_grads(model: _Affine, x: Tensor) -> tuple[Tensor, Tensor]:
    """d mean_b ||W x_b + b||^2 / d (W, b) = (2 F^T X / B, 2 mean F)."""
    w, b = model.linear.weight.detach(), model.linear.bias.detach()
    f = x @ w.T + b
    return 2 * f.T @ x / x.shape[0], 2 * f.mean(0)


def test_ewc_importance_is_mean_squared_batch_gradient() -> None:
    model, batches = _Affine(7), _batches(7)
    grads = [_hand_softmax_grads(model, x, y) for x, y, _ in batches]
    fisher = ewc_importance(model, batches)
    torch.testing.assert_close(fisher["linear.weight"], sum(gw**2 for gw, _ in grads) / len(grads),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(fisher["linear.bias"], sum(gb**2 for _, gb in grads) / len(grads),
                               rtol=1e-12, atol=1e-15)
    assert model.linear.weight.grad is None  # .grad untouched


def test_mas_importance_is_mean_absolute_gradient_of_squared_output_norm() -> None:
    model, batches = _Affine(8), _batches(8)
    grads = [_hand_norm_grads(model, x) for x, _, _ in batches]
    omega = mas_importance(model, batches)
    torch.testing.assert_close(omega["linear.weight"], sum(gw.abs() for gw, _ in grads) / len(grads),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(omega["linear.bias"], sum(gb.abs() for _, gb in grads) / len(grads),
                               rtol=1e-12, atol=1e-15)


def test_end_task_consolidates_the_estimated_importance() -> None:
    model, batches = _Affine(9), _batches(9)
    ewc, mas = EWCOnline(), MASOnline()
    ewc.end_task(model, batches)
    mas.end_task(model, batches)
    for n in ewc.importance:
        torch.testing.assert_close(ewc.importance[n], ewc_importance(model, batches)[n], rtol=0, atol=0)
        torch.testing.assert_close(mas.importance[n], mas_importance(model, batches)[n], rtol=0, atol=0)


def test_estimates_leave_class_standardization_statistics_and_mode_alone() -> None:
    config = EmbedderConfig(attribute_dim=4, feature_dim=D_Z, hidden_dims=(6,))  # CN on its layer
    model = AttributeEmbedderModel(config, generator=torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    attributes = torch.randn(K, 4, generator=g, dtype=torch.float64)
    batches = [(torch.randn(4, D_Z, generator=g, dtype=torch.float64), torch.randint(K, (4,), generator=g),
                attributes)]
    before = {n: b.clone() for n, b in model.named_buffers()}
    ewc, mas = ewc_importance(model, batches), mas_importance(model, batches)
    agem_reference_gradient(model, *batches[0])
    assert model.training and all(torch.equal(b, before[n]) for n, b in model.named_buffers())
    assert set(ewc) == set(mas) == {n for n, _ in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------- (4) A-GEM projection


@given(seed=st.integers(0, 2**31 - 1), dim=st.integers(1, 6))
def test_agem_projection_is_the_euclidean_projection_onto_the_half_space(seed: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    g, ref = torch.randn(dim, generator=gen, dtype=torch.float64), torch.randn(dim, generator=gen,
                                                                              dtype=torch.float64)
    for grad in (g, -g):  # one of the two conflicts with ref (unless <g, ref> = 0)
        proj = agem_project(grad, ref)
        scale = grad.norm() * ref.norm()
        assert torch.dot(proj, ref) >= -4 * dim * EPS * scale
        if torch.dot(grad, ref) >= 0:
            assert proj is grad
            continue
        assert abs(torch.dot(proj, ref)) <= 4 * dim * EPS * scale  # on the boundary
        # brute force: no point of the half-space is closer to grad than proj
        cands = proj + torch.randn(2000, dim, generator=gen, dtype=torch.float64) * grad.norm()
        cands = torch.cat([cands, grad.expand(1, dim), torch.zeros(1, dim, dtype=torch.float64)])
        feasible = cands[cands @ ref >= 0]
        best = (feasible - grad).norm(dim=1).min()
        assert (grad - proj).norm() <= best * (1 + 1e-12)
        # closed form of the projection onto {x: <x, r> >= 0}: g - min(0, <g, r>) r / |r|^2
        closed = grad - torch.clamp(torch.dot(grad, ref), max=0) / ref.dot(ref) * ref
        torch.testing.assert_close(proj, closed, rtol=1e-13, atol=1e-13 * float(grad.norm()))


def test_agem_zero_reference_returns_the_gradient() -> None:
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert agem_project(g, torch.zeros(2, dtype=torch.float64)) is g


@pytest.mark.parametrize("conflict", [True, False])
def test_agem_step_does_not_increase_the_memory_loss_to_first_order(conflict: bool) -> None:
    model = LinearClassifier(ClassifierConfig(K, D_Z), generator=torch.Generator().manual_seed(1)).double()
    (x_t, y_t, attributes), (x_m, y_m, _) = _batches(11, n=2, size=6)
    nn.functional.cross_entropy(model(x_t, attributes), y_t).backward()
    ref = agem_reference_gradient(model, x_m, y_m, attributes)
    task = flat_grad(model)
    grad = -ref + 0.1 * task if conflict else ref + 0.1 * task  # force / avoid the projection
    assert (torch.dot(grad, ref) < 0) == conflict
    proj = agem_project(grad, ref)
    # the first-order change of L_mem along -eta proj is -eta <grad L_mem, proj>, by jvp
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangent = {"weight": proj.view_as(params["weight"])}

    def memory_loss(p: dict[str, Tensor]) -> Tensor:
        logits = torch.func.functional_call(model, p, (x_m, attributes))
        return nn.functional.cross_entropy(logits, y_m)

    _, directional = torch.func.jvp(memory_loss, (params,), (tangent,))
    scale = float(grad.norm() * ref.norm())
    assert float(directional) == pytest.approx(float(torch.dot(ref, proj)), abs=1e-13 * scale)
    assert float(directional) >= -1e-13 * scale
    if conflict:
        assert abs(float(directional)) <= 1e-13 * scale


def test_flat_grad_round_trip_and_none_grads() -> None:
    model = _Affine(2)
    assert torch.equal(flat_grad(model), torch.zeros(K * D_Z + K, dtype=torch.float64))
    assign_flat_grad(model, torch.zeros(K * D_Z + K, dtype=torch.float64))
    assert model.linear.weight.grad is None and model.linear.bias.grad is None  # zero slices
    flat = torch.arange(K * D_Z + K, dtype=torch.float64)
    assign_flat_grad(model, flat)
    assert torch.equal(model.linear.weight.grad, flat[:K * D_Z].view(K, D_Z))
    assert torch.equal(model.linear.bias.grad, flat[K * D_Z:])
    assert torch.equal(flat_grad(model), flat)


# ---------------------------------------------------------------- (5) episodic memory


def test_episodic_memory_capacity_and_determinism() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, D_Z, generator=gen)
    y = torch.tensor([0] * 3 + [1] * 12 + [2] * 25)
    x0_more = torch.randn(4, D_Z, generator=gen)  # new class-0 samples: fill its 2 free slots

    def fill(seed: int) -> EpisodicMemory:
        memory = EpisodicMemory(per_class=5)
        memory.add(x, y, torch.Generator().manual_seed(seed))
        memory.add(x0_more, torch.zeros(4, dtype=torch.int64), generator=torch.Generator().manual_seed(seed))
        return memory

    memory = fill(1)
    assert memory.counts() == {0: 5, 1: 5, 2: 5} and len(memory) == 15
    pools = {0: torch.cat([x[y == 0], x0_more]), 1: x[y == 1], 2: x[y == 2]}
    for c, pool in pools.items():  # stored rows are distinct rows offered for class c
        stored = memory.features[memory.labels == c]
        assert (stored[:, None] == pool[None]).all(-1).any(1).all()
        assert torch.unique(stored, dim=0).shape[0] == 5
    kept = memory.features[:3]  # the 3 first class-0 samples were kept (in random order)
    assert (kept[:, None] == x[None, :3]).all(-1).any(1).all() and torch.unique(kept, dim=0).shape[0] == 3
    assert torch.equal(fill(1).features, memory.features) and torch.equal(fill(1).labels, memory.labels)
    assert not torch.equal(fill(2).features, memory.features)
    memory.add(x, y, generator=gen)  # full: nothing changes
    assert memory.counts() == {0: 5, 1: 5, 2: 5}

    f1, l1 = memory.sample(4, generator=torch.Generator().manual_seed(3))
    f2, l2 = memory.sample(4, torch.Generator().manual_seed(3))  # positional, as protocol.py calls it
    assert f1.shape == (4, D_Z) and torch.equal(f1, f2) and torch.equal(l1, l2)
    f_all, l_all = memory.sample(100, generator=gen)  # capped at the memory size, no repeats
    assert f_all.shape == (15, D_Z) and torch.unique(f_all, dim=0).shape[0] == 15
    assert sorted(l_all.tolist()) == sorted(memory.labels.tolist())


# ---------------------------------------------------------------- (6) errors


@pytest.mark.parametrize("kwargs, match", [
    ({"ewc_decay": 1.5}, r"ewc_decay must lie in \[0, 1\].*1\.5"),
    ({"mas_decay": -0.1}, r"mas_decay must lie in \[0, 1\].*-0\.1"),
    ({"ewc_weight": -1.0}, r"ewc_weight must be a finite number >= 0.*-1\.0"),
    ({"mas_weight": float("nan")}, r"mas_weight must be a finite number >= 0.*nan"),
    ({"agem_memory_per_class": 0}, r"agem_memory_per_class must be an int >= 1, got 0"),
    ({"agem_memory_batch": 2.5}, r"agem_memory_batch must be an int >= 1, got 2\.5"),
])
def test_method_config_rejects_bad_values(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MethodConfig(**kwargs)


def test_penalty_rejects_bad_arguments_and_mismatched_models() -> None:
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\].*2"):
        QuadraticAnchorPenalty(2.0, 1.0)
    with pytest.raises(ValueError, match=r"weight must be a finite number >= 0.*-3"):
        QuadraticAnchorPenalty(0.5, -3.0)
    model, method = _Affine(0), EWCOnline()
    good = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"new_importance names parameters \['linear.weight'\]"):
        method.consolidate(model, {"linear.weight": good["linear.weight"]})
    with pytest.raises(ValueError, match=r"new_importance\['linear.bias'\] has shape \(2,\)"):
        method.consolidate(model, {**good, "linear.bias": torch.ones(2, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"importance of 'linear.bias' must be finite and >= 0"):
        method.consolidate(model, {**good, "linear.bias": -good["linear.bias"]})
    with pytest.raises(ValueError, match=r"importance of 'linear.weight' must be finite"):
        method.consolidate(model, {**good, "linear.weight": good["linear.weight"] * float("inf")})
    method.consolidate(model, good)
    model.linear.bias.requires_grad_(False)
    with pytest.raises(ValueError, match=r"the anchor names parameters .* consolidate with the same"):
        method.penalty(model)
    model.linear.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"_Affine has no trainable parameters"):
        method.penalty(model)


def test_importance_rejects_empty_batches() -> None:
    with pytest.raises(ValueError, match=r"batches is empty"):
        ewc_importance(_Affine(0), [])
    with pytest.raises(ValueError, match=r"batches is empty"):
        mas_importance(_Affine(0), iter([]))


def test_episodic_memory_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"per_class must be an int >= 1, got 0"):
        EpisodicMemory(0)
    memory = EpisodicMemory(2)
    with pytest.raises(ValueError, match=r"the memory is empty; call add"):
        memory.sample(3)
    with pytest.raises(ValueError, match=r"the memory is empty; call add"):
        _ = memory.labels
    with pytest.raises(ValueError, match=r"labels \[n\], got shapes \(4, 5\) and \(3,\)"):
        memory.add(torch.zeros(4, 5), torch.zeros(3, dtype=torch.int64))
    memory.add(torch.zeros(4, 5), torch.zeros(4, dtype=torch.int64), generator=torch.Generator())
    with pytest.raises(ValueError, match=r"features have d_z = 6 but the memory stores d_z = 5"):
        memory.add(torch.zeros(4, 6), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"batch must be an int >= 1, got 0"):
        memory.sample(0)


def test_agem_helpers_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"same length .* got shapes \(3,\) and \(4,\)"):
        agem_project(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"flat vectors .* got shapes \(2, 2\) and \(2, 2\)"):
        agem_project(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"1-D tensor of the 18 trainable .* got shape \(5,\)"):
        assign_flat_grad(_Affine(0), torch.zeros(5, dtype=torch.float64))


def test_episodic_memory_counts_rows_not_feature_columns() -> None:
    memory = EpisodicMemory(per_class=3)  # rows per class (3 and 1) differ from the D_Z + 4 columns
    x = torch.randn(5, D_Z + 4, generator=torch.Generator().manual_seed(0))
    memory.add(x, torch.tensor([0, 0, 0, 0, 1]), torch.Generator().manual_seed(1))
    assert memory.counts() == {0: 3, 1: 1} and len(memory) == 4


def test_episodic_memory_fills_a_last_free_slot_and_moves_on_past_a_full_class() -> None:
    memory = EpisodicMemory(per_class=3)
    g = torch.Generator().manual_seed(0)
    memory.add(torch.randn(2, D_Z, generator=g), torch.tensor([0, 0]), g)  # class 0: one slot left
    memory.add(torch.randn(5, D_Z, generator=g), torch.tensor([0, 0, 1, 1, 1]), g)
    assert memory.counts() == {0: 3, 1: 3}
    memory.add(torch.randn(3, D_Z, generator=g), torch.tensor([0, 2, 2]), g)  # 0 full: 2 still added
    assert memory.counts() == {0: 3, 1: 3, 2: 2}


def test_method_sizes_accept_one() -> None:
    from analysis.czsl.parameters import check_positive_int

    check_positive_int(1, "per_class")  # the smallest valid value
    with pytest.raises(ValueError, match="per_class must be an int >= 1, got 0"):
        check_positive_int(0, "per_class")


def test_episodic_memory_refuses_labels_that_are_not_1d() -> None:
    with pytest.raises(ValueError, match=r"expected features \[n, d_z\] and labels \[n\]"):
        EpisodicMemory(per_class=2).add(torch.zeros(2, D_Z), torch.zeros(2, 1, dtype=torch.int64))
