"""The loss as a pure function of the parameters and its Hessian-vector products
(landscape/objective.py, landscape/hvp.py).

Every product is checked against a dense oracle: ``torch.func.hessian`` of the flattened
loss, in float64, on tiny models (a CN attribute embedder with 79 parameters and a linear
classifier with 30).  Purity is checked bitwise: parameters, buffers (CN running
statistics), ``.grad`` and every submodule's ``training`` flag.
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import eigsh

from analysis.class_standardization import ClassStandardization
from analysis.model import AttributeEmbedderModel, ClassifierConfig, LinearClassifier, preset_config
from analysis.normalization import normalize_attributes
from landscape.hvp import HessianOperator, gradient_norm, gradient_norms_by_layer, hessian_vector_product
from landscape.objective import Batch, Objective, parameter_names, zsl_batches

D_A, D_Z, K = 4, 6, 5  # attribute dim, feature dim, classes scored
RTOL = 1e-10  # against the dense oracle (observed ~1e-15)
ROUND_OFF = 1e-12  # between two float64 evaluations of the same quantity
F64 = torch.float64


# -- tiny cases ------------------------------------------------------------------------
def _embedder(seed: int = 0) -> AttributeEmbedderModel:
    """CN embedder 4 -> 5 -> 4 (S, ReLU, S) -> 6, float64, with non-trivial running statistics."""
    gen = torch.Generator().manual_seed(seed)
    model = AttributeEmbedderModel(preset_config("cn", D_A, D_Z, hidden_dims=(5, 4)), generator=gen).double()
    model.train()
    with torch.no_grad():  # move the running statistics away from their (0, 1) init
        for _ in range(3):
            model(torch.rand(4, D_Z, generator=gen, dtype=F64), torch.randn(7, D_A, generator=gen, dtype=F64))
    return model


def _classifier(seed: int = 0) -> LinearClassifier:
    gen = torch.Generator().manual_seed(seed)
    return LinearClassifier(ClassifierConfig(K, D_Z), generator=gen).double()


MODELS = {"cn": _embedder, "linear": _classifier}


def _batches(seed: int, sizes: tuple[int, ...]) -> list[Batch]:
    """Batches sharing one class set (as zsl_batches), features >= 0 like ResNet features."""
    gen = torch.Generator().manual_seed(seed)
    attributes = normalize_attributes(torch.rand(K, D_A, generator=gen, dtype=F64))
    return [Batch(torch.rand(n, D_Z, generator=gen, dtype=F64), torch.randint(0, K, (n,), generator=gen),
                  attributes) for n in sizes]


def _concat(batches: list[Batch]) -> Batch:
    return Batch(torch.cat([b.features for b in batches]), torch.cat([b.targets for b in batches]),
                 batches[0].attributes)


def _dense_hessian(objective: Objective, batch: Batch) -> torch.Tensor:
    """The oracle: ``[n, n]`` Hessian of the flattened loss at the model's parameters."""
    flat = objective.flatten(objective.params())
    hessian = torch.func.hessian(lambda f: objective.loss(objective.unflatten(f), batch))
    with warnings.catch_warnings():
        # torch.func.hessian is jacfwd(jacrev): torch 2.13's first forward-AD call imports
        # decompositions that call the deprecated torch.jit.script (torch's own warning).
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                category=DeprecationWarning)
        return hessian(flat)


def _random_vector(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _assert_relative(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    error, scale = float((actual - expected).norm()), float(expected.norm())
    assert scale > 0
    assert error <= rtol * scale, f"relative error {error / scale:.3e} > {rtol:.0e}"


def _offsets(objective: Objective) -> dict[str, slice]:
    """Position of each probed parameter in the flat vector."""
    out, start = {}, 0
    for name, numel in zip(objective.names, objective.numels):
        out[name] = slice(start, start + numel)
        start += numel
    return out


# -- (a) products against the dense Hessian ----------------------------------------------
@pytest.mark.parametrize("method", ["double_backward", "forward_over_reverse"])
@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_hvp_equals_dense_hessian_times_vector(kind, statistics, method):
    model = MODELS[kind]()
    objective = Objective(model, statistics=statistics)
    (batch,) = _batches(1, (9,))
    hessian = _dense_hessian(objective, batch)
    torch.testing.assert_close(hessian, hessian.T, rtol=0, atol=1e-12 * float(hessian.abs().max()))
    for seed in range(3):
        v = _random_vector(objective.num_parameters, seed)
        hv = hessian_vector_product(objective, objective.params(), v, [batch], method=method)
        _assert_relative(hv, hessian @ v, RTOL)


@pytest.mark.parametrize("statistics", ["batch", "running"])
@pytest.mark.parametrize("selection", [("embedder.0",), ("embedder.6",), ("embedder.6.bias", "embedder.2.weight")])
def test_restricted_hvp_is_the_sub_block_of_the_full_hessian(statistics, selection):
    model = _embedder()
    (batch,) = _batches(2, (8,))
    full = Objective(model, statistics=statistics)
    hessian = _dense_hessian(full, batch)
    names = [name for module in selection for name in parameter_names(model, module)]
    restricted = Objective(model, statistics=statistics, parameters=names)
    # the flat order is the model's, whatever order the names were listed in
    assert list(restricted.names) == [name for name in full.names if name in names]
    index = torch.cat([torch.arange(full.num_parameters)[_offsets(full)[name]] for name in restricted.names])
    block = hessian[index][:, index]
    v = _random_vector(restricted.num_parameters, 3)
    hv = hessian_vector_product(restricted, restricted.params(), v, [batch])
    _assert_relative(hv, block @ v, RTOL)
    _assert_relative(HessianOperator(restricted, [batch]) @ v, block @ v, RTOL)


def test_forward_over_reverse_does_not_warn_in_a_fresh_process():
    # torch 2.13 warns (from its own code) on the first forward-AD call of a process; the
    # library silences exactly that warning, so probes run under -W error (a subprocess:
    # in this process the oracle may already have made the first call).
    script = (
        "import torch\n"
        "from analysis.model import LinearClassifier, ClassifierConfig\n"
        "from landscape.objective import Batch, Objective\n"
        "from landscape.hvp import hessian_vector_product\n"
        "model = LinearClassifier(ClassifierConfig(3, 4)).double()\n"
        "batch = Batch(torch.rand(5, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.int64),"
        " torch.zeros(3, 2, dtype=torch.float64))\n"
        "objective = Objective(model)\n"
        "v = torch.ones(objective.num_parameters, dtype=torch.float64)\n"
        "hessian_vector_product(objective, objective.params(), v, [batch], method='forward_over_reverse')\n"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_batch_and_running_statistics_are_different_functions():
    # The two options must matter on a CN model whose running statistics are not the
    # statistics of the classes passed in, and must reproduce the model's own forward.
    model = _embedder()
    (batch,) = _batches(4, (6,))
    losses = {}
    for statistics, training in (("batch", True), ("running", False)):
        objective = Objective(model, statistics=statistics)
        losses[statistics] = objective.loss(objective.params(), batch)
        reference = torch.func.functional_call(model.train(training), dict(model.named_parameters()),
                                               (batch.features, batch.attributes))
        model.train()
        torch.testing.assert_close(losses[statistics],
                                   torch.nn.functional.cross_entropy(reference, batch.targets),
                                   rtol=0, atol=0)
    assert not torch.isclose(losses["batch"], losses["running"])


# -- (b) data-set averages -------------------------------------------------------------
@pytest.mark.parametrize(("kind", "statistics"), [("cn", "batch"), ("cn", "running"), ("linear", "batch")])
def test_batch_average_weighted_by_samples_equals_full_batch(kind, statistics):
    # The loss is a mean over samples, so the full-batch loss is sum_b n_b L_b / N.  With CN
    # in "batch" statistics this still holds: the statistics are taken over the class axis
    # of the embedder's [K, d_h] hidden matrix, i.e. they depend on the attributes only, and
    # every batch passes the same classes; the images of a batch never enter them, so the
    # loss of a sample does not depend on which other images share its batch.
    model = MODELS[kind]()
    objective = Objective(model, statistics=statistics)
    batches = _batches(5, (7, 2, 4))  # unequal sizes: weights 7/13, 2/13, 4/13
    full = _concat(batches)
    hessian = _dense_hessian(objective, full)
    theta = objective.params()
    v = _random_vector(objective.num_parameters, 6)
    expected = hessian @ v
    _assert_relative(hessian_vector_product(objective, theta, v, batches), expected, RTOL)
    for reuse in (False, True):
        _assert_relative(HessianOperator(objective, batches, reuse_graph=reuse) @ v, expected, RTOL)
    torch.testing.assert_close(objective.mean_loss(theta, batches), objective.loss(theta, full),
                               rtol=ROUND_OFF, atol=0)
    _assert_relative(objective.flatten(objective.gradient(theta, batches)),
                     objective.flatten(objective.gradient(theta, [full])), ROUND_OFF)
    # the weighting is what makes it right: an unweighted mean of the batches differs
    unweighted = sum(hessian_vector_product(objective, theta, v, [b]) for b in batches) / len(batches)
    assert float((unweighted - expected).norm()) > 1e-3 * float(expected.norm())


def test_zsl_batches_split_trainval_sequentially(tiny_data):
    data = tiny_data
    batches = zsl_batches(data, batch_size=64)
    n = data.trainval.numel()
    assert [b.size for b in batches] == [64] * (n // 64) + [n % 64]
    (full,) = zsl_batches(data)
    assert full.size == n
    torch.testing.assert_close(_concat(batches).features, data.features[data.trainval], rtol=0, atol=0)
    torch.testing.assert_close(data.seen_classes[full.targets], data.labels[data.trainval], rtol=0, atol=0)
    seen_attributes = normalize_attributes(data.attributes, "l2_sqrt")[data.seen_classes]
    for b in batches:
        torch.testing.assert_close(b.attributes, seen_attributes, rtol=0, atol=0)
    # the objective on real batches: mini-batch average = full batch (float64 copies)
    gen = torch.Generator().manual_seed(0)
    model = AttributeEmbedderModel(preset_config("cn", data.attribute_dim, data.feature_dim, hidden_dims=(5, 4)),
                                   generator=gen).double()
    objective = Objective(model)
    batches64 = [b.to(dtype=F64) for b in batches]
    full64 = full.to(dtype=F64)
    theta = objective.params()
    _assert_relative(objective.flatten(objective.gradient(theta, batches64)),
                     objective.flatten(objective.gradient(theta, [full64])), ROUND_OFF)
    v = _random_vector(objective.num_parameters, 1)
    _assert_relative(hessian_vector_product(objective, theta, v, batches64),
                     HessianOperator(objective, [full64]) @ v, ROUND_OFF)


# -- (c) scipy LinearOperator ------------------------------------------------------------
def test_linear_operator_matches_matvec_and_the_dense_spectrum():
    model = _embedder()
    objective = Objective(model)
    (batch,) = _batches(7, (10,))
    operator = HessianOperator(objective, [batch])
    linear = operator.as_linear_operator()
    n = objective.num_parameters
    assert linear.shape == operator.shape == (n, n) and linear.dtype == np.float64
    v = _random_vector(n, 8)
    y = linear.matvec(v.numpy())
    assert isinstance(y, np.ndarray) and y.dtype == np.float64 and y.shape == (n,)
    np.testing.assert_allclose(y, operator.matvec(v).numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(linear.rmatvec(v.numpy()), y, rtol=0, atol=0)
    assert linear.matmat(np.stack([v.numpy(), 2 * v.numpy()], axis=1)).shape == (n, 2)
    # largest algebraic eigenvalues through scipy equal the dense oracle's
    dense = torch.linalg.eigvalsh(_dense_hessian(objective, batch)).numpy()
    top = np.sort(eigsh(linear, k=3, which="LA", v0=np.ones(n), tol=1e-12)[0])
    np.testing.assert_allclose(top, dense[-3:], rtol=1e-8, atol=1e-10 * np.abs(dense).max())


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), reuse=st.booleans(),
       kind=st.sampled_from(list(MODELS)))
def test_operator_is_symmetric(seed, reuse, kind):
    model = MODELS[kind](seed % 1000)
    objective = Objective(model)
    operator = HessianOperator(objective, _batches(seed, (5,)), reuse_graph=reuse)
    u, v = _random_vector(objective.num_parameters, seed), _random_vector(objective.num_parameters, seed + 1)
    hu, hv = operator @ u, operator @ v
    scale = float(u.norm() * hv.norm() + v.norm() * hu.norm())
    assert abs(float(u @ hv - v @ hu)) <= ROUND_OFF * scale


# -- (d) graph reuse -------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MODELS))
def test_graph_reuse_equals_recomputation(kind):
    model = MODELS[kind]()
    objective = Objective(model)
    one, several = _batches(9, (6,)), _batches(9, (6, 3))
    assert HessianOperator(objective, one).reuse_graph is True  # automatic: one batch
    assert HessianOperator(objective, several).reuse_graph is False
    reused = HessianOperator(objective, one, reuse_graph=True)
    recomputed = HessianOperator(objective, one, reuse_graph=False)
    for seed in range(3):  # the stored graph survives many products
        v = _random_vector(objective.num_parameters, seed)
        _assert_relative(reused @ v, recomputed @ v, ROUND_OFF)
    columns = torch.stack([_random_vector(objective.num_parameters, s) for s in (10, 11)], dim=1)
    _assert_relative(reused @ columns, torch.stack([recomputed @ c for c in columns.unbind(1)], 1), ROUND_OFF)
    reused.as_linear_operator().matvec(np.ones(objective.num_parameters))
    assert reused.num_matvecs == 3 + 2 + 1
    assert (reused.dtype, reused.device) == (F64, torch.device("cpu"))


def test_operator_origin_is_a_copy_taken_at_construction():
    model = _embedder()
    objective = Objective(model)
    (batch,) = _batches(12, (6,))
    v = _random_vector(objective.num_parameters, 0)
    theta = objective.params()
    expected = hessian_vector_product(objective, theta, v, [batch])
    for reuse in (True, False):
        operator = HessianOperator(objective, [batch], params=theta, reuse_graph=reuse)
        theta[0].add_(1.0)  # the caller's tensors change afterwards: the operator does not
        _assert_relative(operator @ v, expected, ROUND_OFF)
        theta[0].sub_(1.0)


# -- (e) purity --------------------------------------------------------------------------
def _snapshot(model: torch.nn.Module):
    state = {name: (t, t.detach().clone()) for name, t in model.state_dict(keep_vars=True).items()}
    flags = [(m, m.training) for m in model.modules()]
    updates = [(m, m.update_running_stats) for m in model.modules() if isinstance(m, ClassStandardization)]
    return state, flags, updates


def _assert_unchanged(model: torch.nn.Module, snapshot) -> None:
    state, flags, updates = snapshot
    now = model.state_dict(keep_vars=True)
    assert list(now) == list(state)
    for name, (tensor, copy) in state.items():
        assert now[name] is tensor, f"{name} was replaced"
        bits = lambda t: t.detach().reshape(-1).view(torch.uint8)  # noqa: E731
        assert torch.equal(bits(tensor), bits(copy)), f"{name} changed"
        assert tensor.grad is None, f"{name}.grad was written"
    assert [m.training for m, _ in flags] == [flag for _, flag in flags]
    assert [m.update_running_stats for m, _ in updates] == [flag for _, flag in updates]


def _set_mode(model: torch.nn.Module, mode: str) -> None:
    model.train(mode != "eval")
    if mode == "mixed":  # a submodule's own flag differs from the root's
        next(m for m in model.modules() if isinstance(m, ClassStandardization)).eval()


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_every_probe_leaves_the_model_bitwise_unchanged(mode):
    model = _embedder()
    _set_mode(model, mode)
    snapshot = _snapshot(model)
    batches = _batches(13, (5, 3))
    for statistics in ("batch", "running"):
        objective = Objective(model, statistics=statistics)
        theta = objective.params()
        v = _random_vector(objective.num_parameters, 0)
        objective.loss(theta, batches[0])
        objective.mean_loss(theta, batches)
        objective.gradient(theta, batches)
        for method in ("double_backward", "forward_over_reverse"):
            hessian_vector_product(objective, theta, v, batches, method=method)
        for reuse in (True, False):
            operator = HessianOperator(objective, batches[:1], reuse_graph=reuse)
            operator @ v
            operator.as_linear_operator().matvec(v.numpy())
        gradient_norm(objective, batches)
        gradient_norms_by_layer(model, batches, statistics=statistics)
        _dense_hessian(objective, batches[0])
        _assert_unchanged(model, snapshot)
    # an error inside the forward pass still restores every flag
    bad = Batch(batches[0].features, batches[0].targets, torch.ones(K, D_A + 1, dtype=F64))
    with pytest.raises(ValueError, match="expected attributes of shape"):
        Objective(model, statistics="batch").loss(objective.params(), bad)
    _assert_unchanged(model, snapshot)


# -- (f) gradient norms ------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "statistics"), [("cn", "batch"), ("cn", "running"), ("linear", "batch")])
def test_gradient_norms_match_autograd_of_the_mean_loss(kind, statistics):
    model = MODELS[kind]()
    batches = _batches(14, (6, 4))
    full = _concat(batches)
    # reference: plain autograd on a copy of the model in the matching mode
    reference = MODELS[kind]()
    reference.train(statistics == "batch")
    for module in reference.modules():
        if isinstance(module, ClassStandardization):
            module.update_running_stats = False
    loss = torch.nn.functional.cross_entropy(reference(full.features, full.attributes), full.targets)
    grads = dict(zip([name for name, _ in reference.named_parameters()],
                     torch.autograd.grad(loss, list(reference.parameters()))))
    total = float(torch.cat([g.reshape(-1) for g in grads.values()]).norm())

    objective = Objective(model, statistics=statistics)
    assert math.isclose(gradient_norm(objective, batches), total, rel_tol=ROUND_OFF)
    by_layer = gradient_norms_by_layer(model, batches, statistics=statistics)
    expected_groups = ["embedder.0", "embedder.2", "embedder.6"] if kind == "cn" else ["weight"]
    assert list(by_layer) == [*expected_groups, "total"]
    assert math.isclose(by_layer["total"], total, rel_tol=ROUND_OFF)
    assert math.isclose(sum(by_layer[g] ** 2 for g in expected_groups), total**2, rel_tol=ROUND_OFF)
    for group in expected_groups:
        # absolute, in units of the total: a Linear just before S (embedder.2) has a gradient
        # of order eps only (S is shift- and, up to eps, scale-invariant: V5), made of
        # cancelling terms, so its norm carries round-off relative to the total, not to itself
        own = [g for name, g in grads.items() if name == group or name.startswith(group + ".")]
        assert math.isclose(by_layer[group], float(torch.cat([g.reshape(-1) for g in own]).norm()),
                            rel_tol=ROUND_OFF, abs_tol=ROUND_OFF * total)
    # at another point: params passed explicitly
    theta = tuple(p + 0.1 for p in objective.params())
    assert math.isclose(gradient_norm(objective, batches, theta),
                        float(objective.flatten(objective.gradient(theta, [full])).norm()), rel_tol=ROUND_OFF)


def test_flatten_and_unflatten_are_inverse_in_model_order():
    model = _embedder()
    objective = Objective(model)
    assert objective.names == tuple(parameter_names(model))
    assert objective.num_parameters == sum(p.numel() for p in model.parameters()) == 79
    flat = objective.flatten(objective.params())
    by_hand = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(flat, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(objective.flatten(objective.unflatten(flat)), flat, rtol=0, atol=0)
    assert parameter_names(model, "embedder.6") == ["embedder.6.weight", "embedder.6.bias"]
    assert parameter_names(model, "embedder.6.bias") == ["embedder.6.bias"]


# -- (g) CUDA --------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is available")
def test_cuda_products_match_the_dense_hessian_and_the_cpu():
    model = _embedder().cuda()
    snapshot = _snapshot(model)
    batches = [b.to("cuda") for b in _batches(15, (6, 3))]
    objective = Objective(model)
    assert objective.device.type == "cuda"
    v = _random_vector(objective.num_parameters, 0)  # a CPU vector is moved to the model's device
    hessian = _dense_hessian(objective, _concat(batches))
    hv = hessian_vector_product(objective, objective.params(), v, batches)
    assert hv.device.type == "cuda"
    _assert_relative(hv, hessian @ v.cuda(), RTOL)
    operator = HessianOperator(objective, batches[:1])
    assert operator.device.type == "cuda"
    y = operator.as_linear_operator().matvec(v.numpy())
    cpu = Objective(_embedder())
    np.testing.assert_allclose(y, HessianOperator(cpu, [_batches(15, (6, 3))[0]]).matvec(v).numpy(),
                               rtol=1e-9, atol=1e-12 * np.abs(y).max())
    gradient_norms_by_layer(model, batches)
    _assert_unchanged(model, snapshot)


# -- (h) errors --------------------------------------------------------------------------
def test_objective_rejects_bad_configuration():
    model = _embedder()
    with pytest.raises(ValueError, match=r"unknown parameter name\(s\) \['embedder.9.weight'\]"):
        Objective(model, parameters=["embedder.0.weight", "embedder.9.weight"])
    with pytest.raises(ValueError, match="lists a name twice"):
        Objective(model, parameters=["embedder.0.bias", "embedder.0.bias"])
    with pytest.raises(ValueError, match="no parameter selected"):
        Objective(model, parameters=[])
    with pytest.raises(TypeError, match="must be a list of names"):
        Objective(model, parameters="embedder.0")
    with pytest.raises(ValueError, match="unknown statistics 'eval'"):
        Objective(model, statistics="eval")
    with pytest.raises(ValueError, match="no submodule or parameter 'embedder.4'"):
        parameter_names(model, "embedder.4")
    model.embedder[0].bias.data = model.embedder[0].bias.data.float()
    with pytest.raises(ValueError, match="share one dtype and device"):
        Objective(model)
    Objective(model, parameters=parameter_names(model, "embedder.6"))  # a uniform subset is fine


def test_probes_reject_bad_inputs():
    model = _embedder()
    objective = Objective(model)
    theta = objective.params()
    batches = _batches(16, (4,))
    n = objective.num_parameters
    v = _random_vector(n, 0)
    for call in (lambda: hessian_vector_product(objective, theta, v, []),
                 lambda: HessianOperator(objective, []),
                 lambda: objective.gradient(theta, []),
                 lambda: objective.mean_loss(theta, []),
                 lambda: gradient_norm(objective, []),
                 lambda: gradient_norms_by_layer(model, [])):
        with pytest.raises(ValueError, match="batches is empty"):
            call()
    with pytest.raises(TypeError, match="must hold Batch objects"):
        objective.gradient(theta, [(batches[0].features, batches[0].targets)])
    operator = HessianOperator(objective, batches)
    for call in (lambda: hessian_vector_product(objective, theta, v[:-1], batches),
                 lambda: operator.matvec(torch.cat([v, v])),
                 lambda: operator @ v[:10]):
        with pytest.raises(ValueError, match=f"vector must be flat with length {n}"):
            call()
    with pytest.raises(ValueError, match=f"expected a flat vector of length {n}"):
        objective.unflatten(v.reshape(1, -1))
    with pytest.raises(ValueError, match=rf"expected a matrix \[{n}, k\]"):
        operator @ torch.zeros(n + 1, 2, dtype=F64)
    with pytest.raises(TypeError, match="vector must be a torch.Tensor"):
        operator.matvec(v.numpy())
    with pytest.raises(ValueError, match="unknown method 'reverse_over_forward'"):
        hessian_vector_product(objective, theta, v, batches, method="reverse_over_forward")
    with pytest.raises(TypeError, match="reuse_graph must be True, False or None"):
        HessianOperator(objective, batches, reuse_graph="auto")
    with pytest.raises(ValueError, match="params must hold 6 tensors"):
        objective.loss(theta[:-1], batches[0])
    with pytest.raises(ValueError, match="entry for 'embedder.0.weight' must have shape"):
        HessianOperator(objective, batches, params=(theta[0].T, *theta[1:]))
    meta = Batch(torch.empty(3, D_Z, device="meta"), torch.zeros(3, dtype=torch.int64, device="meta"),
                 torch.empty(K, D_A, device="meta"))
    with pytest.raises(ValueError, match="batch is on meta .* move it with batch.to"):
        objective.loss(theta, meta)


def test_batch_and_zsl_batches_reject_bad_shapes(tiny_data):
    z, y, a = torch.zeros(3, D_Z), torch.zeros(3, dtype=torch.int64), torch.zeros(K, D_A)
    with pytest.raises(ValueError, match=r"Batch.features must be a \[B, d_z\] matrix with B >= 1"):
        Batch(torch.zeros(0, D_Z), y[:0], a)
    with pytest.raises(ValueError, match=r"Batch.targets must have shape \(3,\)"):
        Batch(z, y[:2], a)
    with pytest.raises(ValueError, match=r"Batch.attributes must be a \[K, d_a\] matrix"):
        Batch(z, y, a[0])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
            zsl_batches(tiny_data, batch_size=bad)
