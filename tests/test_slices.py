"""Tests of landscape.slices: filter-normalized directions and 1-D / 2-D loss slices."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from analysis.class_standardization import ClassStandardization  # noqa: E402
from analysis.model import AttributeEmbedderModel, ClassifierConfig, LinearClassifier, preset_config  # noqa: E402
from landscape.objective import Batch, Objective, zsl_batches  # noqa: E402
from landscape.slices import (  # noqa: E402
    Slice1D,
    Slice2D,
    filter_normalized_direction,
    loss_slice_1d,
    loss_slice_2d,
    plot_slice_1d,
    plot_slice_2d,
)
from tests.landscape_cases import Quadratic as _Quadratic  # noqa: E402
from tests.landscape_cases import assert_unchanged as _assert_unchanged  # noqa: E402
from tests.landscape_cases import identity_loss as _identity_loss  # noqa: E402
from tests.landscape_cases import snapshot as _snapshot  # noqa: E402

ALPHAS = [-1.0, -0.25, 0.0, 0.5, 1.0]
BETAS = [-0.5, 0.0, 0.75]


# -- cases -----------------------------------------------------------------------------
def _cn_model() -> AttributeEmbedderModel:
    """A tiny float64 CN model (d_a 12, d_z 32) whose running statistics are not the defaults."""
    model = AttributeEmbedderModel(preset_config("cn", 12, 32, hidden_dims=(5, 4)),
                                   generator=torch.Generator().manual_seed(0)).double()
    model.train()
    model.prototypes(torch.randn(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert any(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
               for m in model.modules() if isinstance(m, ClassStandardization))
    return model


def _classifier() -> LinearClassifier:
    return LinearClassifier(ClassifierConfig(6, 32), generator=torch.Generator().manual_seed(0)).double()


@pytest.fixture(scope="module")
def batches(tiny_data) -> list[Batch]:
    return [b.to(dtype=torch.float64) for b in zsl_batches(tiny_data, batch_size=100)]  # 100, 100, 40


@pytest.fixture(params=["cn", "classifier"])
def objective(request) -> Objective:
    return Objective(_cn_model() if request.param == "cn" else _classifier())


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quadratic_case() -> tuple[Objective, list[Batch], Tensor, Tensor]:
    g = _seeded(3)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))
    a = q @ torch.diag(torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=torch.float64)) @ q.T
    x0 = torch.randn(5, dtype=torch.float64, generator=g)
    batch = Batch(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.int64),
                  torch.zeros(1, 1, dtype=torch.float64))
    return Objective(_Quadratic(a, x0), _identity_loss), [batch], a, x0


# -- filter-normalized directions ------------------------------------------------------
@given(seed=st.integers(0, 2**63 - 1))
def test_direction_is_filter_normalized(seed: int) -> None:
    for objective in (Objective(_cn_model()), Objective(_classifier())):
        theta = objective.params()
        direction = filter_normalized_direction(objective, generator=_seeded(seed))
        assert len(direction) == len(theta)
        for name, p, d in zip(objective.names, theta, direction):
            assert d.shape == p.shape and d.dtype == p.dtype
            if p.ndim <= 1:  # biases: ignored, as in Li et al.
                assert torch.equal(d, torch.zeros_like(p)), name
            else:  # one row per output unit / class
                torch.testing.assert_close(d.norm(dim=1), p.norm(dim=1), rtol=1e-12, atol=0)


def test_conv_filters_and_zero_filters() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight[1].zero_()  # a dead unit: its direction row is zero too
    objective = Objective(model)
    direction = dict(zip(objective.names, filter_normalized_direction(objective, generator=_seeded(0))))
    w = model[0].weight  # [out 3, in 2, 3, 3]: a filter is w[i]
    torch.testing.assert_close(direction["0.weight"].flatten(1).norm(dim=1), w.flatten(1).norm(dim=1),
                               rtol=1e-12, atol=0)
    assert torch.equal(direction["1.weight"][1], torch.zeros(4, dtype=torch.float64))
    assert (direction["1.weight"][[0, 2]] != 0).all()
    assert torch.equal(direction["0.bias"], torch.zeros(3, dtype=torch.float64))


def test_direction_at_explicit_params() -> None:
    objective = Objective(_classifier())
    theta = tuple(3.0 * p for p in objective.params())
    d = filter_normalized_direction(objective, theta, generator=_seeded(0))
    torch.testing.assert_close(d[0].norm(dim=1), theta[0].norm(dim=1), rtol=1e-12, atol=0)


def test_directions_are_seeded_and_leave_the_global_rng_alone(objective: Objective) -> None:
    state = torch.get_rng_state()
    first = filter_normalized_direction(objective, generator=_seeded(7))
    again = filter_normalized_direction(objective, generator=_seeded(7))
    other = filter_normalized_direction(objective, generator=_seeded(8))
    fresh = [filter_normalized_direction(objective) for _ in range(2)]  # OS-seeded
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(objective.flatten(first), objective.flatten(other))
    assert not torch.equal(objective.flatten(fresh[0]), objective.flatten(fresh[1]))
    assert torch.equal(torch.get_rng_state(), state)


def test_direction_rejects_bad_generator_and_params() -> None:
    objective = Objective(_classifier())
    with pytest.raises(TypeError, match="CPU torch.Generator"):
        filter_normalized_direction(objective, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must have shape"):
        filter_normalized_direction(objective, (torch.zeros(2, 2, dtype=torch.float64),), generator=_seeded(0))


# -- slices ----------------------------------------------------------------------------
def test_origin_is_exact(objective: Objective, batches: list[Batch]) -> None:
    theta = objective.params()
    at_origin = objective.mean_loss(theta, batches)
    d1 = filter_normalized_direction(objective, generator=_seeded(1))
    d2 = filter_normalized_direction(objective, generator=_seeded(2))
    s1 = loss_slice_1d(objective, batches, d1, ALPHAS)
    ticks = []
    s2 = loss_slice_2d(objective, batches, d1, d2, ALPHAS, BETAS, on_point=lambda: ticks.append(1))
    assert len(ticks) == len(ALPHAS) * len(BETAS)  # one progress tick per point
    assert isinstance(s1, Slice1D) and isinstance(s2, Slice2D)
    assert torch.equal(s1.alphas, torch.tensor(ALPHAS, dtype=torch.float64))
    assert s2.losses.shape == (len(ALPHAS), len(BETAS))
    assert torch.equal(s1.losses[ALPHAS.index(0.0)], at_origin)
    assert torch.equal(s2.losses[ALPHAS.index(0.0), BETAS.index(0.0)], at_origin)
    # the 1-D slice is the beta = 0 column of the 2-D slice, bitwise
    assert torch.equal(s2.losses[:, BETAS.index(0.0)], s1.losses)


def test_every_point_is_evaluated_from_the_origin(objective: Objective, batches: list[Batch]) -> None:
    theta = objective.params()
    d1 = filter_normalized_direction(objective, generator=_seeded(1))
    d2 = filter_normalized_direction(objective, generator=_seeded(2))
    s2 = loss_slice_2d(objective, batches, d1, d2, ALPHAS, BETAS)
    for i, a in enumerate(ALPHAS):
        for j, b in enumerate(BETAS):
            point = tuple(p + a * u + b * v for p, u, v in zip(theta, d1, d2))
            expected = objective.mean_loss(point, batches)
            assert torch.equal(s2.losses[i, j], expected), (a, b)  # bitwise: same arithmetic
    # the order of the grid does not matter
    reversed_ = loss_slice_2d(objective, batches, d1, d2, ALPHAS[::-1], BETAS[::-1])
    assert torch.equal(reversed_.losses, s2.losses.flip(0, 1))
    assert torch.equal(reversed_.alphas, s2.alphas.flip(0))


def test_explicit_origin_and_flat_direction(batches: list[Batch]) -> None:
    objective = Objective(_cn_model())
    theta = tuple(p + 0.1 for p in objective.params())  # not the model's parameters
    d = filter_normalized_direction(objective, theta, generator=_seeded(4))
    s = loss_slice_1d(objective, batches, d, ALPHAS, params=theta)
    flat = loss_slice_1d(objective, batches, objective.flatten(d), torch.tensor(ALPHAS), params=theta)
    assert torch.equal(s.losses, flat.losses)
    assert torch.equal(s.losses[ALPHAS.index(0.0)], objective.mean_loss(theta, batches))
    assert not torch.equal(s.losses[ALPHAS.index(0.0)], objective.mean_loss(objective.params(), batches))


def test_quadratic_slice_is_the_exact_parabola() -> None:
    objective, batches, a, x0 = _quadratic_case()
    d = torch.randn(5, dtype=torch.float64, generator=_seeded(5))
    alphas = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64)
    s = loss_slice_1d(objective, batches, (d,), alphas)
    expected = 0.5 * x0 @ a @ x0 + alphas * (d @ a @ x0) + 0.5 * alphas**2 * (d @ a @ d)
    torch.testing.assert_close(s.losses, expected, rtol=1e-12, atol=1e-14)
    e = torch.randn(5, dtype=torch.float64, generator=_seeded(6))
    s2 = loss_slice_2d(objective, batches, (d,), (e,), alphas, alphas[:3])
    y = x0[None, None] + alphas[:, None, None] * d + alphas[:3][None, :, None] * e  # [A, B, 5]
    torch.testing.assert_close(s2.losses, 0.5 * torch.einsum("abi,ij,abj->ab", y, a, y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("training", [True, False])
def test_slices_are_pure(batches: list[Batch], statistics: str, training: bool) -> None:
    model = _cn_model().train(training)
    model.embedder[0].train(not training)  # a submodule whose flag differs from the root's
    snapshot = _snapshot(model)
    objective = Objective(model, statistics=statistics)
    d1 = filter_normalized_direction(objective, generator=_seeded(1))
    d2 = filter_normalized_direction(objective, generator=_seeded(2))
    loss_slice_1d(objective, batches, d1, ALPHAS)
    loss_slice_2d(objective, batches, d1, d2, ALPHAS[:2], BETAS)
    _assert_unchanged(model, snapshot)
    assert all(p.grad is None for p in model.parameters())


def test_slice_errors(batches: list[Batch]) -> None:
    objective = Objective(_cn_model())
    d = filter_normalized_direction(objective, generator=_seeded(0))
    with pytest.raises(ValueError, match="direction has shapes"):
        loss_slice_1d(objective, batches, d[:-1], ALPHAS)
    with pytest.raises(ValueError, match="d2 has shapes"):
        loss_slice_2d(objective, batches, d, tuple(t.mT if t.ndim == 2 else t for t in d), ALPHAS, BETAS)
    with pytest.raises(ValueError, match="must be flat with length"):
        loss_slice_1d(objective, batches, torch.zeros(3, dtype=torch.float64), ALPHAS)
    with pytest.raises(ValueError, match="alphas must be a non-empty 1-D grid"):
        loss_slice_1d(objective, batches, d, [])
    with pytest.raises(ValueError, match="betas must be a non-empty 1-D grid"):
        loss_slice_2d(objective, batches, d, d, ALPHAS, torch.zeros(0))
    with pytest.raises(ValueError, match="alphas must be a non-empty 1-D grid"):
        loss_slice_1d(objective, batches, d, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="alphas must be finite"):
        loss_slice_1d(objective, batches, d, [0.0, float("nan")])
    with pytest.raises(ValueError, match="batches is empty"):
        loss_slice_1d(objective, [], d, ALPHAS)
    with pytest.raises(ValueError, match="must have shape"):
        loss_slice_1d(objective, batches, d, ALPHAS, params=d[:1] + d[:1] + d[2:])


# -- drawing ---------------------------------------------------------------------------
def test_plots(batches: list[Batch]) -> None:
    objective = Objective(_classifier())
    d1 = filter_normalized_direction(objective, generator=_seeded(1))
    d2 = filter_normalized_direction(objective, generator=_seeded(2))
    s2 = loss_slice_2d(objective, batches, d1, d2, [0.5, -0.5, 0.0], BETAS)  # unsorted on purpose
    for log in (False, True):
        ax = plot_slice_2d(s2, log=log, levels=6)
        assert ax.get_xlabel() == "alpha (direction 1)" and ax.get_ylabel() == "beta (direction 2)"
        colorbar = ax.figure.axes[-1]
        assert colorbar.get_ylabel() == "loss"
        origin = [line for line in ax.get_lines() if line.get_label() == "origin"]
        assert len(origin) == 1 and list(origin[0].get_xydata()[0]) == [0.0, 0.0]
        plt.close(ax.figure)
    s1 = loss_slice_1d(objective, batches, d1, ALPHAS)
    fig, ax = plt.subplots()
    assert plot_slice_1d(s1, ax, log=True) is ax
    assert ax.get_xlabel() == "alpha (direction 1)" and ax.get_ylabel() == "loss"
    assert [line.get_label() for line in ax.get_lines()].count("origin") == 1
    plt.close(fig)


def test_plot_errors() -> None:
    flat = Slice2D(torch.tensor([0.0]), torch.tensor([0.0, 1.0]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="at least 2 points along each axis"):
        plot_slice_2d(flat)
    zero = Slice2D(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 1.0], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="log=True needs positive losses"):
        plot_slice_2d(zero, log=True)
    with pytest.raises(ValueError, match="log=True needs positive losses"):
        plot_slice_1d(Slice1D(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])), log=True)
    plt.close("all")
