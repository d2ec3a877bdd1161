"""The Lanczos process on a symmetric matvec operator (docs/science.md section 5.2).

:func:`lanczos_tridiagonal` runs ``m`` steps, ``A Q^T = Q^T T + beta_m q_{m+1} e_m^T`` with
``Q`` [m, n] orthonormal rows and ``T`` [m, m] symmetric tridiagonal (diagonal ``alpha``
[m], off-diagonal ``beta`` [m - 1]), with full reorthogonalization (Golub & Van Loan,
*Matrix Computations*, 4th ed., ch. 10.1-10.3; Paige 1971/1980 for why plain Lanczos loses
orthogonality).  The recurrence itself, :class:`LanczosProcess`, is shared with
:mod:`landscape.top_eigenvalues` (Ritz pairs until the wanted ones converge) and
:mod:`landscape.spectral_density` (SLQ).  Random start vectors come from a
``torch.Generator`` (never the global RNG), drawn on the generator's device and moved to
the working device, so a seed gives the same vectors on every device.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from analysis.rng import resolve_generator
from landscape.matvec import Matvec, apply_matvec, check_positive_int, check_start, random_vector, working_dtype_device

__all__ = ["LanczosProcess", "LanczosResult", "default_breakdown_tol", "lanczos_tridiagonal"]


class LanczosResult(NamedTuple):
    """The Lanczos tridiagonal ``T = tridiag(beta, alpha, beta)`` after ``m`` steps."""

    alpha: Tensor  # [m] diagonal of T (float64, CPU)
    beta: Tensor  # [m - 1] off-diagonal of T (float64, CPU)
    basis: Tensor | None  # [m, n] Lanczos vectors Q (rows), or None if not kept
    residual_norm: float  # beta_m = ||A q_m - alpha_m q_m - beta_{m-1} q_{m-1}|| after step m
    breakdown: bool  # True if the process stopped early: span(Q) is A-invariant
    num_matvecs: int


class LanczosProcess:
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
        w = apply_matvec(self.matvec, q, check_finite=False)
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


def default_breakdown_tol(dtype: torch.dtype) -> float:
    # The residual of an invariant subspace after CGS2 is rounding noise, O(eps ||A||) times
    # a modest factor (about 100 eps measured on 30 x 30 float64 matrices, growing with n and
    # with the matvec's own error).  eps^(2/3) (4e-11 in float64, 2e-5 in float32) sits far
    # above that noise and below the default eigenvalue tolerances (1e-8, 1e-4), so a run
    # stopped by breakdown has Ritz pairs that already meet them.  Missing a breakdown is
    # harmless with reorthogonalization: the next vector is a fresh orthogonal direction.
    return torch.finfo(dtype).eps ** (2.0 / 3.0)


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
    n = check_positive_int("n", n)
    num_steps = check_positive_int("num_steps", num_steps, n)
    dtype, dev = working_dtype_device(start, dtype, device)
    if start is None:
        start = random_vector(n, resolve_generator(generator), dtype, dev, start_distribution)
    else:
        start = check_start(start, n, dtype, dev)
    tol = default_breakdown_tol(dtype) if breakdown_tol is None else breakdown_tol
    if not (0.0 <= tol < 1.0):
        raise ValueError(f"breakdown_tol must be in [0, 1), got {breakdown_tol}")
    run = LanczosProcess(matvec, start, num_steps, locked=None, reorthogonalize=reorthogonalize,
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
