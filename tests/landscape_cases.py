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
