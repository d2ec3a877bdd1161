"""Top Hessian eigenvalues (PAPER.md section 3): Lanczos on a symmetric matvec operator.

Everything here works on any symmetric linear operator ``A`` [n, n] given only as a
callable ``matvec(v: Tensor[n]) -> Tensor[n]`` (for instance a Hessian-vector product).

- :func:`lanczos_tridiagonal`: ``m`` steps of the Lanczos process,
  ``A Q^T = Q^T T + beta_m q_{m+1} e_m^T`` with ``Q`` [m, n] orthonormal rows and ``T``
  [m, m] symmetric tridiagonal (diagonal ``alpha`` [m], off-diagonal ``beta`` [m - 1]),
  with full reorthogonalization (Golub & Van Loan, *Matrix Computations*, 4th ed.,
  ch. 10.1-10.3; Paige 1971/1980 for why plain Lanczos loses orthogonality).
- :func:`lanczos_top_eigenvalues`: Ritz pairs of ``T`` until the wanted ones converge,
  with locking and restarts so that exactly repeated eigenvalues are found.
- :func:`power_iteration`: the baseline it is compared with.

Eigenvalues are *algebraic*: "largest" means closest to ``+inf`` (for the spectrum
``{-10, 3}`` it is 3), "smallest" closest to ``-inf``; only :func:`power_iteration`
targets the largest *magnitude* (-10 there).  Random start vectors come from a
``torch.Generator`` (never the global RNG), drawn on the generator's device and moved to
the working device, so a seed gives the same vectors on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from analysis.rng import resolve_generator

__all__ = [
    "EigenResult",
    "LanczosResult",
    "Matvec",
    "PowerIterationResult",
    "lanczos_top_eigenvalues",
    "lanczos_tridiagonal",
    "power_iteration",
]

Matvec = Callable[[Tensor], Tensor]
"""A symmetric linear operator: ``matvec(v [n]) -> A v [n]`` on v's device and dtype."""

_FLOAT_DTYPES = (torch.float32, torch.float64)


class LanczosResult(NamedTuple):
    """The Lanczos tridiagonal ``T = tridiag(beta, alpha, beta)`` after ``m`` steps."""

    alpha: Tensor  # [m] diagonal of T (float64, CPU)
    beta: Tensor  # [m - 1] off-diagonal of T (float64, CPU)
    basis: Tensor | None  # [m, n] Lanczos vectors Q (rows), or None if not kept
    residual_norm: float  # beta_m = ||A q_m - alpha_m q_m - beta_{m-1} q_{m-1}|| after step m
    breakdown: bool  # True if the process stopped early: span(Q) is A-invariant
    num_matvecs: int


class EigenResult(NamedTuple):
    """Top-k (algebraic) eigenpairs, ordered from the most extreme: largest first for
    ``which="largest"``, smallest first for ``which="smallest"``."""

    eigenvalues: Tensor  # [k] float64, CPU
    eigenvectors: Tensor  # [k, n] unit rows, working dtype and device
    residuals: Tensor  # [k] ||A y - theta y|| from the recurrence, no matvec (float64, CPU)
    num_matvecs: int  # every product with A
    converged: bool  # every error bound <= tol * |theta| (see lanczos_top_eigenvalues)
    error_estimates: Tensor  # [k] estimated |lambda - theta|, min(r, r^2 / gap) (float64, CPU)


class PowerIterationResult(NamedTuple):
    """The dominant (largest-magnitude) eigenpair found by power iteration."""

    eigenvalue: float
    eigenvector: Tensor  # [n] unit vector
    num_matvecs: int
    converged: bool


# ----------------------------------------------------------------------------- helpers
def _random_vector(
    n: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device,
    distribution: Literal["rademacher", "gaussian"] = "rademacher",
) -> Tensor:
    """A Rademacher (+-1) or standard Gaussian vector [n], drawn on the generator's device."""
    if distribution == "rademacher":
        bits = torch.randint(0, 2, (n,), generator=generator, device=generator.device)
        return (2 * bits - 1).to(dtype=dtype, device=device)
    if distribution == "gaussian":
        return torch.randn(n, generator=generator, device=generator.device, dtype=dtype).to(device)
    raise ValueError(f"start_distribution must be 'rademacher' or 'gaussian', got {distribution!r}")


def _check_positive_int(
    name: str, value: object, upper: int | None = None, upper_name: str = "n", *,
    minimum: int = 1, why: str = "",
) -> int:
    """``value`` as an int in ``[minimum, upper]``, else a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        what = "a positive integer" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {what}{why}, got {name}={value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}={value} exceeds {upper_name}={upper}; use {name} <= {upper}")
    return value


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _operator_attribute(matvec: Matvec | None, name: str) -> object:
    """``matvec.__self__.<name>`` when ``matvec`` is a bound method of an operator that has it
    (a ``landscape.HessianOperator``), else None."""
    return getattr(getattr(matvec, "__self__", None), name, None)


def _working_dtype_device(
    start: Tensor | None, dtype: torch.dtype | None, device: torch.device | str | None,
    matvec: Matvec | None = None,
) -> tuple[torch.dtype, torch.device]:
    """Explicit dtype/device win; otherwise the start vector's; otherwise the operator's
    (``op.matvec`` of an operator with ``dtype``/``device``, e.g. a ``HessianOperator``: a
    float32 model is probed in float32); otherwise float64 on CPU."""
    if start is not None and not isinstance(start, Tensor):
        raise TypeError(f"start must be a torch.Tensor or None, got {type(start).__name__}")
    op_dtype, op_device = _operator_attribute(matvec, "dtype"), _operator_attribute(matvec, "device")
    if dtype is None:
        if start is not None and start.dtype in _FLOAT_DTYPES:
            dtype = start.dtype
        else:
            dtype = op_dtype if op_dtype in _FLOAT_DTYPES else torch.float64
    if device is not None:
        dev = torch.device(device)
    elif start is not None:
        dev = start.device
    else:
        dev = op_device if isinstance(op_device, torch.device) else torch.device("cpu")
    return _check_dtype(dtype), dev


def _apply(matvec: Matvec, v: Tensor, *, check_finite: bool = True) -> Tensor:
    """``matvec(v)`` checked: a finite tensor of v's shape, cast to v's dtype/device.

    ``check_finite=False`` leaves the finiteness test to the caller (Lanczos tests the norm
    it computes anyway: one pass over ``n`` entries fewer per step).
    """
    out = matvec(v)
    if not isinstance(out, Tensor):
        raise TypeError(f"matvec must return a torch.Tensor, got {type(out).__name__}")
    if out.shape != v.shape:
        raise ValueError(f"matvec returned shape {tuple(out.shape)} for an input of shape {tuple(v.shape)}; "
                         "it must map [n] to [n]")
    out = out.to(dtype=v.dtype, device=v.device)
    if check_finite and not bool(torch.isfinite(out).all()):
        raise ValueError("matvec returned non-finite values (nan or inf); check the operator")
    return out


def _check_start(start: Tensor, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(start, Tensor):
        raise TypeError(f"start must be a torch.Tensor or None, got {type(start).__name__}")
    if start.shape != (n,):
        raise ValueError(f"start must have shape ({n},), got {tuple(start.shape)}")
    start = start.detach().to(dtype=dtype, device=device)
    if not bool(torch.isfinite(start).all()):
        raise ValueError("start vector has non-finite entries; pass a finite vector or start=None")
    if float(start.norm()) == 0.0:
        raise ValueError("start vector is zero; pass a nonzero vector or start=None for a random one")
    return start


class _Lanczos:
    """The Lanczos recurrence, one step at a time, restricted to the complement of ``locked``.

    Step j: ``w = A q_j``, ``alpha_j = q_j^T w``, ``w -= alpha_j q_j + beta_{j-1} q_{j-1}``,
    then (full reorthogonalization) classical Gram-Schmidt against every stored ``q_i``
    and every locked vector, repeated once when the DGKS criterion asks for it ("twice is
    enough", Giraud et al. 2005); the
    components along ``q_j`` correct ``alpha_j``.  ``beta_j = ||w||``; a breakdown is
    ``beta_j <= breakdown_tol * max_i ||A q_i||`` (span(Q) is then A-invariant up to
    rounding), else ``q_{j+1} = w / beta_j``.
    """

    def __init__(self, matvec: Matvec, start: Tensor, capacity: int, *, locked: Tensor | None,
                 reorthogonalize: bool, keep_basis: bool, breakdown_tol: float, scale: float = 0.0) -> None:
        self.matvec = matvec
        self.capacity = capacity
        self.locked = locked if locked is not None and locked.shape[0] > 0 else None
        self.reorthogonalize = reorthogonalize
        self.keep_all = reorthogonalize or keep_basis  # otherwise a 2-row ring buffer: O(n) memory
        self.breakdown_tol = breakdown_tol
        rows = capacity + 1 if self.keep_all else 2  # + q_{m+1}: A Y = Y diag(theta) + beta_m q_{m+1} s_m^T
        # uninitialized: rows are written before they are read, and zero-filling a
        # [capacity, n] block (hundreds of MB for a 3 M-parameter model) costs seconds
        self.vectors = start.new_empty(rows, start.shape[0])
        self.vectors[0] = start / start.norm()
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j]: norm of the residual after step j
        self.scale = scale  # largest ||A q|| seen (earlier runs' ||A|| estimate for restarts)
        self.breakdown = False

    @property
    def size(self) -> int:
        return len(self.alpha)

    @property
    def exhausted(self) -> bool:
        return self.breakdown or self.size >= self.capacity

    def _row(self, j: int) -> int:
        return j if self.keep_all else j % 2

    def _project_out_locked(self, w: Tensor) -> Tensor:
        if self.locked is not None:
            w = w - self.locked.T @ (self.locked @ w)
        return w

    def step(self) -> None:
        j = self.size
        q = self.vectors[self._row(j)]
        w = _apply(self.matvec, q, check_finite=False)
        w_norm = float(w.norm())
        if not math.isfinite(w_norm):  # a nan or inf entry makes the norm non-finite
            raise ValueError("matvec returned non-finite values (nan or inf); check the operator")
        self.scale = max(self.scale, w_norm)
        alpha = float(q @ w)
        w = torch.sub(w, q, alpha=alpha)  # a copy: the matvec's output may be its own buffer
        if j > 0:
            w.sub_(self.vectors[self._row(j - 1)], alpha=self.beta[j - 1])
        if self.reorthogonalize:
            basis = self.vectors[: j + 1]  # [j + 1, n]
            # CGS with the DGKS criterion (Daniel, Gragg, Kaufman & Stewart 1976): a second
            # pass only when the first removed more than 1 - 1/sqrt(2) of w's norm, i.e. when
            # cancellation may have left O(eps * cond) components; otherwise one pass already
            # leaves O(eps).  Each pass reads the whole basis, the cost that dominates a step.
            norm = float(w.norm())
            for _ in range(2):
                w = self._project_out_locked(w)
                coeffs = basis @ w  # [j + 1]
                w = torch.addmv(w, basis.T, coeffs, alpha=-1.0)
                alpha += float(coeffs[j])
                norm, before = float(w.norm()), norm
                if norm > before / math.sqrt(2.0):
                    break
            beta = norm
        else:
            w = self._project_out_locked(w)
            beta = float(w.norm())
        self.alpha.append(alpha)
        self.beta.append(beta)
        if beta <= self.breakdown_tol * self.scale:
            self.breakdown = True
        elif j + 1 < self.capacity or self.keep_all:
            torch.div(w, beta, out=self.vectors[self._row(j + 1)])

    def tridiagonal(self) -> Tensor:
        """T [m, m] (float64, CPU)."""
        alpha = torch.tensor(self.alpha, dtype=torch.float64)
        beta = torch.tensor(self.beta[:-1], dtype=torch.float64)
        return torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)

    def basis(self) -> Tensor:
        return self.vectors[: self.size]

    def next_vector(self) -> Tensor | None:
        """``q_{m+1}``, the normalized residual after the last step (None after a breakdown)."""
        return None if self.breakdown else self.vectors[self.size]


def _default_breakdown_tol(dtype: torch.dtype) -> float:
    # The residual of an invariant subspace after CGS2 is rounding noise, O(eps ||A||) times
    # a modest factor (about 100 eps measured on 30 x 30 float64 matrices, growing with n and
    # with the matvec's own error).  eps^(2/3) (4e-11 in float64, 2e-5 in float32) sits far
    # above that noise and below the default eigenvalue tolerances (1e-8, 1e-4), so a run
    # stopped by breakdown has Ritz pairs that already meet them.  Missing a breakdown is
    # harmless with reorthogonalization: the next vector is a fresh orthogonal direction.
    return torch.finfo(dtype).eps ** (2.0 / 3.0)


# ------------------------------------------------------------------------- public API
def lanczos_tridiagonal(
    matvec: Matvec,
    n: int,
    num_steps: int,
    *,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    reorthogonalize: bool = True,
    keep_basis: bool = True,
    start_distribution: Literal["rademacher", "gaussian"] = "rademacher",
    breakdown_tol: float | None = None,
) -> LanczosResult:
    """Run ``m <= num_steps`` Lanczos steps on the symmetric operator ``A`` [n, n].

    Builds orthonormal ``Q`` [m, n] (``q_1 = start / ||start||``) and the tridiagonal
    ``T = Q A Q^T`` [m, m] with ``A Q^T = Q^T T + beta_m q_{m+1} e_m^T``
    (Golub & Van Loan, ch. 10.1).  With ``reorthogonalize=True`` every new vector is
    orthogonalized twice (classical Gram-Schmidt) against all previous ones, so ``Q``
    stays orthonormal to working precision (plain Lanczos loses orthogonality as Ritz
    values converge, Paige 1971, and then produces spurious copies of eigenvalues).
    The process stops early on breakdown, ``beta_j <= breakdown_tol * max ||A q_i||``:
    ``span(Q)`` is then invariant and the eigenvalues of ``T`` are eigenvalues of ``A``.
    With ``m = n`` the eigenvalues of ``T`` are all those of ``A``.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A`` (allocating on v's device/dtype).
        n: dimension of ``A``.
        num_steps: maximal number of steps ``m``, ``1 <= num_steps <= n``.
        start: start vector [n] (normalized here); None draws one from ``generator``.
        generator: source of the random start (None: a fresh OS-seeded generator).
        dtype, device: working precision (float32/float64) and device; default the
            start's, else float64 on CPU.
        reorthogonalize: full reorthogonalization (memory ``m n``); False runs the plain
            three-term recurrence.
        keep_basis: return ``Q`` (always stored when reorthogonalizing); False with
            ``reorthogonalize=False`` needs only ``O(n)`` memory and returns ``basis=None``.
        start_distribution: "rademacher" (+-1 entries) or "gaussian" random start.
        breakdown_tol: relative breakdown threshold (default ``eps(dtype)^(2/3)``).

    Returns:
        :class:`LanczosResult` with ``alpha`` [m], ``beta`` [m - 1] (float64, CPU), the
        basis, the last residual norm ``beta_m``, the breakdown flag and ``m`` matvecs.

    Raises:
        ValueError: ``num_steps`` or ``n`` not in range, a zero/non-finite/misshapen
            start, an unknown ``start_distribution``, a bad ``breakdown_tol``, or a
            matvec returning a misshapen or non-finite vector.
        TypeError: non-integer sizes, a non-generator ``generator``, a non-tensor output.

    Example (a relation, not a pinned number)::

        res = lanczos_tridiagonal(lambda v: A @ v, n, n, generator=torch.Generator().manual_seed(0))
        T = torch.diag(res.alpha) + torch.diag(res.beta, 1) + torch.diag(res.beta, -1)
        # torch.linalg.eigvalsh(T) equals torch.linalg.eigvalsh(A) (distinct eigenvalues)
    """
    n = _check_positive_int("n", n)
    num_steps = _check_positive_int("num_steps", num_steps, n)
    dtype, dev = _working_dtype_device(start, dtype, device)
    if start is None:
        start = _random_vector(n, resolve_generator(generator), dtype, dev, start_distribution)
    else:
        start = _check_start(start, n, dtype, dev)
    tol = _default_breakdown_tol(dtype) if breakdown_tol is None else breakdown_tol
    if not (0.0 <= tol < 1.0):
        raise ValueError(f"breakdown_tol must be in [0, 1), got {breakdown_tol}")
    run = _Lanczos(matvec, start, num_steps, locked=None, reorthogonalize=reorthogonalize,
                   keep_basis=keep_basis, breakdown_tol=tol)
    while not run.exhausted:
        run.step()
    m = run.size
    return LanczosResult(
        alpha=torch.tensor(run.alpha, dtype=torch.float64),
        beta=torch.tensor(run.beta[:-1], dtype=torch.float64),
        basis=run.basis() if run.keep_all else None,
        residual_norm=run.beta[-1],
        breakdown=run.breakdown,
        num_matvecs=m,
    )


class _RunResult(NamedTuple):
    theta: Tensor  # [t] top Ritz values, descending (float64, CPU)
    vectors: Tensor  # [t, n] their Ritz vectors (working dtype/device)
    images: Tensor  # [t, n] A y_i = theta_i y_i + beta_m s_{m,i} q_{m+1}, no matvec
    residuals: Tensor  # [t] beta_m |s_{m,i}| (float64, CPU)
    others: Tensor  # [m - t] the remaining Ritz values (their gaps enter the bounds)
    converged: bool


def _error_estimates(theta: Tensor, residuals: Tensor, others: Tensor) -> Tensor:
    """Estimated eigenvalue errors ``min(r, r^2 / delta)`` of Ritz pairs (Parlett, *The
    Symmetric Eigenvalue Problem*, 11.7).

    For a unit ``y`` with ``||A y - theta y|| = r`` an eigenvalue of ``A`` lies within ``r``
    of ``theta`` (Krylov-Bogoliubov: a bound), and within ``r^2 / delta`` when no other
    eigenvalue is closer than ``delta`` (Kato-Temple).  ``delta`` is estimated by the
    distance to the nearest other Ritz value, which overestimates the true gap while the
    neighbours have not converged: an estimate of the error, not a bound (``r`` when no
    other Ritz value is known).
    """
    allv = torch.cat([theta, others])
    estimates = residuals.clone()
    for i in range(theta.numel()):
        dist = (allv - theta[i]).abs()
        dist[i] = math.inf
        delta = float(dist.min())
        if 0 < delta < math.inf:
            estimates[i] = min(float(residuals[i]), float(residuals[i]) ** 2 / delta)
    return estimates


def _tolerance(theta: Tensor, tol: float, scale: float, eps: float) -> Tensor:
    """``max(tol |theta|, 100 eps scale)``: relative to the eigenvalue, but never below the
    rounding level of the matvecs (an eigenvalue at zero can only be found to that)."""
    return torch.clamp(tol * theta.abs(), min=100 * eps * scale)


def _converge_run(run: _Lanczos, target: int, tol: float, eps: float) -> _RunResult:
    """Step ``run`` until the error bounds of its ``target`` largest Ritz values meet ``tol``.

    For ``T = S diag(theta) S^T`` the Ritz pair ``(theta_i, y_i = Q^T s_i)`` has residual
    ``A y_i - theta_i y_i = beta_m s_{m,i} q_{m+1}`` (Golub & Van Loan 10.1.4; exact up to
    rounding under full reorthogonalization), so its norm ``beta_m |s_{m,i}|`` and the
    eigenvalue bound of :func:`_error_bounds` cost no matvec, and neither does ``A y_i``.
    """
    while True:
        run.step()
        m = run.size
        if m < target and not run.exhausted:
            continue
        theta, vecs = torch.linalg.eigh(run.tridiagonal())  # ascending
        t = min(target, m)
        top, rest = torch.arange(m - 1, m - 1 - t, -1), torch.arange(0, m - t)
        run.scale = max(run.scale, float(theta.abs().max()))
        residuals = (run.beta[-1] * vecs[m - 1, top]).abs()
        if run.breakdown:
            residuals = torch.zeros_like(residuals)  # span(Q) is invariant: Ritz pairs are eigenpairs
        ok = bool((residuals <= _tolerance(theta[top], tol, run.scale, eps)).all())
        if not (ok or run.exhausted):
            continue
        basis = run.basis()
        s = vecs[:, top].to(dtype=basis.dtype, device=basis.device)  # [m, t]
        ritz = s.T @ basis  # [t, n]
        images = theta[top].to(dtype=basis.dtype, device=basis.device)[:, None] * ritz
        q_next = run.next_vector()
        if q_next is not None:
            images = images + (run.beta[-1] * s[m - 1])[:, None] * q_next[None, :]
        return _RunResult(theta[top], ritz, images, residuals, theta[rest], ok)


def _rayleigh_ritz(y: Tensor, ay: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rayleigh-Ritz on span(rows of ``y``) [p, n] given ``ay = A y`` [p, n] (no matvec).

    ``H = sym(y ay^T) = U diag(theta) U^T``; returns (theta [p] float64 CPU, ``U^T y``,
    ``U^T ay``, residual norms ``||U^T ay - theta U^T y||`` [p] float64 CPU).
    """
    h = (y @ ay.T).double().cpu()
    theta, u = torch.linalg.eigh((h + h.T) / 2)
    u_w = u.T.to(dtype=y.dtype, device=y.device)
    z, az = u_w @ y, u_w @ ay
    res = (az - theta.to(dtype=y.dtype, device=y.device)[:, None] * z).norm(dim=1).double().cpu()
    return theta, z, az, res


def _restart_vector(n: int, gen: torch.Generator, dtype: torch.dtype, device: torch.device,
                    distribution: Literal["rademacher", "gaussian"], locked: Tensor) -> Tensor | None:
    """A random vector orthogonal to ``locked`` [p, n], or None if none is found (p ~ n).

    Rademacher draws can lie in span(locked) for tiny n (there are only 2^n of them), so a
    draw that loses all but sqrt(eps) of its norm is replaced by a Gaussian one.
    """
    floor = math.sqrt(torch.finfo(dtype).eps)
    for attempt in range(10):
        v = _random_vector(n, gen, dtype, device, distribution if attempt == 0 else "gaussian")
        norm = float(v.norm())
        for _ in range(2):  # CGS2 against the locked eigenvectors
            v = v - (v @ locked.T) @ locked
        if float(v.norm()) > floor * norm:
            return v
    return None


def lanczos_top_eigenvalues(
    matvec: Matvec,
    n: int,
    k: int = 1,
    *,
    which: Literal["largest", "smallest"] = "largest",
    tol: float = 1e-3,
    max_steps: int | None = None,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    start_distribution: Literal["rademacher", "gaussian"] = "rademacher",
    certify: bool = False,
) -> EigenResult:
    """The ``k`` largest (or smallest) *algebraic* eigenvalues of a symmetric ``A`` and their vectors.

    "largest" orders eigenvalues by value, not magnitude: for the spectrum ``{-10, 3}``
    it returns 3 (``which="smallest"`` returns -10).  ``which="smallest"`` runs the same
    algorithm on ``-A``.

    Algorithm (Lanczos with full reorthogonalization; Golub & Van Loan ch. 10, Parlett ch.
    11-13): grow the Krylov space ``K_m(A, q_1)`` one matvec at a time; after each step
    take the Ritz pairs ``(theta_i, y_i)`` of ``T = S diag(theta) S^T`` and stop as soon as
    each of the ``k`` wanted ones has

        r_i = ||A y_i - theta_i y_i|| = beta_m |S[m-1, i]|  <=  tol * |theta_i|,

    a relative tolerance on the **eigenvalue**: some eigenvalue of ``A`` lies within
    ``r_i`` of ``theta_i`` (Krylov-Bogoliubov), so each returned value is within
    ``tol`` relative of an eigenvalue (or within the rounding level ``100 eps ||A||`` of
    one, for eigenvalues too close to zero for a relative tolerance).  ``r_i`` comes from the tridiagonal for
    free: no matvec is spent on checking convergence, and none on the returned
    ``residuals``.  The actual error is usually far smaller, about ``r_i^2 / gap``
    (Kato-Temple): ``error_estimates`` reports ``min(r_i, r_i^2 / delta_i)`` with
    ``delta_i`` the distance to the nearest other Ritz value (an estimate, not a bound).

    A single Krylov space holds one direction of each eigenspace, so an exactly repeated
    eigenvalue (a zero gap) is returned once by default, followed by the next distinct
    one; every returned value is still within its bound of an eigenvalue of ``A``.  With
    ``certify=True`` converged pairs are locked and Lanczos restarts in their orthogonal
    complement until a restart's top Ritz value no longer beats the ``k``-th (deflation),
    which finds multiplicities at the price of at least one more run; a last
    Rayleigh-Ritz step on all locked vectors (their images under ``A`` come from the
    recurrence) removes the couplings between runs.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        k: number of eigenpairs, ``1 <= k <= n``.
        which: "largest" (largest algebraic, default) or "smallest" (smallest algebraic).
        tol: relative tolerance on each eigenvalue (default 1e-3), in ``[10 eps, 1)``.
        max_steps: Krylov dimension limit of each run (default ``100 + 20 k``; capped at
            ``n``).  The basis is stored (``max_steps x n`` numbers), the price of full
            reorthogonalization; a run stops as soon as its values meet ``tol``.
        start: start vector of the first run (None: random from ``generator``); restarts
            still draw from ``generator``.
        generator: source of the random start vectors (None: fresh OS-seeded generator).
        dtype, device: working precision (float32/float64) and device (default: the
            start's, else the operator's for ``op.matvec`` of a ``HessianOperator``, else
            float64 on CPU).
        start_distribution: "rademacher" or "gaussian" random starts.
        certify: restart in the complement of the converged pairs until no eigenvalue above
            the ``k``-th is missing (finds repeated eigenvalues; costs at least one run more).

    Returns:
        :class:`EigenResult`: eigenvalues [k] (most extreme first), unit eigenvectors
        [k, n], residual norms [k] (bounds on the distance to the nearest eigenvalue) and
        error estimates [k] from the recurrence, the number of matvecs, and ``converged``
        (False when ``max_steps`` ran out before every residual met ``tol``; the residuals
        then say how far off each value may be).

    Raises:
        ValueError: ``k < 1`` or ``k > n``, an unknown ``which``, a bad ``tol`` or
            ``max_steps``, a zero/misshapen start, or a misshapen/non-finite matvec output.
        TypeError: non-integer ``n``, ``k``, ``max_steps``; a non-generator ``generator``.

    Example (relations, not pinned numbers)::

        res = lanczos_top_eigenvalues(lambda v: A @ v, n, k=3, generator=g)
        # (A @ res.eigenvectors.T - res.eigenvectors.T * res.eigenvalues).norm(dim=0) ~= res.residuals
        # |eigvalsh(A)[-1] - res.eigenvalues[0]| <= res.residuals[0]  (the nearest eigenvalue)
    """
    n = _check_positive_int("n", n)
    k = _check_positive_int("k", k, n)
    if which not in ("largest", "smallest"):
        raise ValueError(f"which must be 'largest' or 'smallest' (algebraic), got {which!r}")
    dtype, dev = _working_dtype_device(start, dtype, device, matvec)
    eps = torch.finfo(dtype).eps
    if not (isinstance(tol, (int, float)) and 10 * eps <= tol < 1.0):
        raise ValueError(f"tol={tol} must lie in [10 * eps = {10 * eps:.2g}, 1) for {dtype}; "
                         "use a larger tol or float64")
    if max_steps is None:
        max_steps = 100 + 20 * k
    # a cap, not a request: a Krylov space cannot exceed n (tiny models have n < 40)
    max_steps = min(_check_positive_int("max_steps", max_steps), n)
    if max_steps < k:
        raise ValueError(f"max_steps={max_steps} is smaller than k={k}; use max_steps >= k")
    if start is not None:
        start = _check_start(start, n, dtype, dev)
    if start_distribution not in ("rademacher", "gaussian"):
        raise ValueError(f"start_distribution must be 'rademacher' or 'gaussian', got {start_distribution!r}")
    gen = resolve_generator(generator)  # restarts always draw, even after a given start

    sign = 1.0 if which == "largest" else -1.0
    op: Matvec = matvec if sign > 0 else (lambda v: -matvec(v))
    breakdown_tol = _default_breakdown_tol(dtype)
    v0 = start if start is not None else _random_vector(n, gen, dtype, dev, start_distribution)
    run = _Lanczos(op, v0, max_steps, locked=None, reorthogonalize=True, keep_basis=True,
                   breakdown_tol=breakdown_tol)
    first = _converge_run(run, k, tol, eps)
    num_matvecs, scale = run.size, run.scale
    if not certify:
        return EigenResult(
            eigenvalues=sign * first.theta, eigenvectors=first.vectors, residuals=first.residuals,
            num_matvecs=num_matvecs, converged=first.converged,
            error_estimates=_error_estimates(first.theta, first.residuals, first.others),
        )
    # certify: lock the converged pairs and look for more in their complement
    locked, a_locked, values = first.vectors, first.images, first.theta.tolist()
    others, converged = first.others, first.converged
    while converged and locked.shape[0] < n:
        v0 = _restart_vector(n, gen, dtype, dev, start_distribution, locked)
        if v0 is None:  # the locked vectors span the whole space
            break
        run = _Lanczos(op, v0, min(max_steps, n - locked.shape[0]), locked=locked, reorthogonalize=True,
                       keep_basis=True, breakdown_tol=breakdown_tol, scale=scale)
        extra = _converge_run(run, 1, tol, eps)
        num_matvecs, scale = num_matvecs + run.size, max(scale, run.scale)
        kth = sorted(values, reverse=True)[min(k, len(values)) - 1]
        if len(values) >= k and float(extra.theta[0]) <= kth + float(_tolerance(torch.tensor([kth]), tol, scale, eps)):
            break  # nothing in the complement beats the k-th value: the result is complete
        converged = extra.converged
        values += extra.theta.tolist()
        locked, a_locked = torch.cat([locked, extra.vectors]), torch.cat([a_locked, extra.images])
    # Rayleigh-Ritz on everything locked: removes the couplings y_i^T A y_j = r_i^T y_j that
    # each locked pair's residual r_i leaves with later runs' vectors.
    theta, vectors, _, residuals = _rayleigh_ritz(locked, a_locked)
    order = torch.argsort(theta, descending=True)
    top, rest = order[:k], order[k:]
    return EigenResult(
        eigenvalues=sign * theta[top], eigenvectors=vectors[top.to(vectors.device)], residuals=residuals[top],
        num_matvecs=num_matvecs,
        converged=converged and bool((residuals[top] <= _tolerance(theta[top], tol, scale, eps)).all()),
        error_estimates=_error_estimates(theta[top], residuals[top], torch.cat([theta[rest], others])),
    )


def power_iteration(
    matvec: Matvec,
    n: int,
    *,
    tol: float = 1e-8,
    max_iter: int = 10_000,
    start: Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PowerIterationResult:
    """The largest-*magnitude* eigenpair by power iteration: the baseline for Lanczos only.

    ``v <- A v / ||A v||`` with the Rayleigh quotient ``lambda = v^T A v`` until
    ``||A v - lambda v|| <= tol * |lambda|``.  The error shrinks like
    ``|lambda_2 / lambda_1|^t``, so it converges slowly on clustered spectra (and not at
    all when ``lambda`` and ``-lambda`` are both dominant), where Lanczos needs far fewer
    matvecs; it finds ``-10`` for the spectrum ``{-10, 3}``, unlike
    ``lanczos_top_eigenvalues(which="largest")``.  PyHessian (Yao et al. 2020) used it
    for the top Hessian eigenvalue.

    Args:
        matvec: ``v [n] -> A v [n]`` for a symmetric ``A``.
        n: dimension of ``A``.
        tol: relative residual tolerance, in (0, 1).
        max_iter: maximal number of matvecs.
        start: start vector [n] (None: Rademacher from ``generator``).
        generator: source of the random start (None: fresh OS-seeded generator).
        dtype, device: working precision and device (default the start's, else float64, CPU).

    Returns:
        :class:`PowerIterationResult` (eigenvalue, unit eigenvector [n], num_matvecs,
        converged); unpack as ``value, vector, num_matvecs, converged``.

    Raises:
        ValueError: bad ``n``, ``tol`` or ``max_iter``, a zero start, or a misshapen or
            non-finite matvec output.
        TypeError: non-integer ``n`` or ``max_iter``; a non-generator ``generator``.
    """
    n = _check_positive_int("n", n)
    max_iter = _check_positive_int("max_iter", max_iter)
    if not (0.0 < tol < 1.0):
        raise ValueError(f"tol must be in (0, 1), got tol={tol}")
    dtype, dev = _working_dtype_device(start, dtype, device)
    if start is None:
        v = _random_vector(n, resolve_generator(generator), dtype, dev)
    else:
        v = _check_start(start, n, dtype, dev)
    v = v / v.norm()
    eigenvalue = math.nan
    for it in range(1, max_iter + 1):
        w = _apply(matvec, v)
        eigenvalue = float(v @ w)
        if float((w - eigenvalue * v).norm()) <= tol * abs(eigenvalue):
            return PowerIterationResult(eigenvalue, v, it, True)
        v = w / w.norm()  # w != 0 here: w = 0 would have passed the residual test
    return PowerIterationResult(eigenvalue, v, max_iter, False)
