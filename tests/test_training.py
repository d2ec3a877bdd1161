"""Training recipe: equals a hand-written reference loop, deterministic, callbacks, devices."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from analysis.model import ClassifierConfig, preset_config
from analysis.normalization import normalize_attributes
from analysis.training import TrainConfig, build_model, resolve_device, train_model

SMALL = dict(hidden_dims=(16, 16))


def _config(data, preset="cn"):
    return preset_config(preset, data.attribute_dim, data.feature_dim, **SMALL)


def test_matches_a_hand_written_reference_loop_bitwise(tiny_data):
    cfg = TrainConfig(epochs=3, batch_size=64, lr_step_epochs=2, seed=5, progress=False, device="cpu")
    ours, _ = train_model(_config(tiny_data), tiny_data, cfg)

    # the recipe written out plainly: Adam + L2, StepLR, reshuffle per epoch, seen-class CE
    ref = build_model(_config(tiny_data), seed=5)
    seen = tiny_data.seen_classes
    att = normalize_attributes(tiny_data.attributes, "l2_sqrt")[seen]
    x_all = tiny_data.features[tiny_data.trainval]
    y_all = torch.searchsorted(seen, tiny_data.labels[tiny_data.trainval])
    opt = torch.optim.Adam(ref.parameters(), lr=5e-4, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    shuffle = torch.Generator().manual_seed(5)
    for _ in range(3):
        for idx in torch.randperm(len(y_all), generator=shuffle).split(64):
            loss = nn.functional.cross_entropy(ref(x_all[idx], att), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k


def test_fused_and_foreach_adam_give_the_same_run_to_float32_rounding(tiny_data):
    runs = [train_model(_config(tiny_data), tiny_data,
                        TrainConfig(epochs=3, batch_size=64, fused_optimizer=f, progress=False))
            for f in (True, False)]
    torch.testing.assert_close(torch.tensor(runs[0][1].loss), torch.tensor(runs[1][1].loss), rtol=1e-5, atol=0)
    # parameters: an Adam step moves each coordinate by at most about lr, and rounding can
    # flip the sign of a near-zero gradient, so the bound is lr per step (12 steps here)
    steps = runs[0][1].steps
    for a, b in zip(runs[0][0].parameters(), runs[1][0].parameters()):
        assert (a - b).abs().max() <= 5e-4 * steps


def test_same_seed_same_run_and_history_shape(tiny_data):
    cfg = TrainConfig(epochs=2, batch_size=100, progress=False, device="cpu")
    m1, h1 = train_model(_config(tiny_data), tiny_data, cfg)
    m2, h2 = train_model(_config(tiny_data), tiny_data, cfg)
    assert h1.loss == h2.loss
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert len(h1.loss) == len(h1.epoch_seconds) == 2
    assert h1.steps == 2 * math.ceil(tiny_data.trainval.numel() / 100)  # last partial batch kept
    assert h1.seconds >= sum(h1.epoch_seconds) * 0.99 and h1.device == "cpu"
    _, h3 = train_model(_config(tiny_data), tiny_data, TrainConfig(epochs=2, batch_size=100, seed=2, progress=False))
    assert h3.loss != h1.loss


def test_epoch_loss_is_the_sample_weighted_mean_of_step_losses(tiny_data):
    steps = []
    cfg = TrainConfig(epochs=1, batch_size=100, progress=False)
    _, history = train_model(_config(tiny_data), tiny_data, cfg,
                             on_step=lambda s: steps.append((s.step, s.epoch, float(s.loss), s.targets.numel())))
    assert [s[0] for s in steps] == list(range(len(steps)))
    n = sum(s[3] for s in steps)
    assert n == tiny_data.trainval.numel()
    assert history.loss[0] == pytest.approx(sum(s[2] * s[3] for s in steps) / n, rel=1e-6)


def test_several_step_callbacks_are_called_in_order_with_one_step_info(tiny_data):
    """on_step=[f, g] calls f then g after every step, both with the same StepInfo; a tuple works
    alike, [] is no callback, and the run is the one a single callback gives."""
    cfg = TrainConfig(epochs=1, batch_size=100, progress=False, device="cpu")
    calls: list[tuple[str, int, int]] = []

    def first(info):
        calls.append(("first", info.step, id(info)))

    def second(info):
        calls.append(("second", info.step, id(info)))

    _, history = train_model(_config(tiny_data), tiny_data, cfg, on_step=[first, second])
    steps = history.steps
    assert [(name, step) for name, step, _ in calls] == [(n, s) for s in range(steps) for n in ("first", "second")]
    assert all(calls[2 * s][2] == calls[2 * s + 1][2] for s in range(steps))  # one StepInfo per step
    calls.clear()
    _, again = train_model(_config(tiny_data), tiny_data, cfg, on_step=(second, first))
    assert [name for name, _, _ in calls[:2]] == ["second", "first"] and again.loss == history.loss
    _, single = train_model(_config(tiny_data), tiny_data, cfg, on_step=first)
    _, none = train_model(_config(tiny_data), tiny_data, cfg, on_step=[])
    assert single.loss == none.loss == history.loss


@pytest.mark.parametrize("on_step, match", [
    ("print", r"on_step must be a callable f\(StepInfo\), a list or tuple of them, or None, got str"),
    ([print, 3], r"not callable at index 1: int"),
])
def test_step_callbacks_that_are_not_callable_are_refused(tiny_data, on_step, match):
    with pytest.raises(TypeError, match=match):
        train_model(_config(tiny_data), tiny_data, TrainConfig(epochs=1, progress=False, device="cpu"),
                    on_step=on_step)


def test_training_reduces_the_loss_for_both_model_kinds(tiny_data):
    cfg = TrainConfig(epochs=15, batch_size=32, lr=3e-3, progress=False)
    _, h = train_model(_config(tiny_data, "mlp"), tiny_data, cfg)
    assert h.loss[-1] < 0.7 * h.loss[0]
    clf = ClassifierConfig(num_classes=int(tiny_data.seen_classes.numel()), feature_dim=tiny_data.feature_dim)
    _, h = train_model(clf, tiny_data, cfg)
    assert h.loss[-1] < 0.7 * h.loss[0]


def test_training_updates_cn_running_statistics(tiny_data):
    model, _ = train_model(_config(tiny_data), tiny_data, TrainConfig(epochs=1, progress=False))
    stats = [b for name, b in model.named_buffers() if name.endswith("running_var")]
    assert len(stats) == 2 and all(not torch.equal(s, torch.ones_like(s)) for s in stats)


def test_device_resolution_and_config_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu or auto"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="need lr > 0"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="unknown attribute_norm 'unit'"):
        TrainConfig(attribute_norm="unit")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'; choose one of \('auto', 'cpu', 'cuda'\)"):
        resolve_device("tpu")
    with pytest.raises(TypeError, match="expected an EmbedderConfig or ClassifierConfig, got dict"):
        build_model({}, seed=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_cpu_run(tiny_data):
    cfg = dict(epochs=2, batch_size=64, progress=False)
    _, cpu = train_model(_config(tiny_data), tiny_data, TrainConfig(device="cpu", **cfg))
    model, gpu = train_model(_config(tiny_data), tiny_data, TrainConfig(device="cuda", **cfg))
    assert next(model.parameters()).is_cuda
    torch.testing.assert_close(torch.tensor(gpu.loss), torch.tensor(cpu.loss), rtol=1e-4, atol=1e-5)


def test_the_progress_bar_is_named_by_progress_label(tiny_data, capsys):
    """``TrainConfig.progress_label`` names the epoch bar (``landscape`` names each model)."""
    from analysis.training import TrainConfig, build_model, train
    from analysis.model import preset_config

    assert TrainConfig().progress_label == "train"
    model = build_model(preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim), 1)
    train(model, tiny_data, TrainConfig(epochs=1, progress=True, progress_label="train MLP + CN", device="cpu"))
    assert "train MLP + CN" in capsys.readouterr().err
