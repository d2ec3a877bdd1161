"""The recipe loop's two paths: the plain loop and the static-buffer / CUDA-graph fast path."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from analysis.evaluation import evaluate
from analysis.model import preset_config
from analysis.normalization import normalize_attributes
from analysis.recipe_loop import _fit_plain, _fit_static, fit, resolve_fast_path
from analysis.seed_ensemble import train_seeds
from analysis.training import TrainConfig, build_model, seen_targets, train

SMALL = dict(hidden_dims=(16, 16))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graphs)")


def _problem(data, seed=1):
    config = preset_config("cn", data.attribute_dim, data.feature_dim, **SMALL)
    model = build_model(config, seed)
    att = normalize_attributes(data.attributes)[data.seen_classes]
    x, y = data.features[data.trainval], seen_targets(data)
    shuffle = torch.Generator().manual_seed(seed)
    return (model, lambda rows: torch.nn.functional.cross_entropy(model(x[rows], att), y[rows]),
            lambda: torch.randperm(len(y), generator=shuffle), len(y))


def test_static_buffer_epochs_equal_the_plain_loop_on_cpu(tiny_data):
    """The fast path's code (static permutation buffer, tensor learning rate filled by StepLR,
    on-device epoch sums), run eagerly, against the plain loop: the same run to float32
    rounding, through two learning-rate decays."""
    recipe = TrainConfig(epochs=12, batch_size=64, lr_step_epochs=4, progress=False)
    plain_model, loss, order, n = _problem(tiny_data)
    plain = _fit_plain(list(plain_model.parameters()), loss, order, n, recipe, torch.device("cpu"), None)
    static_model, loss, order, n = _problem(tiny_data)
    static = _fit_static(list(static_model.parameters()), loss, order, n, recipe, torch.device("cpu"), graph=False)
    torch.testing.assert_close(torch.stack(static.loss), torch.stack(plain.loss), rtol=1e-5, atol=0)
    assert static.steps == plain.steps == 12 * -(-n // 64) and static.path == "static"
    assert len(static.epoch_seconds) == 12 and all(t >= 0 for t in static.epoch_seconds)
    for a, b in zip(static_model.parameters(), plain_model.parameters()):
        assert (a - b).abs().max() <= recipe.lr * plain.steps  # Adam's rounding bound
    assert plain.loss[-1] < plain.loss[0]  # it trained


def test_fast_path_choice_and_refusals():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_fast_path("auto", cpu, False) == "plain"
    assert resolve_fast_path("auto", cuda, False) == "graph"
    assert resolve_fast_path("auto", cuda, True) == "plain"  # a callback needs the step in Python
    assert resolve_fast_path("plain", cuda, False) == "plain"
    with pytest.raises(ValueError, match="needs a CUDA device, got cpu; use fast_path='auto' or 'plain'"):
        resolve_fast_path("graph", cpu, False)
    with pytest.raises(ValueError, match="cannot call on_step inside a captured epoch"):
        resolve_fast_path("graph", cuda, True)
    with pytest.raises(ValueError, match="unknown fast_path 'compile'"):
        resolve_fast_path("compile", cpu, False)
    with pytest.raises(ValueError, match="unknown fast_path 'fast'; choose one of"):
        TrainConfig(fast_path="fast")


def test_fit_on_cpu_takes_the_plain_path_and_calls_back(tiny_data):
    model, loss, order, n = _problem(tiny_data)
    seen = []
    log = fit(model.parameters(), loss, order, n, TrainConfig(epochs=1, batch_size=100, progress=False),
              torch.device("cpu"), on_step=lambda step, epoch, value, rows: seen.append((step, rows.numel())))
    assert log.path == "plain" and [s for s, _ in seen] == list(range(log.steps))
    assert sum(k for _, k in seen) == n  # every row once per epoch, the last batch smaller


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_run_equals_the_plain_loop(tiny_data):
    """Same seed, plain loop and whole-epoch CUDA graphs on the GPU: losses to float32
    rounding, accuracies within one test image per class."""
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    recipe = TrainConfig(epochs=6, batch_size=64, lr_step_epochs=2, progress=False, device="cuda")
    runs = {}
    for path in ("plain", "graph"):
        model = build_model(config, 1)
        runs[path] = (model, train(model, tiny_data, replace(recipe, fast_path=path)))
    assert runs["graph"][1].path == "graph" and runs["plain"][1].path == "plain"
    torch.testing.assert_close(torch.tensor(runs["graph"][1].loss), torch.tensor(runs["plain"][1].loss),
                               rtol=1e-4, atol=1e-6)
    a, b = (evaluate(runs[p][0], tiny_data) for p in ("plain", "graph"))
    # fractions, not percent: one test image of the smallest class moves a per-class mean
    # by at most 1 / N_min, and H = 2SU/(S+U) moves by at most twice the larger of dS, dU
    counts = torch.bincount(tiny_data.labels[torch.cat([tiny_data.test_seen, tiny_data.test_unseen])])
    one_image = 1.0 / int(counts[counts > 0].min())
    assert abs(a.zsl_unseen - b.zsl_unseen) <= one_image and abs(a.gzsl_harmonic - b.gzsl_harmonic) <= 2 * one_image


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_seed_ensemble_equals_separate_plain_runs(tiny_data):
    config = preset_config("cn", tiny_data.attribute_dim, tiny_data.feature_dim, **SMALL)
    recipe = TrainConfig(epochs=4, batch_size=64, lr_step_epochs=2, progress=False, device="cuda")
    models, histories = train_seeds(config, tiny_data, recipe, [1, 2, 3])
    assert histories[0].path == "graph"
    for seed, history in zip([1, 2, 3], histories):
        ref = build_model(config, seed)
        ref_history = train(ref, tiny_data, replace(recipe, seed=seed, fast_path="plain"))
        torch.testing.assert_close(torch.tensor(history.loss), torch.tensor(ref_history.loss), rtol=1e-4, atol=1e-6)
