"""Save and load a trained model together with the config that rebuilds it.

A checkpoint is a ``torch.save`` dictionary (loaded with ``weights_only=True``: only
tensors and plain Python values, no pickled code):

    format        "cnzsl-checkpoint/1"
    model_type    "AttributeEmbedderModel" | "LinearClassifier"
    model_config  the model's config dataclass as a dict
    state_dict    parameters and buffers (CN running statistics included)
    state_sha256  sha256 of the state dict's names, dtypes, shapes and bytes
                  (:func:`state_digest`), checked on load: a flipped byte in a weight is an
                  error, not a silently different model
    metadata      free JSON-like data (training config, data summary, metrics)

Writes are atomic (:func:`analysis.io.atomic_write`).  Loading into an existing model
whose architecture differs from the file's raises a ValueError naming every differing
field, before any weight is touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.io import atomic_write, to_jsonable
from analysis.model import AttributeEmbedderModel, ClassifierConfig, EmbedderConfig, LinearClassifier

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint", "state_digest"]

CHECKPOINT_FORMAT = "cnzsl-checkpoint/1"
_MODEL_TYPES: dict[str, tuple[type[nn.Module], type]] = {
    "AttributeEmbedderModel": (AttributeEmbedderModel, EmbedderConfig),
    "LinearClassifier": (LinearClassifier, ClassifierConfig),
}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict: every entry's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None) -> Path:
    """Atomically write ``model`` (weights, buffers and config) and ``metadata`` to ``path``."""
    name = type(model).__name__
    if name not in _MODEL_TYPES:
        raise TypeError(f"cannot checkpoint a {name}; expected one of {', '.join(_MODEL_TYPES)}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_type": name,
        "model_config": dataclasses.asdict(model.config),
        "state_dict": state,
        "state_sha256": state_digest(state),
        "metadata": to_jsonable(metadata or {}),
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(
    path: str | os.PathLike, into: nn.Module | None = None, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the file.
        into: an existing model to load the weights into; its type and config must equal
            the file's.  ``None`` builds a fresh model from the stored config.
        map_location: device of the loaded tensors.

    Returns:
        ``(model, metadata)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a checkpoint of this toolkit, tensors that do not match their stored
            sha256 (a corrupted file), or a different architecture than ``into``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `cnzsl train --out DIR` (writes DIR/model.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a foreign or torn file
        # not torch's message: it advises weights_only=False, i.e. running the file's code
        raise ValueError(f"{path} is not a checkpoint (torch cannot read it: {type(err).__name__}); pass a "
                         "model.pt written by `cnzsl train`") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} file (found format {found!r})")
    if payload.get("model_type") not in _MODEL_TYPES:
        raise ValueError(
            f"{path} holds an unknown model type {payload.get('model_type')!r}; "
            f"expected one of {', '.join(_MODEL_TYPES)}"
        )
    stored_digest = payload.get("state_sha256")  # absent from files written before it existed
    if stored_digest is not None and state_digest(payload["state_dict"]) != stored_digest:
        raise ValueError(f"{path} is corrupted: its tensors do not match the sha256 stored when it was saved "
                         "(a changed byte); restore the file or retrain")
    model_cls, config_cls = _MODEL_TYPES[payload["model_type"]]
    stored = config_cls(**payload["model_config"])
    if into is None:
        into = model_cls(stored)
    else:
        if type(into) is not model_cls:
            raise ValueError(
                f"{path} holds a {payload['model_type']}, cannot load it into a {type(into).__name__}"
            )
        differ = [
            f"{f.name}: file {getattr(stored, f.name)!r} vs model {getattr(into.config, f.name)!r}"
            for f in dataclasses.fields(stored)
            if getattr(stored, f.name) != getattr(into.config, f.name)
        ]
        if differ:
            raise ValueError(
                f"{path} was saved from a different architecture ({'; '.join(differ)}); build the "
                f"model from the file with load_checkpoint(path) instead"
            )
    into.load_state_dict(payload["state_dict"])
    return into, payload["metadata"]
