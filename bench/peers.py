"""The project's curvature probes against the peer libraries, in one run, on one function.

Setting (defaults): the reference CN model ``build_model(preset_config("cn", 85, 2048), 1)``
on synthetic AWA2, ONE batch of the first 2048 trainval samples
(``zsl_batches(data, batch_size=2048)[0]``), the training objective ``Objective(model)``
(statistics ``"batch"``: CN normalizes with the statistics of the classes passed in, no
running statistic updated; ``analysis/probe_mode.py``), float32, ``--threads 1``.
Our HVPs go through ``HessianOperator(objective, [batch])`` (graph reuse).

The peers see the same function: a small ``nn.Module`` whose ``forward(features)`` is
``model(features, attributes)`` under ``probe_mode(model, "batch")`` (so PyHessian's
``model.eval()`` cannot switch CN to its running statistics), and
``nn.CrossEntropyLoss()`` on the seen-class targets.  Before any peer is timed, its HVP
on one random vector must equal ours to 1e-4 relative (float32); a peer that fails is
excluded from the tables and the script exits with status 1.

Truth (float64, a ``deepcopy(model).double()``): ``--truth-steps`` Lanczos steps with full
reorthogonalization (``lanczos_tridiagonal``), the top Ritz values and their explicit
residuals ``||H y - theta y||`` (an eigenvalue lies within that distance).  The trace
(``--truth-trace-method auto``): exact when ``n <= 10 000`` (the sum of the ``n`` diagonal
entries ``e_i^T H e_i``, n products: the ``--small`` model, where a 300-product Hutch++
estimate was off by 7 %, 2.9 standard errors); otherwise an ESTIMATE with its standard error, ``hutchpp_trace`` with
``--truth-trace-matvecs`` products, or, when Hutch++'s sketch would not fit in
``--truth-memory-gib`` (the full-size model: 4 x n x m/3 doubles, 35 GB), the sum of the
converged Ritz values of the eigenvalue truth (exact on their span, no product) plus
``hutchinson_trace`` on ``H`` deflated by their Ritz vectors (each product also projects
twice against them: on the full model most of a first run's time).  The truth is cached in ``--truth-cache`` under a key made of the model's and
batch's bytes and the truth settings, so reruns skip it.

Rows (each: HVPs, wall time = median of ``--repeats`` including the operator's
construction, relative errors of lambda_1..lambda_k against the truth (both sides sorted
descending), whether every parameter, buffer and ``training`` flag of the model was left
bitwise unchanged, and what happened to ``param.grad``: each run starts with a planted
random ``.grad`` and reports it "untouched", "cleared" (set to None) or "overwritten"):

- ours: ``lanczos_top_eigenvalues(op.matvec, n, k)`` at its defaults (tol 1e-3 on each
  eigenvalue, largest algebraic, the operator's float32); ``power_iteration(tol=1e-3)``, the baseline (largest
  magnitude).  HVPs: ``op.num_matvecs``, checked against the result's ``num_matvecs``.
- PyHessian ``hessian(...).eigenvalues(top_n=k)`` at its defaults (power iteration,
  maxIter 100, tol 1e-3 on the change of the Rayleigh quotient; largest magnitude) and
  with maxIter=1000, tol=1e-4.  HVPs: calls of ``pyhessian.hessian.hessian_vector_product``
  (patched with a counter for the call).
- curvlinops ``HessianLinearOperator`` + ``scipy.sparse.linalg.eigsh(k, which="LA",
  tol=1e-3)`` on ``.to_scipy()``.  HVPs: columns passed to the operator's ``_matmat``
  (a counting subclass), which includes the 2 products of the constructor's default
  ``check_deterministic``; the scipy-side count (a wrapping ``LinearOperator``) must be
  that total minus the constructor's.
- hessian-eigenthings: the 1.0 alphas on PyPI have no ``compute_hessian_eigenthings``;
  ``lanczos(HessianOperator(...), k, which="LA")`` at its defaults (``max_iter = 2k``
  steps, no convergence loop) and with ``max_iter=100, reorthogonalize=True`` (its default
  turns reorthogonalization off above 50 steps).  HVPs: calls of ``matvec`` (a counting
  subclass), checked against the result's ``iterations``.
- Trace at EQUAL products (``--trace-matvecs``, default 30) over ``--trace-seeds`` seeds:
  ours ``hutchinson_trace``, ``hutchpp_trace``, ``xtrace`` (when ``landscape`` exports
  it), all in float32; PyHessian ``trace(maxIter=m, tol=-inf)`` (``tol=-inf``: exactly m
  products; its stderr is computed here from the samples it returns); curvlinops
  ``hutchinson_trace``, ``hutchpp_trace``, ``xtrace``; hessian-eigenthings ``hutchinson``,
  ``hutch_plus_plus``.  RMS relative error over the seeds, mean reported standard error
  (relative to the trace), RMS of (estimate - truth) / stderr (about 1 when the stderr is
  honest), median seconds per estimate.

What one HVP costs differs: ours and PyHessian build the gradient graph once per operator
(one gradient, not counted) and each product is a double-backward pass through it;
hessian-eigenthings recomputes forward, backward and double backward for every product;
curvlinops computes forward-over-reverse (``jvp`` of ``jacrev``), all columns of a
matrix at once under ``vmap`` (its trace estimators multiply all probes in one call).

Randomness: ours and hessian-eigenthings take explicit generators / seeds.  PyHessian
(``torch.randn``, ``torch.randint_like``) and curvlinops (``Tensor.bernoulli_``,
``torch.rand`` in ``check_deterministic``) draw from the GLOBAL torch RNG: this script calls
``torch.manual_seed(seed)`` right before each of their calls.  eigsh gets ``v0`` from a
seeded NumPy generator.

Peers come from the optional extra ``peers`` (never a dependency of the toolkit).  Their
resolver would replace the installed torch (backpack-for-pytorch, required by curvlinops,
requires torchvision, whose newest release pins torch 2.14.1 with CUDA wheels), so install
them without dependencies and name the non-torch ones::

    pip install --no-deps pyhessian curvlinops-for-pytorch hessian-eigenthings \\
        backpack-for-pytorch einops einconv unfoldNd linear_operator opt_einsum

(backpack's torchvision import is only in ``backpack.utils.examples``; ``pip check`` will
name torchvision as missing).  Tested with pyhessian 0.1, curvlinops-for-pytorch 3.0.1,
hessian-eigenthings 1.0.0a5.  A peer that cannot be imported gives rows "skipped: <reason>".

    python bench/peers.py [--repeats 3] [--threads 1] [--json peers.json]
    python bench/peers.py --small          # tiny model and data, well under a minute

The script asserts correctness only (HVP agreement, HVP counts, finite results), never a
timing.  Absolute seconds are not comparable across machines; ratios within a run are.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import f as f_distribution
from torch import Tensor, nn

import analysis
import landscape
from analysis.io import environment_info, write_json
from analysis.synthetic import SyntheticSpec

# --small: TINY_SPEC of tests/conftest.py with 512 trainval samples (room for a batch of 256)
SMALL_SPEC = SyntheticSpec("TINY", num_seen=6, num_unseen=3, attribute_dim=12, trainval=512,
                           test_seen=60, test_unseen=90, feature_dim=32, noise=0.5)
PEERS = {"pyhessian": "pyhessian", "curvlinops": "curvlinops-for-pytorch",
         "hessian_eigenthings": "hessian-eigenthings"}  # import name -> distribution name
HVP_RTOL = 1e-4  # peer HVP vs ours, relative 2-norm, float32
TRUTH_SEED = 12345  # truth start vector and trace probes; the rows use seeds 0..
EXACT_TRACE_MAX_N = 10_000  # auto: the exact trace (n float64 products) up to this n


@dataclass(frozen=True)
class PeersConfig:
    small: bool = False  # tiny model and data (smoke run)
    dataset: str = "AWA2"  # synthetic preset of the full setting
    seed: int = 1  # model init
    batch_size: int | None = None  # None: 2048 (256 with --small)
    ks: tuple[int, ...] = (1, 5)  # eigenvalue counts of the rows
    repeats: int = 3  # timed runs per eigenvalue row (median)
    threads: int = 1  # torch.set_num_threads
    truth_steps: int | None = None  # None: 150 (100 with --small)
    truth_trace_matvecs: int | None = None  # None: 1000 (300 with --small)
    truth_trace_method: str = "auto"  # "exact", "hutchpp", "lanczos-deflated"; auto: by n and memory
    truth_memory_gib: float = 4.0  # auto: Hutch++ only when its sketch fits in this
    truth_cache: str = str(Path(__file__).resolve().parent / ".peers_truth.json")  # "" disables
    recompute_truth: bool = False
    trace_matvecs: int = 30  # products per trace estimate, the same for every method
    trace_seeds: int = 10
    sections: tuple[str, ...] = ("eigen", "trace")  # which tables to compute
    trace_only: tuple[str, ...] = ()  # trace rows whose label contains one of these (empty: all)
    json: str | None = None


def _log(message: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ setting
class PeerModel(nn.Module):
    """``forward(features [B, d_z]) = model(features, attributes) [B, K]`` under
    ``probe_mode(model, "batch")``: the training objective's function whatever mode a
    peer puts the module in.  ``attributes`` is a plain attribute, not a buffer, so the
    peers see exactly the model's parameters and buffers."""

    def __init__(self, model: nn.Module, attributes: Tensor) -> None:
        super().__init__()
        self.model = model
        self.attributes = attributes

    def forward(self, features: Tensor) -> Tensor:
        with analysis.probe_mode(self.model, "batch"):
            return self.model(features, self.attributes)


@dataclass
class Problem:
    model: nn.Module
    batch: landscape.Batch
    objective: landscape.Objective
    peer_model: PeerModel
    n: int
    description: str


def build_problem(config: PeersConfig) -> Problem:
    if config.small:
        data = analysis.make_synthetic(SMALL_SPEC, seed=0)
        model_config = analysis.preset_config("cn", data.attribute_dim, data.feature_dim, hidden_dims=(64, 64))
        name = "synthetic TINY (--small)"
    else:
        data = analysis.load_dataset(config.dataset)
        model_config = analysis.preset_config("cn", data.attribute_dim, data.feature_dim)
        name = f"synthetic {config.dataset}"
    model = analysis.build_model(model_config, config.seed)
    batch = landscape.zsl_batches(data, batch_size=config.batch_size)[0]
    objective = landscape.Objective(model)
    description = (f"{name} · CN preset, hidden {model_config.hidden_dims}, seed {config.seed} · "
                   f"n = {objective.num_parameters:,} parameters · one batch of {batch.size} · "
                   f"{batch.attributes.shape[0]} seen classes · statistics \"batch\" · {objective.dtype}")
    return Problem(model, batch, objective, PeerModel(model, batch.attributes), objective.num_parameters,
                   description)


# -------------------------------------------------------------------------------- truth
def _fingerprint(problem: Problem) -> str:
    h = hashlib.sha256()
    for name, tensor in problem.model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for tensor in (problem.batch.features, problem.batch.targets, problem.batch.attributes):
        h.update(tensor.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _trace_method(config: PeersConfig, n: int) -> str:
    if config.truth_trace_method != "auto":
        return config.truth_trace_method
    if n <= EXACT_TRACE_MAX_N:
        return "exact"
    sketch_bytes = 4 * n * (config.truth_trace_matvecs // 3) * 8  # S, A S (list + stack), Q
    return "hutchpp" if sketch_bytes <= config.truth_memory_gib * 2**30 else "lanczos-deflated"


def compute_truth(problem: Problem, config: PeersConfig, kmax: int) -> dict[str, Any]:
    """float64 top-kmax eigenvalues (Lanczos, explicit residuals) and a trace estimate."""
    start = time.perf_counter()
    model64 = copy.deepcopy(problem.model).double()
    objective64 = landscape.Objective(model64)
    op64 = landscape.HessianOperator(objective64, [problem.batch.to(dtype=torch.float64)])
    n = problem.n
    steps = min(config.truth_steps, n)
    _log(f"truth: {steps} float64 Lanczos steps (n = {n:,})")
    lan = landscape.lanczos_tridiagonal(op64.matvec, n, steps, generator=torch.Generator().manual_seed(TRUTH_SEED),
                                        dtype=torch.float64)
    m = lan.num_matvecs
    tri = torch.diag(lan.alpha) + torch.diag(lan.beta, 1) + torch.diag(lan.beta, -1)
    theta, s = torch.linalg.eigh(tri)  # ascending
    top = torch.arange(m - 1, m - 1 - min(kmax, m), -1)
    ritz = s[:, top].T @ lan.basis  # [kmax, n]
    ritz = ritz / ritz.norm(dim=1, keepdim=True)
    residuals = [float((op64.matvec(y) - theta[i] * y).norm()) for y, i in zip(ritz, top.tolist())]
    del ritz
    method = _trace_method(config, n)
    _log(f"truth: trace by {method}, {n if method == 'exact' else config.truth_trace_matvecs} products (float64)")
    generator = torch.Generator().manual_seed(TRUTH_SEED + 1)
    deflation_rank = None
    if method == "exact":
        unit = torch.zeros(n, dtype=torch.float64)
        trace = 0.0
        for i in range(n):
            unit[i] = 1.0
            trace += float(op64.matvec(unit)[i])
            unit[i] = 0.0
        stderr, trace_matvecs = 0.0, n
    elif method == "hutchpp":
        estimate = landscape.hutchpp_trace(op64.matvec, n, config.truth_trace_matvecs, generator=generator,
                                           dtype=torch.float64)
        trace, stderr, trace_matvecs = estimate.value, estimate.stderr, estimate.num_matvecs
    elif method == "lanczos-deflated":
        # tr(H) = tr(Y H Y^T) + tr(P H P), P = I - Y^T Y, for orthonormal rows Y [r, n]: here
        # the Ritz vectors Y = S_c^T Q of the eigenvalue truth whose residual beta_m |s_mi| is
        # below 1e-3 ||T|| (both ends of the spectrum: these Hessians have negative outliers).
        # Y H Y^T = diag(theta_c) since Q H Q^T = T, so the first term costs no product;
        # the second is Hutchinson's, each product projecting twice against Y.
        keep = (lan.residual_norm * s[-1, :]).abs() <= 1e-3 * float(theta.abs().max())
        q = s[:, keep].T.to(lan.basis.dtype) @ lan.basis  # [r, n]
        deflation_rank = int(keep.sum())

        def deflated(v: Tensor) -> Tensor:
            v = v - q.T @ (q @ v)
            w = op64.matvec(v)
            return w - q.T @ (q @ w)

        estimate = landscape.hutchinson_trace(deflated, n, config.truth_trace_matvecs, generator=generator,
                                              dtype=torch.float64)
        trace, stderr = float(theta[keep].sum()) + estimate.value, estimate.stderr
        trace_matvecs = estimate.num_matvecs
    else:
        raise ValueError(f"unknown truth trace method {method!r}; choose auto, exact, hutchpp or lanczos-deflated")
    return {
        "eigenvalues": theta[top].tolist(), "residuals": residuals, "lanczos_steps": m,
        "breakdown": lan.breakdown, "trace": trace, "trace_stderr": stderr, "trace_method": method,
        "trace_matvecs": trace_matvecs, "deflation_rank": deflation_rank, "hvps": op64.num_matvecs,
        "seconds": time.perf_counter() - start,
    }


def load_or_compute_truth(problem: Problem, config: PeersConfig, kmax: int) -> dict[str, Any]:
    settings = {"fingerprint": _fingerprint(problem), "truth_steps": min(config.truth_steps, problem.n),
                "truth_trace_matvecs": config.truth_trace_matvecs,
                "truth_trace_method": _trace_method(config, problem.n), "kmax": kmax, "seed": TRUTH_SEED}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(config.truth_cache) if config.truth_cache else None
    cache: dict[str, Any] = {"entries": {}}
    if path is not None and path.is_file():
        try:  # only the entries: write_json frames the file again (schema_version, created, complete)
            cache = {"entries": json.loads(path.read_text()).get("entries", {})}
        except (OSError, json.JSONDecodeError, AttributeError) as exc:
            _log(f"ignoring unreadable truth cache {path}: {exc}")
            cache = {"entries": {}}
        if key in cache.get("entries", {}) and not config.recompute_truth:
            _log(f"truth: from the cache {path} (key {key})")
            return {**cache["entries"][key], "cached": True}
    truth = {**compute_truth(problem, config, kmax), "settings": settings}
    if path is not None:
        cache.setdefault("entries", {})[key] = truth
        write_json(path, cache)
    return {**truth, "cached": False}


# ----------------------------------------------------------------------- purity checks
def _bits(t: Tensor) -> Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).clone()


@dataclass
class Snapshot:
    state: dict[str, Tensor]  # bits of every parameter and buffer
    flags: dict[str, bool]  # module name -> training
    values: dict[str, Tensor]  # copies, to restore a model a call has changed


def snapshot(model: nn.Module) -> Snapshot:
    state = model.state_dict()
    return Snapshot({k: _bits(v) for k, v in state.items()}, {name: m.training for name, m in model.named_modules()},
                    {k: v.detach().clone() for k, v in state.items()})


def changes(model: nn.Module, before: Snapshot) -> str:
    """"" if the model is bitwise as in ``before``, else what changed."""
    flags = {name: m.training for name, m in model.named_modules()}
    state = model.state_dict()
    what = [] if flags == before.flags else ["training flags"]
    if state.keys() != before.state.keys() or not all(torch.equal(_bits(state[k]), before.state[k]) for k in state):
        what.append("parameters/buffers")
    return " and ".join(what)


def unchanged(model: nn.Module, before: Snapshot) -> bool:
    return not changes(model, before)


def restore(model: nn.Module, before: Snapshot) -> None:
    """Put back the ``training`` flags, and the values when a call changed them."""
    for name, module in model.named_modules():
        module.training = before.flags[name]
    if not unchanged(model, before):
        model.load_state_dict(before.values)


def plant_grads(model: nn.Module, seed: int) -> list[tuple[Tensor, Tensor]]:
    """Give every parameter a random ``.grad``; returns (tensor, copy of its bits) pairs."""
    generator = torch.Generator().manual_seed(seed)
    planted = []
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        planted.append((p.grad, _bits(p.grad)))
    return planted


def grad_status(model: nn.Module, planted: list[tuple[Tensor, Tensor]]) -> str:
    states = set()
    for p, (tensor, bits) in zip(model.parameters(), planted):
        if p.grad is None:
            states.add("cleared")
        elif p.grad is tensor and torch.equal(_bits(p.grad), bits):
            states.add("untouched")
        else:
            states.add("overwritten")
        p.grad = None
    return states.pop() if len(states) == 1 else "mixed: " + ", ".join(sorted(states))


# --------------------------------------------------------------------------- row runner
@dataclass
class Outcome:
    values: list[float]  # eigenvalues, or [trace estimate]
    hvps: int
    converged: bool | None = None
    stderr: float | None = None
    stderr_source: str = ""  # "" reported by the method, "samples": computed here
    count_check: str | None = None  # a failed cross-check of the HVP count


def run_once(problem: Problem, call: Callable[[], Outcome], pristine: Snapshot, grad_seed: int
             ) -> tuple[Outcome, float, str, str, list[str]]:
    """One timed call from a pristine model: (outcome, seconds, what changed ("" if nothing),
    what happened to .grad, warnings)."""
    restore(problem.model, pristine)
    planted = plant_grads(problem.model, grad_seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        outcome = call()
        seconds = time.perf_counter() - start
    pure = changes(problem.model, pristine)  # "" when bitwise unchanged
    grads = grad_status(problem.model, planted)
    restore(problem.model, pristine)
    caught_messages = sorted({f"{w.category.__name__}: {str(w.message)[:90]}" for w in caught
                              if not issubclass(w.category, DeprecationWarning)})
    return outcome, seconds, pure, grads, caught_messages


@contextlib.contextmanager
def counting(module: Any, name: str) -> Iterator[list[int]]:
    """Replace ``module.name`` by a wrapper that counts its calls (restored on exit)."""
    original = getattr(module, name)
    count = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(*args, **kwargs)

    setattr(module, name, wrapper)
    try:
        yield count
    finally:
        setattr(module, name, original)


# -------------------------------------------------------------------------------- peers
class Peers:
    """The importable peers, their operators (with HVP counters) on ``problem``."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.modules: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.versions: dict[str, str] = {}
        for module, dist in PEERS.items():
            try:
                self.modules[module] = importlib.import_module(module)
                self.versions[dist] = importlib.metadata.version(dist)
            except Exception as exc:  # ImportError, or a broken install of the peer
                self.skipped[module] = f"skipped: {type(exc).__name__}: {exc}"
        self.criterion = nn.CrossEntropyLoss()
        self.data = (problem.batch.features, problem.batch.targets)

    # PyHessian ----------------------------------------------------------------
    def pyhessian(self, seed: int) -> Any:
        module = sys.modules["pyhessian.hessian"]  # pyhessian.hessian is the class, shadowing the module
        torch.manual_seed(seed)  # PyHessian draws from the global RNG
        return module.hessian(self.problem.peer_model, self.criterion, data=self.data, cuda=False)

    def pyhessian_hvp(self, v: Tensor) -> Tensor:
        h = self.pyhessian(0)
        module = sys.modules["pyhessian.hessian"]
        if [id(p) for p in h.params] != [id(p) for p in self.problem.model.parameters()]:
            raise RuntimeError("PyHessian's parameter list is not the model's parameter order")
        hv = module.hessian_vector_product(h.gradsH, h.params, list(self.problem.objective.unflatten(v)))
        return torch.cat([t.reshape(-1) for t in hv]).detach()

    # curvlinops ---------------------------------------------------------------
    def curvlinops(self, seed: int) -> Any:
        base = self.modules["curvlinops"].HessianLinearOperator

        class Counted(base):
            products = 0  # columns multiplied, the constructor's check_deterministic included

            def _matmat(self, M: list[Tensor]) -> list[Tensor]:
                self.products += M[0].shape[-1]  # list format: [*param_shape, K]
                return super()._matmat(M)

        torch.manual_seed(seed)  # check_deterministic draws with torch.rand
        return Counted(self.problem.peer_model, self.criterion, list(self.problem.peer_model.parameters()),
                       [self.data])

    def curvlinops_hvp(self, v: Tensor) -> Tensor:
        return (self.curvlinops(0) @ v).detach()

    # hessian-eigenthings ------------------------------------------------------
    def eigenthings(self) -> Any:
        he = self.modules["hessian_eigenthings"]

        class Counted(he.HessianOperator):
            products = 0

            def matvec(self, v: Tensor) -> Tensor:
                self.products += 1
                return super().matvec(v)

        return Counted(self.problem.peer_model, [self.data], he.supervised_loss(self.criterion))

    def eigenthings_hvp(self, v: Tensor) -> Tensor:
        return self.eigenthings().matvec(v).detach()


# ------------------------------------------------------------------------- method lists
def eigen_methods(problem: Problem, peers: Peers, k: int) -> list[tuple[str, str, Callable[[], Outcome] | None]]:
    """(label, peer module or "ours", call) for the rows with k eigenvalues."""
    obj, batch, n = problem.objective, problem.batch, problem.n
    rows: list[tuple[str, str, Callable[[], Outcome] | None]] = []

    def ours_lanczos() -> Outcome:
        op = landscape.HessianOperator(obj, [batch])
        res = landscape.lanczos_top_eigenvalues(op.matvec, n, k, generator=torch.Generator().manual_seed(0))
        check = None if res.num_matvecs == op.num_matvecs else (
            f"num_matvecs {res.num_matvecs} != operator count {op.num_matvecs}")
        return Outcome(res.eigenvalues.tolist(), op.num_matvecs, bool(res.converged), count_check=check)

    rows.append(("ours: lanczos_top_eigenvalues (defaults: tol 1e-3, the operator's float32)", "ours", ours_lanczos))
    if k == 1:
        def ours_power() -> Outcome:
            op = landscape.HessianOperator(obj, [batch])
            res = landscape.power_iteration(op.matvec, n, tol=1e-3, generator=torch.Generator().manual_seed(0),
                                            dtype=obj.dtype)
            check = None if res.num_matvecs == op.num_matvecs else (
                f"num_matvecs {res.num_matvecs} != operator count {op.num_matvecs}")
            return Outcome([res.eigenvalue], op.num_matvecs, bool(res.converged), count_check=check)

        rows.append(("ours: power_iteration (tol 1e-3, baseline)", "ours", ours_power))

    for label, kwargs in (("defaults: maxIter 100, tol 1e-3", {}), ("maxIter 1000, tol 1e-4",
                                                                   {"maxIter": 1000, "tol": 1e-4})):
        def pyhessian_eigen(kwargs: dict = kwargs) -> Outcome:
            with counting(sys.modules["pyhessian.hessian"], "hessian_vector_product") as count:
                h = peers.pyhessian(0)
                values, _ = h.eigenvalues(top_n=k, **kwargs)
            return Outcome([float(x) for x in values], count[0], None)

        rows.append((f"PyHessian eigenvalues ({label})", "pyhessian", pyhessian_eigen))

    def curvlinops_eigsh() -> Outcome:
        from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

        op = peers.curvlinops(0)
        in_constructor = op.products
        scipy_op = op.to_scipy()
        scipy_count = [0]

        def matvec(x: np.ndarray) -> np.ndarray:
            scipy_count[0] += 1
            return scipy_op.matvec(x)

        counted = LinearOperator(scipy_op.shape, matvec=matvec, rmatvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(n)
        try:
            values, converged = eigsh(counted, k=k, which="LA", tol=1e-3, v0=v0, return_eigenvectors=False), True
        except ArpackNoConvergence as exc:
            values, converged = exc.eigenvalues, False
        check = None if scipy_count[0] + in_constructor == op.products else (
            f"scipy count {scipy_count[0]} + constructor {in_constructor} != operator count {op.products}")
        return Outcome([float(x) for x in values], op.products, converged, count_check=check)

    rows.append(("curvlinops HessianLinearOperator + eigsh (LA, tol 1e-3; HVPs incl. 2 in the constructor)",
                 "curvlinops", curvlinops_eigsh))

    for label, kwargs in (("defaults: max_iter 2k", {}),
                          ("max_iter 100, reorthogonalize", {"max_iter": min(100, n), "reorthogonalize": True})):
        def eigenthings_lanczos(kwargs: dict = kwargs) -> Outcome:
            he = peers.modules["hessian_eigenthings"]
            op = peers.eigenthings()
            res = he.lanczos(op, k=k, which="LA", seed=0, **kwargs)
            check = None if res.iterations == op.products else (
                f"iterations {res.iterations} != operator count {op.products}")
            return Outcome(res.eigenvalues.tolist(), op.products, bool(res.converged.all()), count_check=check)

        rows.append((f"hessian-eigenthings lanczos (LA, {label})", "hessian_eigenthings", eigenthings_lanczos))
    return rows


def trace_methods(problem: Problem, peers: Peers, m: int, seed: int
                  ) -> list[tuple[str, str, Callable[[], Outcome] | None, str | None]]:
    """(label, peer, call, reason to skip) for the trace rows at m products, one seed."""
    obj, batch, n = problem.objective, problem.batch, problem.n
    rows: list[tuple[str, str, Callable[[], Outcome] | None, str | None]] = []

    def ours(estimator: Callable[..., Any]) -> Callable[[], Outcome]:
        def call() -> Outcome:
            op = landscape.HessianOperator(obj, [batch])
            est = estimator(op.matvec, n, m, generator=torch.Generator().manual_seed(seed), dtype=obj.dtype)
            check = None if est.num_matvecs == op.num_matvecs else (
                f"num_matvecs {est.num_matvecs} != operator count {op.num_matvecs}")
            return Outcome([est.value], op.num_matvecs, stderr=est.stderr, count_check=check)
        return call

    rows.append(("ours: hutchinson_trace", "ours", ours(landscape.hutchinson_trace), None))
    rows.append(("ours: hutchpp_trace", "ours", ours(landscape.hutchpp_trace),
                 None if m >= 4 else "skipped: needs >= 4 products"))
    if hasattr(landscape, "xtrace"):
        rows.append(("ours: xtrace", "ours", ours(landscape.xtrace), None))
    else:
        rows.append(("ours: xtrace", "ours", None, "skipped: landscape does not export xtrace (yet)"))

    def pyhessian_trace() -> Outcome:
        with counting(sys.modules["pyhessian.hessian"], "hessian_vector_product") as count:
            h = peers.pyhessian(seed)  # seeds the global RNG its probes come from
            samples = h.trace(maxIter=m, tol=-math.inf)  # -inf: never stops early
        values = np.asarray(samples, dtype=np.float64)
        stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None
        return Outcome([float(values.mean())], count[0], stderr=stderr, stderr_source="samples")

    rows.append(("PyHessian trace (maxIter m, tol -inf)", "pyhessian", pyhessian_trace, None))

    for name, divisor in (("hutchinson_trace", 1), ("hutchpp_trace", 3), ("xtrace", 2)):
        def curvlinops_trace(name: str = name) -> Outcome:
            op = peers.curvlinops(seed)
            before = op.products
            torch.manual_seed(seed)  # its probes come from the global RNG
            value = float(getattr(peers.modules["curvlinops"], name)(op, m))
            return Outcome([value], op.products - before)

        skip = None if m % divisor == 0 else f"skipped: needs products divisible by {divisor}"
        if "curvlinops" in peers.modules and not hasattr(peers.modules["curvlinops"], name):
            skip = f"skipped: curvlinops {peers.versions.get('curvlinops-for-pytorch')} has no {name}"
        rows.append((f"curvlinops {name} (+2 HVPs in the constructor)", "curvlinops", curvlinops_trace, skip))

    for name, kwargs in (("hutchinson", {"num_samples": m}), ("hutch_plus_plus", {"num_matvecs": m})):
        def eigenthings_trace(name: str = name, kwargs: dict = kwargs) -> Outcome:
            op = peers.eigenthings()
            res = getattr(peers.modules["hessian_eigenthings"], name)(op, seed=seed, **kwargs)
            return Outcome([float(res.estimate)], op.products, stderr=float(res.stderr))

        rows.append((f"hessian-eigenthings {name}", "hessian_eigenthings", eigenthings_trace, None))
    return rows


# -------------------------------------------------------------------------------- tables
def _fmt(x: float | None, spec: str = ".2e") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def eigen_table(rows: list[dict], repeats: int) -> str:
    lines = [f"| method | k | HVPs | s (median of {repeats}) | rel. err λ1 | max rel. err λ1..k | converged "
             "| model unchanged | `.grad` | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {r['k']} | {r['skipped']} | | | | | | | |")
            continue
        conv = {True: "yes", False: "no", None: "n/a"}[r["converged"]]
        lines.append(f"| {r['method']} | {r['k']} | {r['hvps']} | {r['seconds']:.3f} | {_fmt(r['rel_errors'][0])} "
                     f"| {_fmt(max(r['rel_errors']))} | {conv} | {'**no**: ' + r['changed'] if r['changed'] else 'yes'} "
                     f"| {r['grad']} | {'; '.join(r['notes'])} |")
    return "\n".join(lines)


def trace_table(rows: list[dict], m: int, seeds: int) -> str:
    lines = [f"| method | products | RMS rel. err ({seeds} seeds) | mean stderr / tr | RMS (est − tr) / stderr "
             "| s per estimate (median) | model unchanged | `.grad` | notes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['method']} | {m} | {r['skipped']} | | | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['hvps']} | {_fmt(r['rms_rel_error'])} | {_fmt(r['mean_rel_stderr'])} "
                     f"| {_fmt(r['rms_z'], '.2f')} | {r['seconds']:.4f} | {'**no**: ' + r['changed'] if r['changed'] else 'yes'} "
                     f"| {r['grad']} | {'; '.join(r['notes'])} |")
    return "\n".join(lines)


def rms_ratio_interval(rms_a: float, n_a: int, rms_b: float, n_b: int, level: float = 0.95
                       ) -> tuple[float, float, float]:
    """``rms_a / rms_b`` and a ``level`` confidence interval for the ratio of the true RMS errors.

    Assumes each method's errors ``e = estimate - truth`` are independent draws of
    N(0, sigma^2) (an unbiased estimator; a Hutchinson mean of 30 probes is close to normal),
    so ``rms^2 / sigma^2 ~ chi^2_n / n`` and ``(rms_a / rms_b)^2 / (sigma_a / sigma_b)^2 ~
    F(n_a, n_b)``:

        sigma_a / sigma_b  in  [ r / sqrt(F_{1-alpha/2}(n_a, n_b)),  r / sqrt(F_{alpha/2}(n_a, n_b)) ].

    With 10 seeds each the 95 % interval of two equally accurate methods is about
    [0.52, 1.93]: 10 seeds cannot rank estimators whose RMS errors differ by less than 2x.
    """
    if min(n_a, n_b) < 1 or not rms_b > 0 or not 0 < level < 1:
        raise ValueError(f"need n >= 1 seeds, rms_b > 0 and level in (0, 1); got n_a={n_a}, n_b={n_b}, "
                         f"rms_b={rms_b}, level={level}")
    ratio = rms_a / rms_b
    alpha = 1 - level
    return (ratio, ratio / math.sqrt(f_distribution.ppf(1 - alpha / 2, n_a, n_b)),
            ratio / math.sqrt(f_distribution.ppf(alpha / 2, n_a, n_b)))


def trace_verdict(rows: list[dict], seeds: int) -> str:
    """Our most accurate trace row against the most accurate peer row, with the F interval
    of :func:`rms_ratio_interval`; "at least as accurate" fails only when the whole interval
    lies above 1 (ours significantly less accurate)."""
    done = [r for r in rows if not r.get("skipped")]
    ours = [r for r in done if r["method"].startswith("ours")]
    theirs = [r for r in done if not r["method"].startswith("ours")]
    if not ours or not theirs:
        return "No verdict: it needs one of our trace rows and one peer row."
    a = min(ours, key=lambda r: r["rms_rel_error"])
    b = min(theirs, key=lambda r: r["rms_rel_error"])
    ratio, low, high = rms_ratio_interval(a["rms_rel_error"], seeds, b["rms_rel_error"], seeds)
    if low > 1:
        word = "ours is LESS accurate (the whole interval lies above 1)"
    elif high < 1:
        word = "ours is more accurate (the whole interval lies below 1)"
    else:
        word = "the seeds cannot tell the two apart (the interval contains 1): at least as accurate"
    calibration = ("" if a["mean_rel_stderr"] is None else
                   f"; its mean reported stderr / RMS error = {a['mean_rel_stderr'] / a['rms_rel_error']:.2f}")
    return (f"Verdict: our most accurate row ({a['method']}, RMS {a['rms_rel_error']:.3g}) against the most "
            f"accurate peer row ({b['method']}, RMS {b['rms_rel_error']:.3g}): ratio {ratio:.2f}, 95 % interval "
            f"[{low:.2f}, {high:.2f}] for the ratio of true RMS errors over {seeds} seeds each (F test, "
            f"unbiased Gaussian errors; the truth's own error is ignored): {word}{calibration}.")


def _identical_estimates(rows: list[dict], rtol: float = 1e-5) -> list[list[str]]:
    """Groups of trace rows whose estimates agree to ``rtol`` (float32 rounding) for every seed."""
    groups: list[tuple[list[float], list[str]]] = []
    for r in rows:
        if r.get("skipped"):
            continue
        for estimates, names in groups:
            if all(abs(a - b) <= rtol * abs(b) for a, b in zip(r["estimates"], estimates)):
                names.append(r["method"].split(" (")[0])
                break
        else:
            groups.append((r["estimates"], [r["method"].split(" (")[0]]))
    return [names for _, names in groups if len(names) > 1]


# ---------------------------------------------------------------------------------- main
def check_hvps(problem: Problem, peers: Peers, failures: list[str]) -> dict[str, float]:
    """Relative 2-norm distance of each peer's HVP to ours on one random vector (float32)."""
    v = torch.randn(problem.n, generator=torch.Generator().manual_seed(7), dtype=problem.objective.dtype)
    reference = landscape.HessianOperator(problem.objective, [problem.batch]).matvec(v)
    pristine = snapshot(problem.model)
    errors = {}
    for module, hvp in (("pyhessian", peers.pyhessian_hvp), ("curvlinops", peers.curvlinops_hvp),
                        ("hessian_eigenthings", peers.eigenthings_hvp)):
        if module not in peers.modules:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = hvp(v)
            errors[module] = float((result.double() - reference.double()).norm() / reference.double().norm())
            problem_text = (None if errors[module] <= HVP_RTOL else
                            f"HVP differs from ours by {errors[module]:.1e} relative (> {HVP_RTOL:g})")
        except Exception as exc:  # a peer that cannot evaluate the function is excluded, not fatal
            problem_text = f"HVP raised {type(exc).__name__}: {str(exc)[:200]}"
        for p in problem.model.parameters():
            p.grad = None
        restore(problem.model, pristine)
        _log(f"HVP check {module}: " + (problem_text or f"relative difference to ours {errors[module]:.2e}"))
        if problem_text:
            failures.append(f"{module}: {problem_text}; it does not evaluate our function and is excluded")
            peers.skipped[module] = f"excluded: {problem_text}"
            del peers.modules[module]
    return errors


def run_repeats(problem: Problem, call: Callable[[], Outcome], pristine: Snapshot, grad_seeds: range,
                label: str, failures: list[str]) -> list[tuple[Outcome, float, str, str, list[str]]] | str:
    """``run_once`` for each grad seed, or the error text (recorded as a failure) if a call raised."""
    try:
        return [run_once(problem, call, pristine, grad_seed=g) for g in grad_seeds]
    except Exception as exc:
        for p in problem.model.parameters():
            p.grad = None
        restore(problem.model, pristine)
        text = f"error: {type(exc).__name__}: {str(exc)[:200]}"
        failures.append(f"{label}: {text}")
        _log(f"{label}: {text}")
        return text


def main(config: PeersConfig) -> int:
    torch.set_num_threads(config.threads)
    problem = build_problem(config)
    peers = Peers(problem)
    failures: list[str] = []
    kmax = max(config.ks)
    truth = load_or_compute_truth(problem, config, kmax)
    hvp_errors = check_hvps(problem, peers, failures)
    pristine = snapshot(problem.model)

    eigen_rows: list[dict] = []
    for k in config.ks if "eigen" in config.sections else ():
        for label, module, call in eigen_methods(problem, peers, k):
            if module in peers.skipped:
                eigen_rows.append({"method": label, "k": k, "skipped": peers.skipped[module]})
                continue
            _log(f"k={k}: {label}")
            runs = run_repeats(problem, call, pristine, range(config.repeats), f"{label} (k={k})", failures)
            if isinstance(runs, str):
                eigen_rows.append({"method": label, "k": k, "skipped": runs})
                continue
            outcome = runs[-1][0]
            notes = sorted({w for run in runs for w in run[4]})
            values = sorted(outcome.values, reverse=True)
            rel = [abs(a - b) / abs(b) for a, b in zip(values, truth["eigenvalues"])]
            if len(values) != k or not all(math.isfinite(x) for x in values):
                failures.append(f"{label} (k={k}): expected {k} finite eigenvalues, got {outcome.values}")
            if any(run[0].count_check for run in runs):
                failures.append(f"{label} (k={k}): HVP count cross-check failed: {outcome.count_check}")
            if any(sorted(run[0].values) != sorted(outcome.values) for run in runs):
                notes.append("values differ between repeats")
            if any(x < 0 for x in outcome.values):
                notes.append("returned a negative eigenvalue")
            eigen_rows.append({
                "method": label, "k": k, "hvps": outcome.hvps, "seconds": statistics.median(r[1] for r in runs),
                "times": [r[1] for r in runs], "eigenvalues": values, "rel_errors": rel,
                "converged": outcome.converged, "changed": " and ".join(sorted({r[2] for r in runs} - {""})),
                "grad": "/".join(sorted({r[3] for r in runs})), "notes": notes})

    trace_rows: list[dict] = []
    labels = trace_methods(problem, peers, config.trace_matvecs, 0) if "trace" in config.sections else []
    for index, (label, module, _, skip) in enumerate(labels):
        if config.trace_only and not any(part in label for part in config.trace_only):
            continue
        reason = skip or peers.skipped.get(module)
        if reason:
            trace_rows.append({"method": label, "skipped": reason})
            continue
        _log(f"trace: {label} x {config.trace_seeds} seeds")
        runs = []
        for seed in range(config.trace_seeds):
            call = trace_methods(problem, peers, config.trace_matvecs, seed)[index][2]
            run = run_repeats(problem, call, pristine, range(100 + seed, 101 + seed), label, failures)
            if isinstance(run, str):
                runs = run
                break
            runs += run
        if isinstance(runs, str):
            trace_rows.append({"method": label, "skipped": runs})
            continue
        estimates = [r[0].values[0] for r in runs]
        stderrs = [r[0].stderr for r in runs]
        tr = truth["trace"]
        if not all(math.isfinite(x) for x in estimates):
            failures.append(f"{label}: non-finite trace estimate {estimates}")
        if any(r[0].count_check for r in runs):
            failures.append(f"{label}: HVP count cross-check failed: {runs[0][0].count_check}")
        hvps = sorted({r[0].hvps for r in runs})
        has_stderr = all(s is not None and s > 0 for s in stderrs)
        notes = sorted({w for run in runs for w in run[4]})
        if runs[0][0].stderr_source == "samples":
            notes.append("stderr computed here from the returned samples")
        trace_rows.append({
            "method": label, "hvps": hvps[0] if len(hvps) == 1 else hvps, "estimates": estimates,
            "stderrs": stderrs, "seconds": statistics.median(r[1] for r in runs), "times": [r[1] for r in runs],
            "rms_rel_error": math.sqrt(statistics.fmean(((e - tr) / tr) ** 2 for e in estimates)),
            "mean_rel_stderr": statistics.fmean(stderrs) / abs(tr) if has_stderr else None,
            "rms_z": math.sqrt(statistics.fmean(((e - tr) / s) ** 2 for e, s in zip(estimates, stderrs)))
            if has_stderr else None,
            "changed": " and ".join(sorted({r[2] for r in runs} - {""})), "grad": "/".join(sorted({r[3] for r in runs})), "notes": notes})

    # ---- report
    today = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    versions = " · ".join(f"{d} {v}" for d, v in peers.versions.items()) or "no peer importable"
    print("# Curvature probes against the peer libraries (`bench/peers.py`)\n")
    print(f"{today} · {platform.platform()} · {os.cpu_count()} CPUs · torch {torch.__version__} · "
          f"{torch.get_num_threads()} thread(s) · {versions}\n")
    print(f"Setting: {problem.description}.\n")
    res_rel = [r / abs(v) for r, v in zip(truth["residuals"], truth["eigenvalues"])]
    print(f"Truth (float64{', from the cache' if truth['cached'] else ''}): λ1..λ{kmax} = "
          + ", ".join(f"{v:.8g}" for v in truth["eigenvalues"])
          + f" from {truth['lanczos_steps']} Lanczos steps with full reorthogonalization; explicit residuals "
          + "||Hy − θy|| / |θ| = " + ", ".join(f"{r:.1e}" for r in res_rel)
          + " (each eigenvalue lies within its residual; relative errors below it are not resolved).  "
          + (f"Trace = {truth['trace']:.10g}, exact: the sum of the {truth['trace_matvecs']} diagonal entries "
             "e_iᵀHe_i (float64).\n" if truth["trace_method"] == "exact" else
             f"Trace = {truth['trace']:.8g} ± {truth['trace_stderr']:.2g} (standard error; relative "
             f"{truth['trace_stderr'] / abs(truth['trace']):.1e}): an ESTIMATE, {truth['trace_method']} with "
             f"{truth['trace_matvecs']} float64 products"
             + (f" (deflated by {truth['deflation_rank']} converged Ritz vectors)" if truth.get("deflation_rank")
                else "") + ".\n"))
    print("HVP agreement with ours (relative, float32, one random vector): "
          + (", ".join(f"{m} {e:.1e}" for m, e in hvp_errors.items()) or "no peer") + ".\n")
    print("## Top eigenvalues\n")
    print(eigen_table(eigen_rows, config.repeats))
    print(f"\n## Trace at equal products ({config.trace_matvecs} HVPs per estimate)\n")
    print(trace_table(trace_rows, config.trace_matvecs, config.trace_seeds))
    print(f"\nAn RMS over {config.trace_seeds} seeds has a relative sampling error of about "
          f"1/sqrt(2 · {config.trace_seeds}) = {1 / math.sqrt(2 * config.trace_seeds):.0%}.")
    print(trace_verdict(trace_rows, config.trace_seeds))
    for group in _identical_estimates(trace_rows):
        print(f"Same estimates to 1e-5 for every seed (the same probes drawn from the same seed): "
              f"{' = '.join(group)}.")
    print("\nSeconds include building each method's operator. \"model unchanged\": parameters, buffers and every "
          "`training` flag bitwise equal after the call; `.grad`: what the call did to a planted random "
          "`param.grad`.  PyHessian and curvlinops draw from the global torch RNG, seeded before each call.")
    if config.json:
        write_json(config.json, {"config": asdict(config), "environment": environment_info("cpu"),
                                 "peers": peers.versions, "skipped_peers": peers.skipped,
                                 "setting": problem.description, "truth": truth, "hvp_relative_errors": hvp_errors,
                                 "eigen_rows": eigen_rows, "trace_rows": trace_rows, "failures": failures})
        print(f"\nwrote {config.json}")
    if failures:
        print("CHECK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    _log("checks passed: the peers' HVPs equal ours, HVP counts cross-checked, every result finite")
    return 0


def parse_args(argv: list[str] | None = None) -> PeersConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny model and data: a smoke run")
    parser.add_argument("--dataset", default="AWA2")
    parser.add_argument("--seed", type=int, default=1, help="model init seed")
    parser.add_argument("--batch-size", type=int, default=None, help="default 2048 (256 with --small)")
    parser.add_argument("--ks", default="1,5", help="eigenvalue counts of the rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--truth-steps", type=int, default=None, help="default 150 (100 with --small)")
    parser.add_argument("--truth-trace-matvecs", type=int, default=None, help="default 1000 (300 with --small)")
    parser.add_argument("--truth-trace-method", default="auto",
                        choices=("auto", "exact", "hutchpp", "lanczos-deflated"))
    parser.add_argument("--truth-memory-gib", type=float, default=4.0)
    parser.add_argument("--truth-cache", default=PeersConfig.truth_cache, help='"" disables the cache')
    parser.add_argument("--recompute-truth", action="store_true")
    parser.add_argument("--trace-matvecs", type=int, default=30)
    parser.add_argument("--trace-seeds", type=int, default=10)
    parser.add_argument("--sections", default="eigen,trace", help="tables to compute: eigen, trace or both")
    parser.add_argument("--trace-only", default="", help="comma-separated label parts: only those trace rows")
    parser.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    try:
        ks = tuple(sorted({int(k) for k in args.ks.split(",")}))
    except ValueError:
        parser.error(f"--ks must be comma-separated integers, got {args.ks!r}")
    for name in ("repeats", "threads", "trace_seeds", "trace_matvecs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.trace_seeds < 2:
        parser.error("--trace-seeds must be >= 2 for an RMS error")
    if min(ks) < 1:
        parser.error(f"--ks must be positive, got {args.ks!r}")
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    if not sections or set(sections) - {"eigen", "trace"}:
        parser.error(f"--sections must name eigen, trace or both, got {args.sections!r}")
    return PeersConfig(
        small=args.small, dataset=args.dataset, seed=args.seed,
        batch_size=args.batch_size or (256 if args.small else 2048), ks=ks, repeats=args.repeats,
        threads=args.threads, truth_steps=args.truth_steps or (100 if args.small else 150),
        truth_trace_matvecs=args.truth_trace_matvecs or (300 if args.small else 1000),
        truth_trace_method=args.truth_trace_method, truth_memory_gib=args.truth_memory_gib,
        truth_cache=args.truth_cache, recompute_truth=args.recompute_truth, trace_matvecs=args.trace_matvecs,
        trace_seeds=args.trace_seeds, sections=sections,
        trace_only=tuple(x.strip() for x in args.trace_only.split(",") if x.strip()), json=args.json)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
