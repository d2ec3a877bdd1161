"""The authors' EWC, MAS and A-GEM (analysis/czsl/authors_methods.py), against their formulas
written out literally (masked cross-entropy with -inf, sums over batches divided by the
sample count, min-max normalization), and where they act in ``--protocol authors``."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

import analysis.czsl.protocol as protocol
from analysis.czsl.authors_methods import (
    TaskMaskedMemory,
    authors_anchor_penalty,
    authors_ewc_importance,
    authors_mas_importance,
    masked_reference_gradient,
    min_max_normalize,
)
from analysis.czsl.methods import MethodConfig
from analysis.czsl.protocol import CZSLConfig, run_czsl
from analysis.czsl.tasks import continual_split
from analysis.model import preset_config
from analysis.training import build_model
from analysis.normalization import normalize_attributes

AUTHORS = CZSLConfig(protocol="authors", cn=True, epochs_per_task=2, batch_size=32, seed=0)


def _model_and_batches(seed: int = 0):
    """A CN model over 6 classes and two batches (5 and 3 rows) of classes 3..5."""
    g = torch.Generator().manual_seed(seed)
    config = preset_config("cn", 4, 8, hidden_dims=(6,))
    model = build_model(config, seed).double()
    attributes = torch.rand(6, 4, generator=g, dtype=torch.float64)
    batches = [(torch.rand(n, 8, generator=g, dtype=torch.float64), torch.randint(3, 6, (n,), generator=g),
                attributes) for n in (5, 3)]
    return model, batches


def _literal_importance(model, batches, criterion, transform):
    """Their compute_grad: sum over batches of transform(grad of criterion), over the sample count."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for x, y, a in batches:
        grads = torch.autograd.grad(criterion(model(x, a), y), params)
        for acc, grad in zip(total, grads):
            acc += transform(grad)
    n = sum(x.shape[0] for x, _, _ in batches)
    return [acc / n for acc in total]


def test_ewc_importance_is_their_masked_cross_entropy_fisher_min_max_normalized():
    """Labels of the new task (3..5) under logits masked to the previous task's classes (0..2)
    with -inf: an infinite loss with a finite gradient, that of logsumexp over 0..2."""
    model, batches = _model_and_batches()
    columns = torch.tensor([0, 1, 2])
    outside = torch.tensor([3, 4, 5])

    def masked_ce(logits, y):
        return nn.functional.cross_entropy(logits.index_fill(1, outside, float("-inf")), y)

    literal = _literal_importance(model, batches, masked_ce, torch.square)  # train mode: batch statistics
    flat = torch.cat([v.reshape(-1) for v in literal])
    expected = [(v - flat.min()) / (flat.max() - flat.min()) for v in literal]
    ours = authors_ewc_importance(model, batches, columns)
    for (name, value), want in zip(ours.items(), expected, strict=True):
        torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12, msg=name)
    assert min(float(v.min()) for v in ours.values()) == 0.0
    assert max(float(v.max()) for v in ours.values()) == 1.0


def test_mas_importance_is_their_summed_squared_logits_over_the_sample_count():
    model, batches = _model_and_batches(1)
    columns = torch.tensor([0, 2])
    literal = _literal_importance(model, batches, lambda logits, _: logits[:, columns].pow(2).sum(), torch.abs)
    ours = authors_mas_importance(model, batches, columns)
    for value, want in zip(ours.values(), literal, strict=True):
        torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-14)


def test_min_max_normalize_by_hand_and_a_constant_importance():
    out = min_max_normalize({"a": torch.tensor([2.0, 4.0]), "b": torch.tensor([[6.0]])})
    assert out["a"].tolist() == [0.0, 0.5] and out["b"].tolist() == [[1.0]]
    flat = min_max_normalize({"a": torch.full((3,), 7.0)})
    assert flat["a"].tolist() == [0.0, 0.0, 0.0]


def test_their_penalty_has_no_half():
    """``coef sum Omega (theta - a)^2``: EWC coef 10, MAS 1e-4, decay 0.99 / 0.95."""
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    for method, coef, decay in (("ewc", 10.0, 0.99), ("mas", 1e-4, 0.95)):
        penalty = authors_anchor_penalty(method)
        assert penalty.decay == decay
        penalty.consolidate(model, {"weight": torch.tensor([[3.0, 5.0]])})
        with torch.no_grad():
            model.weight.add_(torch.tensor([[1.0, -2.0]]))
        assert float(penalty.penalty(model).detach()) == pytest.approx(coef * (3 * 1 + 5 * 4), rel=1e-6)  # float32
        with torch.no_grad():
            model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="the authors' anchor penalties are 'ewc' and 'mas', got 'agem'"):
        authors_anchor_penalty("agem")


def test_task_masked_memory_adds_per_class_rows_tagged_by_task_and_samples_without_replacement():
    features = torch.arange(24.0).reshape(12, 2)
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 3)
    memory = TaskMaskedMemory(3)
    g = torch.Generator().manual_seed(0)
    memory.add_task(features, labels, 4, g)
    assert len(memory) == 3 + 2 + 3  # min(n_c, per_class)
    memory.add_task(features, labels, 4, g)  # their second call: the same task again
    assert len(memory) == 16
    x, y, tasks = memory.sample(100, g)
    assert x.shape == (16, 2) and bool((tasks == 4).all())
    assert sorted(y.tolist()) == [0] * 6 + [1] * 4 + [2] * 6
    assert torch.equal(features[(x[:, 0] / 2).long()], x)  # every row is a stored input row
    x, y, _ = memory.sample(5, g)
    assert x.shape == (5, 2)
    assert len({tuple(r) for r in x.tolist()}) >= 1
    with pytest.raises(ValueError, match="the memory is empty"):
        TaskMaskedMemory(2).sample(3)
    with pytest.raises(ValueError, match="expected features \\[n, d_z\\] and labels \\[n\\]"):
        memory.add_task(features, labels[:3], 0)
    with pytest.raises(ValueError, match="per_class must be an int >= 1, got 0"):
        TaskMaskedMemory(0)


def test_reference_gradient_masks_each_row_to_its_own_task():
    model, batches = _model_and_batches(2)
    x, _, attributes = batches[0]
    y = torch.tensor([0, 1, 3, 4, 5])
    masks = torch.zeros(5, 6, dtype=torch.bool)
    masks[:2, :3] = True  # rows of task 1 (classes 0..2)
    masks[2:, 3:] = True  # rows of task 2 (classes 3..5)
    model.eval()
    logits = model(x, attributes).masked_fill(~masks, float("-inf"))
    params = list(model.parameters())
    literal = torch.cat([g.reshape(-1) for g in
                         torch.autograd.grad(nn.functional.cross_entropy(logits, y), params)])
    torch.testing.assert_close(masked_reference_gradient(model, x, y, masks, attributes), literal,
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="inside its own task mask"):
        masked_reference_gradient(model, x, torch.tensor([3, 1, 3, 4, 5]), masks, attributes)
    with pytest.raises(ValueError, match=r"masks must be a bool \[m, C\] = \[5, 6\]"):
        masked_reference_gradient(model, x, y, masks.float(), attributes)


# -- where they act in the authors' protocol ------------------------------------------------

def test_authors_importance_is_taken_at_the_start_of_the_next_task_on_its_data(tiny_data, monkeypatch):
    """Before task t (t >= 2): every class embedded, task t's training images, task t-1's
    classes as columns; nothing is consolidated at the end of a task."""
    calls = []
    original = protocol.authors_ewc_importance

    def recording(model, batches, columns):
        batches = list(batches)
        calls.append((torch.cat([y for _, y, _ in batches]).unique(), columns.clone(),
                      {a.shape[0] for _, _, a in batches}))
        return original(model, batches, columns)

    monkeypatch.setattr(protocol, "authors_ewc_importance", recording)
    monkeypatch.setattr(protocol, "ewc_importance", lambda *a, **k: pytest.fail("toolkit EWC under authors"))
    split = continual_split(tiny_data, 3, seed=0)
    result = run_czsl(tiny_data, split, replace(AUTHORS, method="ewc"))
    assert len(result.evaluations) == 3 and len(calls) == 2
    for t, (labels, columns, widths) in enumerate(calls, start=2):
        assert torch.equal(labels, split.task_classes[t - 1].sort().values)
        assert torch.equal(columns, split.task_classes[t - 2])
        assert widths == {tiny_data.attributes.shape[0]}


def _drift_after_task_2(data, split, config) -> float:
    """``sum F (theta_2 - theta_1)^2`` with ``F`` the authors' EWC importance of the task-1
    model on task 2's images (the same model for every method: task 1 has no penalty)."""
    attributes = normalize_attributes(data.attributes, "l2_sqrt")
    samples = split.train[torch.isin(data.labels[split.train], split.task_classes[1])]
    batches = [(data.features[b], data.labels[b], attributes) for b in samples.split(32)]
    snapshots, importance = [], {}

    def hook(t: int, model) -> None:
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
        if t == 1:
            importance.update(authors_ewc_importance(model, batches, split.task_classes[0]))

    run_czsl(data, split, config, on_task_end=hook)
    return sum(float((importance[n] * (snapshots[1][n] - snapshots[0][n]) ** 2).sum()) for n in importance)


def test_a_strong_authors_penalty_holds_the_task1_parameters(tiny_data):
    """With coef 1000 the drift in the importance's metric falls below 1/5 of sequential
    training's (measured: 1/10; 1/3 at coef 200, 1/1.2 at the default 10, whose pull is weak
    over these 8 steps); with the penalty's sign flipped it grows instead."""
    split = continual_split(tiny_data, 2, seed=0)
    plain = _drift_after_task_2(tiny_data, split, replace(AUTHORS, method="sequential"))
    held = _drift_after_task_2(tiny_data, split, replace(AUTHORS, method="ewc", methods=MethodConfig(ewc_weight=1000.0)))
    assert held < plain / 5, (held, plain)


def test_authors_agem_adds_each_task_twice_and_masks_its_reference_rows(tiny_data, monkeypatch):
    sizes, masks_seen = [], []
    original = protocol.masked_reference_gradient

    def recording(model, x, y, masks, attributes):
        sizes.append(x.shape[0])
        masks_seen.append((y.clone(), masks.clone()))
        assert attributes.shape[0] == tiny_data.attributes.shape[0]  # every class embedded
        return original(model, x, y, masks, attributes)

    monkeypatch.setattr(protocol, "masked_reference_gradient", recording)
    split = continual_split(tiny_data, 3, seed=0)
    per_class = 2
    run_czsl(tiny_data, split, replace(AUTHORS, method="agem", epochs_per_task=1,
                                      methods=MethodConfig(agem_memory_per_class=per_class)))
    assert CZSLConfig(protocol="authors").methods.agem_memory_batch == 128
    assert CZSLConfig().methods.agem_memory_batch == 256
    train_labels = tiny_data.labels[split.train]
    stored = [2 * sum(min(int((train_labels == c).sum()), per_class) for c in split.task_classes[t].tolist())
              for t in range(3)]
    steps_per_task = len(sizes) // 2
    assert sizes[:steps_per_task] == [min(128, stored[0])] * steps_per_task  # task 2 sees task 1's rows
    assert sizes[steps_per_task:] == [min(128, stored[0] + stored[1])] * steps_per_task
    for y, masks in masks_seen:
        for label, row in zip(y.tolist(), masks):
            task = next(t for t, c in enumerate(split.task_classes) if label in c.tolist())
            assert torch.equal(row.nonzero().flatten(), split.task_classes[task].sort().values)


def test_importance_columns_must_be_classes_of_the_embedded_set():
    """Columns index the embedded classes (rows of the attributes, 6 here, with 4 attribute
    columns): 5 is accepted, 6 and an empty set are refused, by both importances."""
    model, batches = _model_and_batches(3)
    for importance in (authors_ewc_importance, authors_mas_importance):
        assert set(importance(model, batches, torch.tensor([5]))) == {n for n, _ in model.named_parameters()}
        with pytest.raises(ValueError, match=r"columns must lie in \[0, 6\) \(one per embedded class\), got 0\.\.6"):
            importance(model, batches, torch.tensor([0, 6]))
        with pytest.raises(ValueError, match="columns must be a non-empty 1-D tensor of class indices"):
            importance(model, batches, torch.tensor([], dtype=torch.long))
