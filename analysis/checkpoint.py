"""Save and load a trained model together with the config that rebuilds it.

A checkpoint is a ``torch.save`` dictionary (loaded with ``weights_only=True``: only
tensors and plain Python values, no pickled code):

    format        "cnzsl-checkpoint/1"
    model_type    "AttributeEmbedderModel" | "LinearClassifier" | "builder"
    model_config  the model's config dataclass as a dict; for "builder" (a researcher's own
                  model, README "The model contract"): {"builder": "PATH.py:NAME" |
                  "package.module:NAME", "kwargs": {...}, "attribute_dim": d_a,
                  "feature_dim": d_z, "class": the module's class name}
    state_dict    parameters and buffers (CN running statistics included)
    state_sha256  sha256 of the state dict's names, dtypes, shapes and bytes
                  (:func:`state_digest`), checked on load: a flipped byte in a weight is an
                  error, not a silently different model
    metadata      free JSON-like data (training config, data summary, metrics)

A model of the contract is saved with its builder (``save_checkpoint(path, model,
builder=spec, dims=(d_a, d_z))``, ``spec`` from :func:`analysis.user_model.resolve_model`)
and rebuilt on load by calling it, ``NAME(d_a, d_z, generator=..., **kwargs)``, before its
state is loaded: the file itself still holds no code, but loading it imports the builder
(a file path is stored absolute, so the checkpoint loads from any working directory).

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
from analysis.user_model import ModelSpec, resolve_model

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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None, *,
                    builder: ModelSpec | None = None, dims: tuple[int, int] | None = None) -> Path:
    """Atomically write ``model`` (weights, buffers and config) and ``metadata`` to ``path``.

    Args:
        builder: for a model of the contract that is not one of the toolkit's classes, how
            to rebuild it (:func:`analysis.user_model.resolve_model`); with ``dims``.
        dims: ``(attribute_dim, feature_dim)`` the builder is called with.

    Raises:
        TypeError: a model the toolkit cannot rebuild: neither its classes nor a ``builder``
            with ``dims``.
    """
    name = type(model).__name__
    if builder is not None:
        if dims is None or len(dims) != 2:
            raise TypeError("save_checkpoint(..., builder=spec) needs dims=(attribute_dim, feature_dim), the "
                            "arguments the builder is called with")
        source, _, attr = builder.text.rpartition(":")
        if source.endswith(".py"):  # absolute: loadable from any working directory
            source = str(Path(source).resolve())
        config = {"builder": f"{source}:{attr}", "kwargs": dict(builder.kwargs), "attribute_dim": int(dims[0]),
                  "feature_dim": int(dims[1]), "class": name}
        model_type = "builder"
    elif name in _MODEL_TYPES:
        config, model_type = dataclasses.asdict(model.config), name
    else:
        raise TypeError(f"cannot checkpoint a {name} without its builder; expected one of {', '.join(_MODEL_TYPES)}, "
                        "or pass builder=resolve_model('PATH.py:NAME') and dims=(attribute_dim, feature_dim)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_type": model_type,
        "model_config": config,
        "state_dict": state,
        "state_sha256": state_digest(state),
        "metadata": to_jsonable(metadata or {}),
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def _build_from_builder(config: dict[str, Any]) -> nn.Module:
    """The model a "builder" checkpoint describes, freshly built (its weights are loaded next)."""
    spec = resolve_model(config["builder"], config.get("kwargs") or {})
    return spec.build(int(config["attribute_dim"]), int(config["feature_dim"]), generator=torch.Generator().manual_seed(0))


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
            sha256 (a corrupted file), or a different architecture than ``into`` (or than
            the one its builder now builds); a builder that cannot be imported or called
            (:class:`analysis.user_model.ModelContractError`).
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
    if payload.get("model_type") not in (*_MODEL_TYPES, "builder"):
        raise ValueError(
            f"{path} holds an unknown model type {payload.get('model_type')!r}; "
            f"expected one of {', '.join(_MODEL_TYPES)} or builder"
        )
    stored_digest = payload.get("state_sha256")  # absent from files written before it existed
    if stored_digest is not None and state_digest(payload["state_dict"]) != stored_digest:
        raise ValueError(f"{path} is corrupted: its tensors do not match the sha256 stored when it was saved "
                         "(a changed byte); restore the file or retrain")
    if payload["model_type"] == "builder":
        config = payload["model_config"]
        built = _build_from_builder(config)
        if into is not None and type(into) is not type(built):
            raise ValueError(f"{path} holds a {type(built).__name__}, cannot load it into a {type(into).__name__}")
        into = built if into is None else into
        try:
            into.load_state_dict(payload["state_dict"])
        except RuntimeError as err:  # the builder's code changed since the file was written
            raise ValueError(f"{path}: {config['builder']} now builds another architecture than the one saved "
                             f"({str(err).splitlines()[0]}); restore the builder's code or retrain") from None
        return into, payload["metadata"]
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
