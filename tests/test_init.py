"""Initializations: each scheme's weight variance, Eq. (10) included, within standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from analysis.init import INIT_SCHEMES, init_linear_, weight_variance


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_weight_variance_within_standard_errors(scheme):
    fan_in, fan_out = 256, 512
    layer = init_linear_(nn.Linear(fan_in, fan_out), scheme, generator=torch.Generator().manual_seed(0))
    w = layer.weight.detach().double().flatten()
    target = weight_variance(scheme, fan_in, fan_out)
    # sample second moment (the mean is 0 by construction); for U(-b, b) with variance v,
    # E[w^4] = 9 v^2 / 5, so the standard error of the mean of w^2 is sqrt((9/5 - 1) v^2 / n)
    n = w.numel()
    estimate = w.pow(2).mean().item()
    stderr = math.sqrt(0.8 * target**2 / n)
    assert abs(estimate - target) <= 4 * stderr
    bound = math.sqrt(3 * target)
    assert w.abs().max().item() <= bound


def test_eq10_values_match_the_paper():
    d_h, d_z = 1024, 2048
    assert weight_variance("eq10", d_h, d_z) == pytest.approx(1 / (d_h * d_z), rel=1e-15)
    assert weight_variance("eq10_relu", d_h, d_z) == pytest.approx(2 / (d_h * d_z * (1 - 1 / math.pi)), rel=1e-15)
    assert weight_variance("pytorch", d_h, d_z) == pytest.approx(1 / (3 * d_h), rel=1e-15)
    assert weight_variance("kaiming_fan_out", d_h, d_z) == pytest.approx(2 / d_z, rel=1e-15)


def test_pytorch_scheme_has_the_same_law_as_nn_linear_default():
    # nn.Linear's default is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
    ours = init_linear_(nn.Linear(64, 32), "pytorch", generator=torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(64)
    assert ours.weight.abs().max() <= bound and ours.weight.abs().max() > 0.95 * bound
    assert ours.bias.abs().max() <= bound


def test_same_generator_seed_gives_the_same_weights():
    a = init_linear_(nn.Linear(8, 4), "eq10", generator=torch.Generator().manual_seed(3))
    b = init_linear_(nn.Linear(8, 4), "eq10", generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_errors():
    with pytest.raises(ValueError, match="unknown init scheme 'he'"):
        weight_variance("he", 3, 4)
    with pytest.raises(ValueError, match="must be positive"):
        weight_variance("eq10", 0, 4)
    with pytest.raises(TypeError, match="expects an nn.Linear, got Conv1d"):
        init_linear_(nn.Conv1d(1, 1, 1))
