"""The mode a model is probed in: which normalization statistics, no dropout, nothing updated.

Every probe of ``variance/`` and ``landscape/`` evaluates a model as a **deterministic
function of its parameters** that leaves the model exactly as it found it.  For a model
with normalization layers that needs one choice, named ``statistics`` everywhere:

- ``"batch"``: normalization layers normalize with the statistics of the input they are
  given, as in a training step: class standardization (CN, Eq. 9) and ``BatchNorm`` over
  the classes passed in.  This is the training objective.
- ``"running"``: they normalize with their running averages, which are constants here:
  the function used at test time.

``LayerNorm``, ``GroupNorm`` and ``RMSNorm`` have no running statistics and behave the same
under both choices.  Within :func:`probe_mode`:

- the whole model is in training mode for ``"batch"`` and in eval mode for ``"running"``;
- **dropout is off** (every ``nn.Dropout*`` module in eval mode, i.e. the identity) under
  both choices, so that a probe is a deterministic function of the parameters: the probed
  surface is the one of the expected network, the one used at test time, not of a random
  mask (a fixed random mask would make every probe depend on one draw);
- **no running statistic is updated**: class standardization stops updating
  (``update_running_stats = False``), and a ``BatchNorm`` that tracks running statistics
  stops tracking them (``track_running_stats = False`` in ``"batch"`` mode makes it
  normalize with the batch statistics and pass no running buffer to the kernel, so nothing
  is written, which also keeps ``torch.func`` transforms free of in-place updates);
- every flag is restored on exit, also after an exception.

Modules that update their own buffers in other ways are not known here; callers that must
guarantee purity for them pass copies of the buffers to ``functional_call`` (as
``landscape.Objective`` does) or restore them (as ``variance.profile_layers`` does).
Dropout called functionally (``F.dropout(x, training=self.training)`` inside a custom
module) follows that module's flag, i.e. is active under ``"batch"``: use ``nn.Dropout``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from analysis.class_standardization import frozen_class_statistics

__all__ = ["STATISTICS", "check_statistics", "probe_mode"]

STATISTICS = ("batch", "running")


def check_statistics(statistics: str) -> str:
    """``statistics`` if it is one of :data:`STATISTICS`.

    Raises:
        ValueError: any other value (names it and the two choices).
    """
    if statistics not in STATISTICS:
        raise ValueError(
            f"unknown statistics {statistics!r}; choose 'batch' (normalize with the statistics "
            f"of the classes passed in, as in training) or 'running' (the running statistics, "
            f"as at test time)"
        )
    return statistics


@contextmanager
def probe_mode(model: nn.Module, statistics: str = "batch") -> Iterator[nn.Module]:
    """Put ``model`` in the probe mode of ``statistics`` (module docstring) for the block.

    Args:
        model: any ``nn.Module``.
        statistics: ``"batch"`` or ``"running"``.

    Yields:
        ``model`` itself, in training mode (``"batch"``) or eval mode (``"running"``), with
        dropout off and no running statistic updated.

    Raises:
        ValueError: unknown ``statistics``.
    """
    check_statistics(statistics)
    modules = list(model.modules())
    flags = [(m, m.training) for m in modules]
    batch_norms = [(m, m.track_running_stats) for m in modules if isinstance(m, _BatchNorm)]
    try:
        model.train(statistics == "batch")
        for m in modules:
            if isinstance(m, _DropoutNd):
                m.eval()
        if statistics == "batch":
            for m, _ in batch_norms:
                m.track_running_stats = False  # batch statistics, no running buffer touched
        with frozen_class_statistics(model):  # CN: the one mechanism of analysis.class_standardization
            yield model
    finally:
        for m, flag in flags:
            m.training = flag
        for m, flag in batch_norms:
            m.track_running_stats = flag
