"""A diverging run is said to diverge: NaN/inf stops it with DivergedError, a rising loss is flagged."""

from __future__ import annotations

import json
import pytest
import torch
from torch import nn

from analysis import experiment, training
from analysis.cli import main
from analysis.model import preset_config
from analysis.recipe_loop import _fit_static
from analysis.training import DivergedError, History, TrainConfig, train, train_model

CPU = dict(progress=False, device="cpu")


class _NaNAfter(nn.Module):
    """A linear classifier over the attributes whose logits become NaN from call ``bad`` on (0-based)."""

    def __init__(self, feature_dim: int, attribute_dim: int, bad: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(feature_dim, attribute_dim))
        self.bad, self.calls = bad, 0

    def forward(self, features, attributes):
        logits = features @ self.weight @ attributes.T
        self.calls += 1
        return logits * float("nan") if self.calls > self.bad else logits


def test_a_nan_loss_stops_the_run_naming_epoch_step_and_last_finite_loss(tiny_data):
    # 240 trainval rows in batches of 64: 4 steps per epoch; call 6 (0-based) is epoch 2, step 3
    model = _NaNAfter(tiny_data.feature_dim, tiny_data.attribute_dim, bad=6)
    seen = []
    with pytest.raises(DivergedError, match=r"epoch 2, step 3 of 4 \(global step 7\).*last finite loss was "
                                            r".*lower the learning rate \(--lr, now 0.01\)") as info:
        train(model, tiny_data, TrainConfig(epochs=5, batch_size=64, lr=1e-2, **CPU),
              on_step=lambda s: seen.append(float(s.loss)))
    err = info.value
    assert isinstance(err, ValueError) and (err.epoch, err.step) == (2, 3)
    assert err.loss != err.loss and err.last_finite_loss == seen[5]  # the step before, global step 6
    assert model.calls == len(seen) == 8  # stopped at the end of epoch 2, not after 5 epochs


def test_a_nan_first_step_says_there_is_no_finite_loss(tiny_data):
    model = _NaNAfter(tiny_data.feature_dim, tiny_data.attribute_dim, bad=0)
    with pytest.raises(DivergedError, match="epoch 1, step 1 of 4.*very first step was already non-finite") as info:
        train(model, tiny_data, TrainConfig(epochs=2, batch_size=64, **CPU))
    assert info.value.last_finite_loss is None


def test_the_static_buffer_path_names_the_same_step(tiny_data):
    # the code the CUDA graph path captures, run eagerly on the CPU; the NaN falls in epoch 1's first step
    model = _NaNAfter(tiny_data.feature_dim, tiny_data.attribute_dim, bad=4)
    features = tiny_data.features[tiny_data.trainval]
    attributes = tiny_data.attributes[tiny_data.seen_classes]
    targets = torch.searchsorted(tiny_data.seen_classes, tiny_data.labels[tiny_data.trainval])

    def step_loss(rows):
        return nn.functional.cross_entropy(model(features[rows], attributes), targets[rows])

    g = torch.Generator().manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=1e-2, **CPU)
    with pytest.raises(DivergedError, match=r"epoch 2, step 1 of 4 \(global step 5\).*last finite loss was") as info:
        _fit_static(list(model.parameters()), step_loss, lambda: torch.randperm(240, generator=g), 240, cfg,
                    torch.device("cpu"), graph=False)
    assert info.value.last_finite_loss > 0


@pytest.mark.parametrize(("loss", "diverged"), [([4.6, 6.4], True), ([4.6, 1.2], False), ([4.6], False),
                                                ([2.0, 2.0015], False), ([2.0, 2.0021], True)])
def test_history_flags_a_loss_that_rose(loss, diverged):
    # the documented rule: last > first * (1 + 1e-3)
    assert History(loss=loss).diverged is diverged


def _tiny_run(monkeypatch, tiny_data, tmp_path, *args):
    monkeypatch.setattr(experiment, "load_dataset", lambda *a, **k: tiny_data)
    out = tmp_path / "run"
    rc = main(["train", "--epochs", "4", "--batch-size", "64", "--device", "cpu", "--no-save-model", "--no-progress",
               "--out", str(out), *args])
    return rc, out


def test_cli_flags_a_run_whose_loss_rose_and_still_writes_it(monkeypatch, tiny_data, tmp_path, capsys):
    rc, out = _tiny_run(monkeypatch, tiny_data, tmp_path, "--lr", "100")
    captured = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert rc == 0 and results["diverged"] is True and results["loss"][-1] > results["loss"][0]
    a, b = results["loss"][0], results["loss"][-1]
    assert f"warning: the training loss rose from {a:.4g} to {b:.4g}: the run diverged; lower --lr" in captured.err
    assert "GZSL-H" in captured.out


def test_cli_flags_a_diverged_seed_among_several(monkeypatch, tiny_data, tmp_path, capsys):
    rc, out = _tiny_run(monkeypatch, tiny_data, tmp_path, "--lr", "100", "--seeds", "1,2")
    err = capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    flagged = [r["seed"] for r in results["per_seed"] if r["diverged"]]
    assert rc == 0 and results["diverged"] is bool(flagged) and 1 in flagged
    assert all(f"warning: seed {s}: the training loss rose from" in err for s in flagged)


def test_cli_does_not_flag_a_normal_run(monkeypatch, tiny_data, tmp_path, capsys):
    rc, out = _tiny_run(monkeypatch, tiny_data, tmp_path)
    err = capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert rc == 0 and results["diverged"] is False and "warning" not in err


def test_cli_nan_loss_is_one_line_exit_2_and_writes_nothing(monkeypatch, tiny_data, tmp_path, capsys):
    # ZSLData refuses NaN features, so the NaN comes from the model: the preset's model is swapped
    monkeypatch.setattr(training, "build_model",
                        lambda config, seed: _NaNAfter(tiny_data.feature_dim, tiny_data.attribute_dim, bad=5))
    rc, out = _tiny_run(monkeypatch, tiny_data, tmp_path)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("cnzsl: error: the training loss diverged: it became nan at epoch 2, step 2 of 4 ")
    assert "last finite loss was" in err and "lower the learning rate (--lr, now 0.0005)" in err
    assert not out.exists() or not any(out.iterdir())


def test_train_model_flags_a_rising_loss_on_tiny_data(tiny_data):
    cfg = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, hidden_dims=(16, 16))
    _, high = train_model(cfg, tiny_data, TrainConfig(epochs=4, batch_size=64, lr=100.0, **CPU))
    _, normal = train_model(cfg, tiny_data, TrainConfig(epochs=4, batch_size=64, **CPU))
    assert high.loss[-1] > high.loss[0] and high.diverged
    assert normal.loss[-1] < normal.loss[0] and not normal.diverged
