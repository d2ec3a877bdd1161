"""Shared cases of the landscape tests: purity snapshots and an exact quadratic model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def snapshot(model: nn.Module) -> tuple[dict[str, Tensor], list[bool]]:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [m.training for m in model.modules()])


def assert_unchanged(model: nn.Module, snapshot: tuple[dict[str, Tensor], list[bool]]) -> None:
    state, flags = snapshot
    now = model.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), key  # parameters and buffers, bitwise
    assert [m.training for m in model.modules()] == flags


class Quadratic(nn.Module):
    """``L(x) = 1/2 x^T A x`` through the model protocol (the "logits" are the loss)."""

    def __init__(self, a: Tensor, x0: Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x0.clone())
        self.register_buffer("a", a)

    def forward(self, features: Tensor, attributes: Tensor) -> Tensor:
        return 0.5 * self.x @ self.a @ self.x


def identity_loss(output: Tensor, targets: Tensor) -> Tensor:
    return output


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def known_spectrum(lam: list[float] | Tensor, seed: int = 0) -> Tensor:
    """``Q diag(lam) Q^T`` (float64, symmetric) with ``Q`` from the QR of a seeded Gaussian."""
    lam = torch.as_tensor(lam, dtype=torch.float64)
    n = lam.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen(seed), dtype=torch.float64))
    a = q @ torch.diag(lam) @ q.T
    return (a + a.T) / 2


class Counting:
    """A matvec ``v -> a @ v`` that counts its calls (an operator's cost)."""

    def __init__(self, a: Tensor) -> None:
        self.a, self.calls = a, 0

    def __call__(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.a @ v
