"""Class standardization (Eq. 9): oracle BatchNorm1d, running statistics, purity, quirk."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from analysis.class_standardization import (
    ClassStandardization,
    class_standardize,
    class_statistics,
    frozen_class_statistics,
)


def _h(k: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g, dtype=torch.float64) * 3 + 1


@given(k=st.integers(2, 40), d=st.integers(1, 16), seed=st.integers(0, 2**31 - 1),
       scales=st.lists(st.sampled_from([3.0, 1e-2, 3e-3, 1e-3]), min_size=16, max_size=16))
def test_training_mode_equals_batchnorm_without_affine(k, d, seed, scales):
    """Columns of every scale, down to class variances near eps = 1e-5 (scale 3e-3 gives about
    1e-5, scale 1e-3 about 1e-6), where eps dominates the denominator."""
    h = (_h(k, d, seed) - 1) / 3 * torch.tensor(scales[:d], dtype=torch.float64) + 1
    cs = ClassStandardization(d).double().train()
    bn = nn.BatchNorm1d(d, affine=False, momentum=0.1, eps=1e-5).double().train()
    torch.testing.assert_close(cs(h), bn(h), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cs.running_mean, bn.running_mean, rtol=1e-12, atol=1e-14)
    # BatchNorm stores the unbiased variance, we store the biased one (module docstring):
    # r = 0.9 * 1 + 0.1 * v, so the two differ by 0.1 * v_biased * (k/(k-1) - 1).
    v_biased = h.var(dim=0, correction=0)
    torch.testing.assert_close(cs.running_var, 0.9 + 0.1 * v_biased, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * v_biased * k / (k - 1), rtol=1e-12, atol=1e-14)


def test_output_has_zero_mean_unit_biased_variance_over_classes():
    s = ClassStandardization(5, eps=0.0).double()(_h(7, 5, 0))
    torch.testing.assert_close(s.mean(dim=0), torch.zeros(5, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s.pow(2).mean(dim=0), torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)


def test_running_statistics_follow_momentum_over_steps():
    cs = ClassStandardization(3).double()
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for step in range(4):
        h = _h(6, 3, step)
        cs(h)
        mean = 0.9 * mean + 0.1 * h.mean(0)
        var = 0.9 * var + 0.1 * h.var(0, correction=0)
    torch.testing.assert_close(cs.running_mean, mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(cs.running_var, var, rtol=1e-12, atol=1e-14)


def test_eval_mode_uses_running_statistics_only():
    cs = ClassStandardization(4).double()
    for step in range(3):
        cs(_h(5, 4, step))
    cs.eval()
    seen = _h(5, 4, 10)
    out_seen = cs(seen)
    expected = (seen - cs.running_mean) / torch.sqrt(cs.running_var + 1e-5)
    torch.testing.assert_close(out_seen, expected, rtol=1e-12, atol=1e-12)
    # adding unseen classes to the batch does not change the seen classes' outputs
    with_unseen = cs(torch.cat([seen, _h(3, 4, 11) * 10]))
    assert torch.equal(with_unseen[:5], out_seen)
    before = (cs.running_mean.clone(), cs.running_var.clone())
    cs(seen)
    assert torch.equal(cs.running_mean, before[0]) and torch.equal(cs.running_var, before[1])


def test_training_mode_depends_on_the_other_classes():
    # the contrast to eval mode: in training, statistics come from the batch of classes
    cs = ClassStandardization(4).double()
    seen = _h(5, 4, 0)
    assert not torch.allclose(cs(seen), cs(torch.cat([seen, _h(3, 4, 1)]))[:5])


def test_notebook_quirk_divides_by_unbiased_variance_plus_eps():
    h = _h(6, 3, 0)
    cs = ClassStandardization(3, mode="notebook").double()
    expected = (h - h.mean(0)) / (h.var(0, correction=1) + 1e-5)
    torch.testing.assert_close(cs(h), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cs.running_var, 0.9 + 0.1 * h.var(0, correction=1), rtol=1e-12, atol=1e-14)
    cs.eval()
    torch.testing.assert_close(cs(h), (h - cs.running_mean) / (cs.running_var + 1e-5), rtol=1e-12, atol=1e-12)


def test_frozen_statistics_normalize_with_batch_and_update_nothing():
    model = nn.Sequential(nn.Linear(3, 4), ClassStandardization(4), nn.ReLU(), ClassStandardization(4))
    model.double()
    x = _h(6, 3, 0)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    with frozen_class_statistics(model):
        out = model(x)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert all(m.update_running_stats for m in model.modules() if isinstance(m, ClassStandardization))
    # same output as the updating forward pass (batch statistics in both)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)


def test_frozen_statistics_restore_flags_after_an_exception():
    cs = ClassStandardization(2)
    cs.update_running_stats = False  # a caller's own setting is restored too
    with pytest.raises(RuntimeError, match="boom"), frozen_class_statistics(cs):
        raise RuntimeError("boom")
    assert cs.update_running_stats is False


def test_functional_form_is_pure_and_matches_the_layer():
    h = _h(5, 3, 0).requires_grad_()
    out = class_standardize(h)
    torch.testing.assert_close(out, ClassStandardization(3).double()(h.detach()), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(out[0, 0], h)
    assert torch.isfinite(grad).all()
    # gradient of Eq. (9) against finite differences, float64
    assert torch.autograd.gradcheck(lambda x: class_standardize(x), (h,))


def test_gradient_flows_through_batch_statistics():
    # d/dh of sum(S(h) * w) for w constant across classes is zero: S removes the mean
    h = _h(6, 2, 0).requires_grad_()
    (grad,) = torch.autograd.grad((class_standardize(h) * torch.tensor([1.0, -2.0], dtype=h.dtype)).sum(), h)
    torch.testing.assert_close(grad, torch.zeros_like(grad), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: class_statistics(torch.zeros(1, 3)), "at least 2 classes"),
        (lambda: class_statistics(torch.zeros(3)), r"\[K, d\] matrix"),
        (lambda: class_statistics(torch.zeros(3, 2), mode="sqrt"), "mode must be one of"),
        (lambda: class_standardize(torch.zeros(3, 2), mean=torch.zeros(2)), "both mean and var"),
        (lambda: class_standardize(torch.zeros(3, 2), torch.zeros(2), torch.ones(2), mode="x"), "mode must be"),
        (lambda: ClassStandardization(3, mode="bad"), "mode must be one of"),
        (lambda: ClassStandardization(3, momentum=1.5), "momentum must lie"),
        (lambda: ClassStandardization(3)(torch.zeros(4, 2)), r"\[K, 3\] matrix"),
    ],
)
def test_errors_name_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_notebook_mode_uses_the_unbiased_variance_without_a_square_root_in_both_modes() -> None:
    """The authors' notebook quirk, by hand: (h - mean) / (var_unbiased + eps), in training
    (batch statistics) and in eval (running statistics) alike."""
    from analysis.class_standardization import ClassStandardization, class_standardize

    h = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], dtype=torch.float64)
    mean = h.mean(0, keepdim=True)
    var_unbiased = ((h - mean) ** 2).sum(0, keepdim=True) / 2
    eps = 0.1  # not the default: a path that drops eps= would use 1e-5
    torch.testing.assert_close(class_standardize(h, eps=eps, mode="notebook"), (h - mean) / (var_unbiased + eps),
                               rtol=1e-14, atol=0)
    layer = ClassStandardization(2, eps=eps, momentum=1.0, mode="notebook").double()
    layer.train()
    layer(h)  # momentum 1: the running statistics become this batch's
    layer.eval()
    torch.testing.assert_close(layer(h), (h - mean) / (var_unbiased + eps), rtol=1e-14, atol=0)


@pytest.mark.parametrize("momentum", [0.0, 1.0])
def test_momentum_bounds_are_inclusive(momentum: float) -> None:
    from analysis.class_standardization import ClassStandardization

    assert ClassStandardization(3, momentum=momentum).momentum == momentum
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\]"):
            ClassStandardization(3, momentum=bad)
