"""Tests of landscape.santurkar: loss variation, gradient predictiveness, effective beta, probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from analysis.class_standardization import ClassStandardization
from analysis.model import AttributeEmbedderModel, ClassifierConfig, LinearClassifier, preset_config
from analysis.training import StepInfo, TrainConfig, build_model, train
from landscape.objective import Batch, Objective, zsl_batches
from landscape.santurkar import (
    DEFAULT_MULTIPLIERS,
    SanturkarProbe,
    effective_smoothness,
    gradient_predictiveness,
    loss_variation,
    santurkar_measure,
)
from tests.landscape_cases import Quadratic as _Quadratic
from tests.landscape_cases import assert_unchanged as _assert_unchanged
from tests.landscape_cases import identity_loss as _identity_loss
from tests.landscape_cases import snapshot as _snapshot

ETAS = [0.0, 0.05, 0.1, 0.4]


# -- cases -----------------------------------------------------------------------------
def _cn_model() -> AttributeEmbedderModel:
    """A tiny float64 CN model (d_a 12, d_z 32) whose running statistics are not the defaults."""
    model = AttributeEmbedderModel(preset_config("cn", 12, 32, hidden_dims=(5, 4)),
                                   generator=torch.Generator().manual_seed(0)).double()
    model.train()
    model.prototypes(torch.randn(6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    assert any(not torch.equal(m.running_var, torch.ones_like(m.running_var))
               for m in model.modules() if isinstance(m, ClassStandardization))
    return model


@pytest.fixture(scope="module")
def batches(tiny_data) -> list[Batch]:
    return [b.to(dtype=torch.float64) for b in zsl_batches(tiny_data, batch_size=100)]  # 100, 100, 40


def _quadratic_case(x0: Tensor | None = None) -> tuple[Objective, Batch, Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64, generator=g))
    a = q @ torch.diag(torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=torch.float64)) @ q.T
    if x0 is None:
        x0 = torch.randn(5, dtype=torch.float64, generator=g)
    batch = Batch(torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.int64),
                  torch.zeros(1, 1, dtype=torch.float64))
    return Objective(_Quadratic(a, x0), _identity_loss), batch, a, x0


# -- the three probes ------------------------------------------------------------------
def test_quadratic_is_exact() -> None:
    objective, batch, a, x = _quadratic_case()
    g = a @ x
    etas = torch.tensor(ETAS, dtype=torch.float64)
    grid, losses = loss_variation(objective, batch, etas)
    assert torch.equal(grid, etas)
    y = x[None] - etas[:, None] * g  # [E, 5]
    torch.testing.assert_close(losses, 0.5 * torch.einsum("ei,ij,ej->e", y, a, y), rtol=1e-13, atol=0)
    # grad L(x - eta g) = A x - eta A g: the change is eta A g
    ag = torch.linalg.vector_norm(a @ g)
    torch.testing.assert_close(gradient_predictiveness(objective, batch, etas), etas * ag, rtol=1e-12, atol=0)
    beta = effective_smoothness(objective, batch, etas[1:])
    assert beta == pytest.approx(float(ag / torch.linalg.vector_norm(g)), rel=1e-12)


def test_zero_step_and_zero_gradient() -> None:
    objective, batch, _, x = _quadratic_case()
    _, losses = loss_variation(objective, batch, [0.0])
    assert torch.equal(losses[0], objective.loss(objective.params(), batch))
    assert torch.equal(gradient_predictiveness(objective, batch, [0.0]), torch.zeros(1, dtype=torch.float64))
    at_minimum, batch, _, _ = _quadratic_case(torch.zeros(5, dtype=torch.float64))
    assert math.isnan(effective_smoothness(at_minimum, batch, [0.1, 1.0]))  # g = 0: no step, undefined


def test_measure_agrees_with_the_functions(batches: list[Batch]) -> None:
    objective = Objective(_cn_model())
    batches = batches[1:]  # two batches (100 + 40 samples): the sample-weighted mean
    m = santurkar_measure(objective, batches, ETAS)
    grid, losses = loss_variation(objective, batches, ETAS)
    assert torch.equal(m.etas, grid) and torch.equal(m.losses, losses)
    assert torch.equal(m.predictiveness, gradient_predictiveness(objective, batches, ETAS))
    assert m.effective_beta == effective_smoothness(objective, batches, ETAS[1:])
    assert m.loss == float(objective.mean_loss(objective.params(), batches))
    assert m.gradient_norm == pytest.approx(float(objective.flatten(objective.gradient(objective.params(), batches))
                                                  .norm()), rel=1e-14)
    assert m.predictiveness[0] == 0 and m.losses[0] == m.loss
    assert math.isfinite(m.effective_beta) and m.effective_beta > 0


def test_small_steps_descend_and_explicit_params(batches: list[Batch]) -> None:
    model = LinearClassifier(ClassifierConfig(6, 32), generator=torch.Generator().manual_seed(0)).double()
    objective = Objective(model)
    # not 2 * theta: the cosine head makes the loss invariant to the scale of the weight rows
    theta = tuple(p + 0.05 * torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(9))
                  for p in objective.params())
    _, losses = loss_variation(objective, batches[0], [0.0, 1e-4], params=theta)
    assert losses[1] < losses[0]  # -g is a descent direction
    assert losses[0] == objective.loss(theta, batches[0])
    assert losses[0] != objective.loss(objective.params(), batches[0])


@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("training", [True, False])
def test_probes_are_pure(batches: list[Batch], statistics: str, training: bool) -> None:
    model = _cn_model().train(training)
    model.embedder[0].train(not training)  # a submodule whose flag differs from the root's
    snapshot = _snapshot(model)
    rng = torch.get_rng_state()
    objective = Objective(model, statistics=statistics)
    loss_variation(objective, batches[:1], ETAS)
    gradient_predictiveness(objective, batches[:1], ETAS)
    effective_smoothness(objective, batches[:1], ETAS[1:])
    santurkar_measure(objective, batches[:1], ETAS)
    _assert_unchanged(model, snapshot)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_probe_errors(batches: list[Batch]) -> None:
    objective = Objective(_cn_model())
    with pytest.raises(ValueError, match=r"needs step sizes eta > 0"):
        effective_smoothness(objective, batches, [0.0, 0.1])
    with pytest.raises(ValueError, match=r"needs step sizes eta > 0"):
        effective_smoothness(objective, batches, [-0.1])
    with pytest.raises(ValueError, match="etas must be a non-empty 1-D grid"):
        loss_variation(objective, batches, [])
    with pytest.raises(ValueError, match="etas must be finite"):
        gradient_predictiveness(objective, batches, [0.1, float("inf")])
    with pytest.raises(ValueError, match="batch is empty"):
        santurkar_measure(objective, [], ETAS)
    with pytest.raises(ValueError, match="must hold"):
        loss_variation(objective, batches, ETAS, params=objective.params()[:1])


# -- the training-time probe -----------------------------------------------------------
_TRAIN = TrainConfig(epochs=2, batch_size=64, seed=2, device="cpu", progress=False)  # 4 steps per epoch


def _train(tiny_data, on_step=None) -> tuple[nn.Module, list[float], bool]:
    """The trained model, its loss history, and whether the global RNG was left alone."""
    # nn.Linear draws its default init from the global RNG before build_model overwrites
    # it with the seeded generator: watch the RNG during the run only
    model = build_model(preset_config("cn", 12, 32, hidden_dims=(5, 4)), _TRAIN.seed)
    rng = torch.get_rng_state()
    history = train(model, tiny_data, _TRAIN, on_step=on_step)
    return model, history.loss, torch.equal(torch.get_rng_state(), rng)


def test_probe_does_not_disturb_training(tiny_data) -> None:
    plain, plain_loss, _ = _train(tiny_data)
    probe = SanturkarProbe(every=1)
    probed, probed_loss, rng_untouched = _train(tiny_data, probe)
    assert rng_untouched  # neither the training loop nor the probe draws from the global RNG
    assert probed_loss == plain_loss
    for (name, p), q in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.equal(p, q), name  # parameters and CN running statistics, bitwise
    assert probed.training and plain.training
    arrays = probe.as_arrays()
    assert list(arrays["step"]) == list(range(8)) and list(arrays["epoch"]) == [0] * 4 + [1] * 4
    assert arrays["losses"].shape == arrays["predictiveness"].shape == (8, 4)
    np.testing.assert_array_equal(arrays["etas"], _TRAIN.lr * np.array(DEFAULT_MULTIPLIERS))
    assert (arrays["loss_min"] <= arrays["loss_max"]).all()
    assert (arrays["predictiveness_min"] <= arrays["predictiveness_max"]).all()
    assert np.isfinite(arrays["effective_beta"]).all() and (arrays["effective_beta"] > 0).all()
    np.testing.assert_array_equal(arrays["loss_min"], arrays["losses"].min(axis=1))


def test_probe_measures_the_step_batch_after_the_step(tiny_data) -> None:
    probe = SanturkarProbe(steps={1, 5}, etas=[1e-3, 1e-2])
    seen: dict[int, tuple[dict[str, Tensor], Batch]] = {}

    def on_step(info: StepInfo) -> None:
        if probe.wants(info.step):
            seen[info.step] = ({k: v.clone() for k, v in info.model.state_dict().items()},
                               Batch(info.features.clone(), info.targets.clone(), info.attributes.clone()))
        probe(info)

    _train(tiny_data, on_step)
    assert [r["step"] for r in probe.records] == [1, 5] == sorted(seen)
    for record in probe.records:
        state, batch = seen[record["step"]]
        model = build_model(preset_config("cn", 12, 32, hidden_dims=(5, 4)), 0)
        model.load_state_dict(state)
        m = santurkar_measure(Objective(model.train()), batch, [1e-3, 1e-2])
        assert record["loss"] == m.loss and record["effective_beta"] == m.effective_beta
        np.testing.assert_array_equal(record["predictiveness"], m.predictiveness.numpy())


def test_probe_schedule_and_grid() -> None:
    assert [s for s in range(10) if SanturkarProbe(every=3).wants(s)] == [0, 3, 6, 9]
    assert [s for s in range(10) if SanturkarProbe().wants(s)] == list(range(10))
    assert [s for s in range(10) if SanturkarProbe(steps=[2, 7]).wants(s)] == [2, 7]
    probe = SanturkarProbe(lr=0.1)
    assert probe.etas.tolist() == [0.05, 0.1, 0.2, 0.4]
    assert probe.as_arrays()["losses"].shape == (0, 4)
    assert "every=1" in repr(probe)


def test_probe_spec_errors() -> None:
    with pytest.raises(ValueError, match="give steps or every, not both"):
        SanturkarProbe(steps={1}, every=2)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        SanturkarProbe(every=0)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        SanturkarProbe(every=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="steps must be an iterable of step numbers"):
        SanturkarProbe(steps="10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="steps must be an iterable of step numbers"):
        SanturkarProbe(steps=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="steps must hold integers"):
        SanturkarProbe(steps={1.5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"steps are 0-based global step numbers \(>= 0\)"):
        SanturkarProbe(steps={-1})
    with pytest.raises(ValueError, match="step sizes must all be > 0"):
        SanturkarProbe(etas=[0.0, 1.0])
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        SanturkarProbe(lr=-1.0)
    with pytest.raises(ValueError, match="unknown statistics"):
        SanturkarProbe(statistics="eval")
