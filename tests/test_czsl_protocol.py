"""The continual-ZSL methods where they act: inside the protocol, not only as functions.

Flipping the sign of the EWC/MAS penalty, skipping A-GEM's projection or training the
multi-task bound on the last task only must each fail a test here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

import analysis.czsl.protocol as protocol
from analysis.czsl.methods import MethodConfig, ewc_importance, mas_importance
from analysis.czsl.protocol import CZSLConfig, run_czsl
from analysis.czsl.tasks import continual_split
from analysis.normalization import normalize_attributes

BASE = CZSLConfig(cn=True, epochs_per_task=3, batch_size=32, seed=0)


def _weighted_drift(data, split, config, kind: str) -> float:
    """``sum_i Omega_i (theta_i(after task 2) - theta_i(after task 1))^2``: the drift from the
    task-1 anchor in the metric the penalty holds, ``Omega`` the importance (EWC's Fisher or
    MAS's) of the task-1 model on task 1's training images, in the protocol's batches."""
    attributes = normalize_attributes(data.attributes, "l2_sqrt")
    classes = split.task_classes[0]
    samples = split.train[torch.isin(data.labels[split.train], classes)]
    batches = [(data.features[b], protocol._targets(data.labels[b], classes), attributes[classes])
               for b in samples.split(config.batch_size)]
    snapshots, importance = [], {}

    def hook(t: int, model) -> None:
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if t == 1:
            importance.update(ewc_importance(model, batches, nn.functional.cross_entropy) if kind == "ewc"
                              else mas_importance(model, batches))

    run_czsl(data, split, config, on_task_end=hook)
    return sum(float((importance[n] * (snapshots[1][n] - snapshots[0][n]) ** 2).sum()) for n in importance)


@pytest.mark.parametrize(("method", "strong"), [
    ("ewc", MethodConfig(ewc_weight=1e6)),
    ("mas", MethodConfig(mas_weight=1e3)),
])
def test_a_large_penalty_keeps_the_task1_parameters_near_their_anchor(tiny_data, method, strong):
    """A strong EWC/MAS penalty keeps task 2's importance-weighted drift from the task-1
    anchor below 1/20 of plain sequential training's (measured on the tiny data: about
    1/120 for EWC, 1/230 for MAS); with its sign flipped the penalty pushes away instead.
    (Unweighted, Adam's per-parameter step and the parameters of zero importance hide it:
    the plain norm of the drift only falls to about 0.6.)"""
    split = continual_split(tiny_data, 2, seed=0)
    plain = _weighted_drift(tiny_data, split, replace(BASE, method="sequential"), method)
    held = _weighted_drift(tiny_data, split, replace(BASE, method=method, methods=strong), method)
    assert held < plain / 20, (held, plain)


def test_agem_hands_the_optimizer_the_projected_gradient(tiny_data, monkeypatch):
    """Every step after task 1: the gradient Adam sees has a non-negative inner product with
    the memory gradient, and equals the raw gradient when that product already was."""
    seen = []
    original_project = protocol.agem_project

    def recording_project(grad, ref):
        out = original_project(grad, ref)
        seen.append((grad.clone(), ref.clone(), out.clone()))
        return out

    monkeypatch.setattr(protocol, "agem_project", recording_project)
    stepped = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        stepped.append(torch.cat([p.grad.reshape(-1).clone() for g in self.param_groups for p in g["params"]
                                  if p.grad is not None]))
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    split = continual_split(tiny_data, 3, seed=0)
    run_czsl(tiny_data, split, replace(BASE, method="agem", methods=MethodConfig(agem_memory_per_class=5)))
    assert seen, "A-GEM never projected: the memory stayed empty"
    conflicts = 0
    for grad, ref, out in seen:
        scale = float(grad.norm() * ref.norm())
        assert float(out @ ref) >= -1e-5 * scale
        if float(grad @ ref) >= 0:
            assert torch.equal(out, grad)
        else:
            conflicts += 1
    assert conflicts > 0, "no step conflicted with the memory: the test would not see a missing projection"
    # what Adam stepped with is what the projection returned (the last len(seen) steps)
    for (_, _, out), used in zip(seen, stepped[-len(seen):]):
        torch.testing.assert_close(used, out.to(used.dtype), rtol=0, atol=0)


def test_multitask_trains_on_every_task_seen_so_far(tiny_data, monkeypatch):
    """At time t the upper bound's epochs cover the training images of tasks 1..t."""
    batches_by_call = []
    original = protocol._batches

    def recording(indices, batch_size, generator):
        out = original(indices, batch_size, generator)
        batches_by_call.append(torch.cat(out).sort().values)
        return out

    monkeypatch.setattr(protocol, "_batches", recording)
    split = continual_split(tiny_data, 3, seed=0)
    config = replace(BASE, method="multitask", epochs_per_task=1)
    run_czsl(tiny_data, split, config)
    labels = tiny_data.labels[split.train]
    for t, used in enumerate(batches_by_call, start=1):
        wanted = split.train[torch.isin(labels, torch.cat(split.task_classes[:t]))].sort().values
        assert torch.equal(used, wanted), t


# -- the authors' protocol ------------------------------------------------------------------

def test_protocols_resolve_their_recipes_and_refuse_unknown_names():
    toolkit, authors = CZSLConfig(), CZSLConfig(protocol="authors")
    assert (toolkit.optimizer, toolkit.lr, toolkit.weight_decay, toolkit.batch_size, toolkit.epochs_per_task) == (
        "adam", 5e-4, 1e-4, 256, 5)
    assert (authors.optimizer, authors.lr, authors.momentum, authors.weight_decay, authors.batch_size,
            authors.epochs_per_task) == ("sgd", 1e-3, 0.9, 0.0, 32, 10)
    assert CZSLConfig(protocol="authors", batch_size=8).batch_size == 8  # an explicit value wins
    optimizer = authors.make_optimizer([nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(toolkit.make_optimizer([nn.Parameter(torch.zeros(2))]), torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown protocol 'paper'; choose one of toolkit, authors"):
        CZSLConfig(protocol="paper")
    with pytest.raises(ValueError, match="momentum in \\[0, 1\\)"):
        CZSLConfig(protocol="authors", momentum=1.0)


@pytest.mark.parametrize("name", ["toolkit", "authors"])
def test_what_the_embedder_and_the_loss_see_under_each_protocol(tiny_data, monkeypatch, name):
    """authors: every training forward embeds all classes of tasks 1..t and the softmax runs
    over task t's columns only (targets are positions in task t); toolkit: task t's classes
    for both."""
    calls = []
    original_ce = nn.functional.cross_entropy

    def recording_ce(logits, targets, *args, **kwargs):
        calls.append((logits.shape[1], int(targets.max())))
        return original_ce(logits, targets, *args, **kwargs)

    embedded = []
    build = protocol.build_model

    def building(config, seed):
        model = build(config, seed)
        forward = model.forward

        def spying(x, attributes):
            if model.training:
                embedded.append(attributes.detach().clone())
            return forward(x, attributes)

        model.forward = spying
        return model

    monkeypatch.setattr(protocol, "build_model", building)
    monkeypatch.setattr(nn.functional, "cross_entropy", recording_ce)
    split = continual_split(tiny_data, 3, seed=0)
    run_czsl(tiny_data, split, replace(BASE, protocol=name, epochs_per_task=1, batch_size=64))
    attributes = normalize_attributes(tiny_data.attributes, "l2_sqrt")
    steps = len(calls) // 3
    assert steps * 3 == len(calls) == len(embedded)  # the same number of steps per task
    for t in range(1, 4):
        task = split.task_classes[t - 1]
        seen = torch.cat(split.task_classes[:t]).sort().values
        for k in range((t - 1) * steps, t * steps):
            width, top = calls[k]
            assert width == task.numel() and top < task.numel()
            torch.testing.assert_close(embedded[k], attributes[seen if name == "authors" else task],
                                       rtol=0, atol=0)


@pytest.mark.parametrize(("name", "builds"), [("toolkit", 1 + 3), ("authors", 1)])
def test_multitask_is_a_fresh_model_per_step_only_under_the_toolkit_protocol(tiny_data, monkeypatch, name, builds):
    count = [0]
    build = protocol.build_model

    def counting(config, seed):
        count[0] += 1
        return build(config, seed)

    monkeypatch.setattr(protocol, "build_model", counting)
    split = continual_split(tiny_data, 3, seed=0)
    result = run_czsl(tiny_data, split, replace(BASE, method="multitask", protocol=name, epochs_per_task=1,
                                                batch_size=64))
    assert count[0] == builds
    assert result.config.protocol == name and result.config.method == "multitask"
    assert result.before is not None and result.before.time_step == 0
    assert result.summary.mUA_from_0 == pytest.approx(
        (result.before.unseen_accuracy + sum(e.unseen_accuracy for e in result.evaluations[:-1])) / 3, abs=1e-15)
