"""Continual-learning baselines of CZSL (docs/science.md section 6.4): their configuration, and one
import for all of them.

- EWC-online and MAS-online, quadratic anchor penalties: :mod:`analysis.czsl.anchor_penalties`;
- A-GEM, gradients projected against an episodic memory: :mod:`analysis.czsl.agem`;
- the model view and option checks they share: :mod:`analysis.czsl.parameters`.
"""

from __future__ import annotations

from analysis.czsl.agem import EpisodicMemory, agem_project, agem_reference_gradient, assign_flat_grad, flat_grad
from analysis.czsl.anchor_penalties import (
    EWCOnline,
    MASOnline,
    QuadraticAnchorPenalty,
    ewc_importance,
    mas_importance,
)
from analysis.czsl.parameters import AGEM_MEMORY_PER_CLASS, MethodConfig, agem_memory_for

__all__ = [
    "AGEM_MEMORY_PER_CLASS",
    "EWCOnline",
    "EpisodicMemory",
    "MASOnline",
    "MethodConfig",
    "QuadraticAnchorPenalty",
    "agem_memory_for",
    "agem_project",
    "agem_reference_gradient",
    "assign_flat_grad",
    "ewc_importance",
    "flat_grad",
    "mas_importance",
]
