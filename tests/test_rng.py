"""analysis.rng: the one OS-seeded fallback generator of every stochastic function."""

from __future__ import annotations

import pytest
import torch

from analysis.rng import resolve_generator


def test_a_given_generator_is_returned_itself():
    g = torch.Generator().manual_seed(3)
    assert resolve_generator(g) is g


def test_none_gives_fresh_os_seeded_generators_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = resolve_generator(None), resolve_generator(None)
    assert isinstance(a, torch.Generator) and a is not b and a.device.type == "cpu"
    assert a.initial_seed() != b.initial_seed()  # 64-bit OS entropy: a collision is ~2^-64
    torch.rand(4, generator=a)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("bad", [0, "seed", torch.tensor(1)])
def test_anything_else_is_refused(bad):
    with pytest.raises(TypeError, match=f"generator must be a torch.Generator or None, got {type(bad).__name__}"):
        resolve_generator(bad)
