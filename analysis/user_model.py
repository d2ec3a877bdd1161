"""A researcher's own architecture under the one model contract of the toolkit.

The contract (README, "Probing a new architecture"): a class or factory

    NAME(attribute_dim, feature_dim, generator=None) -> nn.Module

called as ``NAME(attribute_dim, feature_dim, generator=g, **model_kwargs)``, which draws
every initial weight from ``g`` (so that seeds give independent, reproducible inits), and
whose module maps

    forward(features [B, d_z], attributes [K, d_a]) -> logits [B, K]

(``prototypes(attributes) -> [K, d_z]`` optional: the variance profiler uses it when
present, else calls ``forward(attributes)``; ``pre_activation_prototypes(attributes)``
optional: the output of the last layer before an output activation, which the V2-V4
predictions are about; ``head.gamma`` optional: the NS scale, a number or a one-element
``nn.Parameter``).  The trainer, ``evaluate``, the variance profiler and every landscape probe
accept any module that follows it.

:func:`resolve_model` turns the text a user types into a :class:`ModelSpec`:

- ``preset:NAME``: a shipped preset of :data:`analysis.model.PRESETS` (the normalization
  zoo ``cn``, ``bn``, ``ln``, ``rmsnorm``, ``mlp`` and the ablation rows);
- ``path/to/file.py:NAME``: ``NAME`` in a Python file, imported under a private module name;
- ``package.module:NAME``: ``NAME`` in an importable module.

:func:`check_model` runs the contract's checks on a built model before any training: the
forward pass returns a floating ``[B, K]`` tensor of finite logits.  Every failure is a
:class:`ModelContractError` (a ``ValueError``) whose one-line message names the contract.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from analysis.model import PRESETS, AttributeEmbedderModel, preset_config
from analysis.probe_mode import probe_mode

__all__ = ["MODEL_CONTRACT", "ModelContractError", "ModelSpec", "check_model", "resolve_model"]

MODEL_CONTRACT = (
    "NAME(attribute_dim, feature_dim, generator=None) -> nn.Module whose "
    "forward(features [B, d_z], attributes [K, d_a]) returns logits [B, K]"
)


class ModelContractError(ValueError):
    """A user's model does not follow the contract (module docstring); one line."""


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A resolved ``--model``: how to build the model, and what to call it.

    Attributes:
        text: the specification as given (``preset:ln``, ``examples/x.py:Net``, ...).
        label: a short name for tables and legends (the preset name, else ``NAME``).
        builder: the class or factory.
        kwargs: extra keyword arguments of every build (``--model-kwargs``).
        preset: the preset name for ``preset:NAME``, else ``None``.
    """

    text: str
    label: str
    builder: Builder = field(repr=False)
    kwargs: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None

    def build(self, attribute_dim: int, feature_dim: int, generator: torch.Generator | None = None) -> nn.Module:
        """``builder(attribute_dim, feature_dim, generator=generator, **kwargs)``, checked to be a module.

        Raises:
            ModelContractError: the builder refuses these arguments, raises, or returns
                something other than an ``nn.Module``.
        """
        try:
            inspect.signature(self.builder).bind(attribute_dim, feature_dim, generator=generator, **self.kwargs)
        except TypeError as err:
            raise ModelContractError(
                f"{self.text}: cannot be called as {self.label}(attribute_dim, feature_dim, generator=..."
                f"{''.join(f', {k}=...' for k in self.kwargs)}) ({err}); the contract is {MODEL_CONTRACT}"
            ) from None
        except ValueError:  # no signature (a builtin): let the call decide
            pass
        try:
            model = self.builder(attribute_dim, feature_dim, generator=generator, **self.kwargs)
        except Exception as err:  # noqa: BLE001 -- the user's code: report it in one line
            raise ModelContractError(
                f"{self.text}: building the model failed with {type(err).__name__}: {err} "
                f"(called as {self.label}({attribute_dim}, {feature_dim}, generator=<torch.Generator>"
                f"{''.join(f', {k}={v!r}' for k, v in self.kwargs.items())}))"
            ) from None
        if not isinstance(model, nn.Module):
            raise ModelContractError(
                f"{self.text}: returned a {type(model).__name__}, not an nn.Module; the contract is "
                f"{MODEL_CONTRACT}"
            )
        return model


def _preset_builder(name: str) -> Builder:
    def build(attribute_dim: int, feature_dim: int, generator: torch.Generator | None = None) -> nn.Module:
        return AttributeEmbedderModel(preset_config(name, attribute_dim, feature_dim), generator=generator)

    build.__name__ = build.__qualname__ = f"preset_{name}"
    return build


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelContractError(f"model file {str(path)!r} does not exist; pass --model PATH.py:NAME with an existing file")
    name = f"_cnzsl_user_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelContractError(f"cannot import {str(path)!r} as Python; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 -- the user's code: report it in one line
        sys.modules.pop(name, None)
        raise ModelContractError(f"importing model file {str(path)!r} failed with {type(err).__name__}: {err}") from None
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 -- ModuleNotFoundError or the module's own error
        raise ModelContractError(
            f"cannot import module {name!r} ({type(err).__name__}: {err}); pass --model "
            f"package.module:NAME for an importable module or --model PATH.py:NAME for a file"
        ) from None


def resolve_model(text: str, kwargs: dict[str, Any] | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of ``text`` (module docstring for the three forms).

    Args:
        text: ``preset:NAME``, ``PATH.py:NAME`` or ``package.module:NAME``.
        kwargs: extra keyword arguments of every build; not allowed with presets.

    Raises:
        ModelContractError: a malformed ``text``, an unknown preset, a missing file, an
            import that fails, a missing or non-callable ``NAME``.
    """
    kwargs = dict(kwargs or {})
    source, sep, name = str(text).rpartition(":")
    if not sep or not source or not name:
        raise ModelContractError(
            f"--model {text!r} is not of the form preset:NAME, PATH.py:NAME or package.module:NAME"
        )
    if source == "preset":
        if name not in PRESETS:
            raise ModelContractError(f"unknown preset {name!r} in --model {text!r}; choose one of {', '.join(PRESETS)}")
        if kwargs:
            raise ModelContractError(f"--model-kwargs {kwargs} cannot be passed to a preset ({text!r}); presets take none")
        return ModelSpec(text, name, _preset_builder(name), {}, preset=name)
    module = _import_file(Path(source)) if source.endswith(".py") else _import_module(source)
    if not hasattr(module, name):
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                        and getattr(v, "__module__", None) == module.__name__)
        raise ModelContractError(
            f"{source!r} has no {name!r}; it defines {', '.join(public) or 'no public callables'}"
        )
    builder = getattr(module, name)
    if not callable(builder):
        raise ModelContractError(f"{text!r} is a {type(builder).__name__}, not a class or factory; the contract is {MODEL_CONTRACT}")
    return ModelSpec(text, name, builder, kwargs)


def check_model(model: nn.Module, features: Tensor, attributes: Tensor, *, name: str = "model") -> None:
    """The contract's checks on one forward pass, on a copy (``model`` is not touched).

    Runs ``copy(model)(features, attributes)`` without gradients in training mode (the
    statistics of the classes passed in, dropout off: :func:`~analysis.probe_mode.probe_mode`).

    Args:
        model: the built model.
        features: ``[B, d_z]`` image features.
        attributes: ``[K, d_a]`` class attributes.
        name: what to call the model in messages.

    Raises:
        ModelContractError: the forward pass fails, returns something other than a floating
            ``[B, K]`` tensor, or returns NaN or infinite logits.
    """
    probe = copy.deepcopy(model)
    b, k = features.shape[0], attributes.shape[0]
    try:
        with torch.no_grad(), probe_mode(probe, "batch"):
            logits = probe(features, attributes)
    except Exception as err:  # noqa: BLE001 -- the user's code: report it in one line
        raise ModelContractError(
            f"{name}: forward(features [{b}, {features.shape[1]}], attributes [{k}, {attributes.shape[1]}]) "
            f"failed with {type(err).__name__}: {err}; the contract is {MODEL_CONTRACT}"
        ) from None
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (b, k) or not logits.is_floating_point():
        got = (f"a {logits.dtype} tensor of shape {tuple(logits.shape)}" if isinstance(logits, Tensor)
               else f"a {type(logits).__name__}")
        raise ModelContractError(
            f"{name}: forward(features [{b}, d_z], attributes [{k}, d_a]) returned {got}, expected floating "
            f"logits [{b}, {k}]; the contract is {MODEL_CONTRACT}"
        )
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise ModelContractError(
            f"{name}: {bad} of {logits.numel()} logits at init are NaN or infinite; check the init "
            f"and any division by a norm or a variance (add an eps)"
        )
