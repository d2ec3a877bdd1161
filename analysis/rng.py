"""The one rule for random draws: an explicit ``torch.Generator``, never the global RNG.

Every stochastic function of the toolkit takes ``generator: torch.Generator | None``;
:func:`resolve_generator` turns ``None`` into a fresh CPU generator seeded from the
operating system's entropy (``std::random_device``), so the global RNG is never touched
and ``None`` means "not reproducible": pass a seeded generator for repeatable results.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_generator"]


def resolve_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator`` itself, or a fresh OS-seeded CPU generator when it is None.

    Raises:
        TypeError: ``generator`` is neither None nor a ``torch.Generator``.
    """
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()  # non-deterministic seed from std::random_device, not the global RNG
        return fresh
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
