"""Symmetric operators given as a matvec: the checks and draws every Krylov and trace method shares.

Every curvature routine of ``landscape/`` (Lanczos, power iteration, Hutchinson, Hutch++,
XTrace, SLQ) sees a symmetric ``A`` [n, n] only through ``matvec(v [n]) -> A v [n]``.
This module holds what they share: the operator type, the validated application of a
matvec, random start and probe vectors drawn from an explicit generator, and the checks of
sizes, dtypes and start vectors with messages that name the value and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "FLOAT_DTYPES", "Matvec", "apply_matvec", "check_dtype", "check_positive_int", "check_start",
    "operator_size_and_device", "random_vector", "working_dtype_device",
]

Matvec = Callable[[Tensor], Tensor]
"""A symmetric linear operator: ``matvec(v [n]) -> A v [n]`` on v's device and dtype."""

FLOAT_DTYPES = (torch.float32, torch.float64)


def random_vector(
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


def check_positive_int(
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


def check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _operator_attribute(matvec: Matvec | None, name: str) -> object:
    """``matvec.__self__.<name>`` when ``matvec`` is a bound method of an operator that has it
    (a ``landscape.HessianOperator``), else None."""
    return getattr(getattr(matvec, "__self__", None), name, None)


def working_dtype_device(
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
        if start is not None and start.dtype in FLOAT_DTYPES:
            dtype = start.dtype
        else:
            dtype = op_dtype if op_dtype in FLOAT_DTYPES else torch.float64
    if device is not None:
        dev = torch.device(device)
    elif start is not None:
        dev = start.device
    else:
        dev = op_device if isinstance(op_device, torch.device) else torch.device("cpu")
    return check_dtype(dtype), dev


def apply_matvec(matvec: Matvec, v: Tensor, *, check_finite: bool = True) -> Tensor:
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


def check_start(start: Tensor, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
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


def operator_size_and_device(n: int, dtype: torch.dtype, device: torch.device | str | None) -> tuple[int, torch.device]:
    """``(n, device)`` of an operator checked for a trace estimate: ``n`` a positive int, ``dtype``
    float32/float64, ``device`` default CPU."""
    n = check_positive_int("n", n)
    check_dtype(dtype)
    return n, torch.device(device) if device is not None else torch.device("cpu")
