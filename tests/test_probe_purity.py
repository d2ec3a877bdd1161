"""Every probe is pure and exact on every common layer type (issue: probe any architecture).

For each architecture of ``tests/architectures.py`` (BatchNorm1d/2d, LayerNorm + residual,
GroupNorm, RMSNorm, dropout, tied weights + a learned temperature + a parameter-free
layer, CN, the two shipped examples):

- the Hessian-vector product equals the dense float64 Hessian
  (``torch.autograd.functional.hessian`` of an independently written loss) times the
  vector, for ``statistics="batch"`` and ``"running"``;
- every probe of ``landscape/`` and ``variance/`` leaves parameters, buffers, ``training``
  flags and the global RNG bitwise unchanged, and gives bitwise the same result twice.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from analysis.class_standardization import ClassStandardization
from analysis.probe_mode import probe_mode
from landscape import (
    Batch,
    HessianOperator,
    Objective,
    filter_normalized_direction,
    gradient_norm,
    gradient_norms_by_layer,
    hessian_vector_product,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_top_eigenvalues,
    loss_slice_1d,
    loss_slice_2d,
    santurkar_measure,
    spectral_density,
)
from tests.architectures import ARCHITECTURES, build
from tests.landscape_cases import assert_unchanged, snapshot
from variance.profiler import profile_at_init, profile_layers

D_A, D_Z, K, B = 4, 5, 7, 9


def _batch(seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(B, D_Z, generator=g, dtype=torch.float64),
                 torch.randint(0, K, (B,), generator=g),
                 torch.rand(K, D_A, generator=g, dtype=torch.float64) * 2 + 0.5)


def _dense_hessian(model: nn.Module, batch: Batch, statistics: str) -> Tensor:
    """The oracle: ``d^2 L / d theta^2`` of the loss written out here, on a deep copy in the
    mode the README defines (training mode for "batch", eval for "running"; dropout off)."""
    twin = copy.deepcopy(model).train(statistics == "batch")
    for m in twin.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    names = [n for n, _ in twin.named_parameters()]
    shapes = [p.shape for _, p in twin.named_parameters()]
    buffers = dict(twin.named_buffers())
    flat0 = torch.cat([p.detach().reshape(-1) for p in twin.parameters()])

    def loss(flat: Tensor) -> Tensor:
        params, start = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape)) if len(shape) else 1
            params[name] = flat[start:start + size].reshape(shape)
            start += size
        state = {**params, **{k: v.clone() for k, v in buffers.items()}}
        logits = torch.func.functional_call(twin, state, (batch.features, batch.attributes))
        return nn.functional.cross_entropy(logits, batch.targets)

    return torch.autograd.functional.hessian(loss, flat0)


@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_hvp_equals_dense_hessian(name, statistics):
    model = build(name, D_A, D_Z)
    before = snapshot(model)
    batch = _batch()
    hessian = _dense_hessian(model, batch, statistics)
    objective = Objective(model, statistics=statistics)
    assert objective.num_parameters == hessian.shape[0]
    v = torch.randn(objective.num_parameters, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = hessian @ v
    theta = objective.params()
    for method in ("double_backward", "forward_over_reverse"):
        hv = hessian_vector_product(objective, theta, v, [batch], method=method)
        torch.testing.assert_close(hv, expected, rtol=1e-10, atol=1e-12 * float(hessian.abs().max()))
    operator = HessianOperator(objective, [batch])  # graph reuse
    torch.testing.assert_close(operator.matvec(v), expected, rtol=1e-10, atol=1e-12 * float(hessian.abs().max()))
    assert_unchanged(model, before)


def test_batch_and_running_statistics_differ_where_they_should():
    """The oracle is not trivially the same under both choices: with warm running
    statistics BatchNorm's two Hessians differ, LayerNorm's (no running statistics) agree."""
    batch = _batch()
    bn, ln = build("batchnorm1d", D_A, D_Z), build("layernorm_residual", D_A, D_Z)
    assert not torch.allclose(_dense_hessian(bn, batch, "batch"), _dense_hessian(bn, batch, "running"))
    torch.testing.assert_close(_dense_hessian(ln, batch, "batch"), _dense_hessian(ln, batch, "running"))


def _probes() -> dict[str, object]:
    """name -> probe(model) returning tensors / arrays / floats (compared bitwise)."""
    etas = torch.tensor([0.0, 1e-2, 1e-1], dtype=torch.float64)

    def objective(model, statistics="batch"):
        return Objective(model, statistics=statistics)

    def matvec(model):
        op = HessianOperator(objective(model), [_batch()])
        return op.matvec, op.shape[0]

    def gen(seed=5):
        return torch.Generator().manual_seed(seed)

    def slice2d(model):
        obj = objective(model)
        g = gen()
        d1, d2 = filter_normalized_direction(obj, generator=g), filter_normalized_direction(obj, generator=g)
        grid = torch.linspace(-0.5, 0.5, 3, dtype=torch.float64)
        return loss_slice_2d(obj, [_batch()], d1, d2, grid, grid).losses

    def slice1d(model):
        obj = objective(model, "running")
        d = filter_normalized_direction(obj, generator=gen())
        return loss_slice_1d(obj, [_batch()], d, torch.linspace(-1, 1, 5, dtype=torch.float64)).losses

    def santurkar(model):
        m = santurkar_measure(objective(model), _batch(), etas)
        return (m.losses, m.gradient_norm, m.effective_beta)

    def lanczos(model):
        mv, n = matvec(model)
        r = lanczos_top_eigenvalues(mv, n, k=2, tol=1e-6, generator=gen(), dtype=torch.float64)
        return r.eigenvalues

    def trace(model):
        mv, n = matvec(model)
        h = hutchinson_trace(mv, n, 6, generator=gen())
        hpp = hutchpp_trace(mv, n, 9, generator=gen())
        return (h.value, h.stderr, hpp.value)

    def slq(model):
        mv, n = matvec(model)
        d = spectral_density(mv, n, num_probes=2, num_steps=min(n, 8), generator=gen())
        return (d.nodes, d.weights)

    def profile(model):
        b = _batch()
        out = []
        for statistics in ("batch", "running"):
            prof = profile_layers(model, b.attributes, b.features, gamma=5.0, statistics=statistics)
            out += [stats.as_dict() for stats in prof.values()]
        return out

    return {
        "loss": lambda m: objective(m).loss(objective(m).params(), _batch()),
        "gradient": lambda m: objective(m, "running").gradient(objective(m).params(), [_batch(), _batch(2)]),
        "hvp": lambda m: hessian_vector_product(objective(m), objective(m).params(),
                                                torch.ones(objective(m).num_parameters, dtype=torch.float64),
                                                [_batch()], method="forward_over_reverse"),
        "gradient_norm": lambda m: gradient_norm(objective(m), [_batch()]),
        "per_layer": lambda m: gradient_norms_by_layer(m, [_batch()]),
        "lanczos": lanczos,
        "trace": trace,
        "slq": slq,
        "santurkar": santurkar,
        "slice_1d": slice1d,
        "slice_2d": slice2d,
        "profile": profile,
    }


PROBES = _probes()


def _bits(value) -> list:
    """A bitwise-comparable form of a probe's result."""
    if isinstance(value, Tensor):
        return [value.detach().cpu().numpy().tobytes(), tuple(value.shape)]
    if isinstance(value, np.ndarray):
        return [value.tobytes(), value.shape]
    if isinstance(value, dict):
        return [(k, _bits(v)) for k, v in value.items()]
    if isinstance(value, (tuple, list)):
        return [_bits(v) for v in value]
    return [np.float64(value).tobytes()]


@pytest.mark.parametrize("probe", list(PROBES))
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_probe_is_pure_and_deterministic(name, probe):
    model = build(name, D_A, D_Z)
    model.train(True)
    for m in list(model.modules())[1::2]:
        m.train(False)  # mixed flags must come back one by one
    before = snapshot(model)
    rng = torch.get_rng_state()
    first = PROBES[probe](model)
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), rng), "a probe touched the global RNG"
    second = PROBES[probe](model)
    assert _bits(first) == _bits(second), f"{probe} on {name} is not a deterministic function of the parameters"
    assert_unchanged(model, before)


def test_profile_at_init_of_a_dropout_model_is_deterministic():
    """Dropout is off while profiling: two Monte Carlo runs over the same seeds agree bitwise."""
    b = _batch()
    make = lambda g: ARCHITECTURES["dropout"](D_A, D_Z, generator=g)  # noqa: E731
    one = profile_at_init(make, b.attributes.float(), b.features.float(), seeds=[0, 1, 2])
    two = profile_at_init(make, b.attributes.float(), b.features.float(), seeds=[0, 1, 2])
    assert {k: {s: e.value for s, e in v.items()} for k, v in one.items()} == \
        {k: {s: e.value for s, e in v.items()} for k, v in two.items()}


def test_probe_mode_freezes_batchnorm_and_turns_dropout_off():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.9), ClassStandardization(4))
    model.eval()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with probe_mode(model, "batch"):
        assert model[1].training and not model[2].training and model[3].training
        out = model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # batch statistics: each column of the BatchNorm output has mean 0 over the 6 rows
    h = model[1].train()(model[0](x)).detach()
    model.load_state_dict(before)
    torch.testing.assert_close(h.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    assert out.shape == (6, 4)
    model.eval()
    with probe_mode(model, "running"):
        assert not model[1].training and model[1].track_running_stats
    assert [m.training for m in model.modules()] == [False] * 5
    assert model[1].track_running_stats and model[3].update_running_stats
    with pytest.raises(ValueError, match=r"unknown statistics 'eval'.*'batch'.*'running'"):
        with probe_mode(model, "eval"):
            pass


class _CustomRunningMean(nn.Module):
    """A module of the user's own that writes a running mean into a buffer in training mode:
    the probe mode cannot know it, the buffer copies of Objective keep it out of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(D_A, D_Z)
        self.register_buffer("running", torch.zeros(D_Z))

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        p = self.lin(attributes)
        if self.training:
            with torch.no_grad():
                self.running.mul_(0.9).add_(0.1 * p.mean(0))
        return features @ p.T


def test_a_custom_buffer_update_never_reaches_the_model():
    model = _CustomRunningMean().double()
    before = snapshot(model)
    batch = _batch()
    objective = Objective(model)
    v = torch.ones(objective.num_parameters, dtype=torch.float64)
    expected = _dense_hessian(model, batch, "batch") @ v
    for method in ("double_backward", "forward_over_reverse"):
        torch.testing.assert_close(hessian_vector_product(objective, objective.params(), v, [batch], method=method),
                                   expected, rtol=1e-10, atol=1e-12)
    assert_unchanged(model, before)
    assert torch.equal(model.running, torch.zeros(D_Z, dtype=torch.float64))
