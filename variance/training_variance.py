"""V4 (docs/science.md section 4.4) along training: with CN right before the last layer ``V``, the
prototype variance stays in a band set by ``V`` alone, at every step.

**The bound.**  Let the input of ``V`` [d_z, d_L] be ``s_c = S(h)_c``, the class
standardization of the current classes (training mode, ``eps >= 0``), and ``p_c = V s_c``
(no bias).  ``S`` centres every coordinate over the classes, ``sum_c s_c = 0``, and gives it
second moment ``v_j / (v_j + eps)`` (``v_j`` the class variance of its input), so with
``Sigma = (1/K) sum_c s_c s_c^T`` (positive semi-definite, ``tr Sigma = tau <= d_L``, ``= d_L``
for ``eps = 0``)

    P_t = (1/(K d_z)) sum_c ||V s_c||^2 = tr(Sigma V^T V) / d_z,

and, since ``lambda_min(M) tr Sigma <= tr(Sigma M) <= lambda_max(M) tr Sigma`` for
``Sigma >= 0`` and symmetric ``M = V^T V``,

    sigma_min(V_t)^2 tau_t / d_z  <=  P_t  <=  sigma_max(V_t)^2 d_L / d_z        (the CN band)

at every step ``t`` of any training run (``sigma_min`` is the ``d_L``-th singular value, 0
when ``d_z < d_L``).  Nothing before ``V`` enters the band -- not the depth, the hidden
weights, nor the attributes -- and the band is ``kappa(V_t)^2`` wide.  That is the sense in
which CN keeps the variance controlled: at init ``P_0 = 1/d_z`` in expectation (V4), and
along training ``P_t`` moves only as far as ``V_t``'s extreme singular values move.

Without CN the same algebra gives ``sigma_min^2 m_t <= d_z P_t <= sigma_max^2 m_t`` with
``m_t = (1/K) sum_c ||h_c||^2`` (``h`` not centred: ``P_t`` is then a second moment), and
``m_t`` is whatever the depth, the hidden inits, the attributes and training make it: at
init ``m_0 = 6^{-L} mean_c ||a_c||^2`` for ``L`` layers of PyTorch's default init
(:func:`variance.prototype_variance.predicted_hidden_norm_sq`).  The CN band (``tau = d_L``)
then fails for the model without CN unless ``m_t`` happens to sit within ``kappa(V_t)^2`` of
``d_L``: the expected failure that confirms the claim.

**What is measured** (:func:`trace_last_layer`): a
:class:`~variance.profiler.VarianceRecorder` records, every ``every`` steps, the second
moment of ``V``'s output (``P_t``) and the mean squared row norm of its input (``tau_t`` or
``m_t``); the callback adds ``V_t``'s extreme singular values.  The verdict of a band row is
the worst ratio over the recorded steps of all seeds, ``max_t max(P_t / U_t, L_t / P_t)``,
which must be ``<= 1`` (round-off allowance ``1e-6``, float32 forward passes profiled in
float64).  The bound is a derived inequality, so for CN it is an ``identity``-kind row: it
fails only on a bug or when ``S`` does not directly precede ``V``; the paper makes no
quantitative prediction of the drift along training, so the drift ``P_T / P_0`` itself is
an observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from analysis.class_standardization import ClassStandardization
from analysis.data import ZSLData
from analysis.estimate import Estimate, mean_estimate
from analysis.model import EmbedderConfig
from analysis.training import StepInfo, TrainConfig, build_model, train
from variance.estimate import Check, bound_check, observation
from variance.profiler import VarianceRecorder

__all__ = ["LastLayerTrace", "TrainingTrace", "check_v4_training", "trace_last_layer"]

BAND_RTOL = 1e-6  # round-off allowance of the band check (float32 forward, float64 statistics)


@dataclass(frozen=True)
class TrainingTrace:
    """One training run, recorded every ``every`` steps: arrays ``[n]`` in step order."""

    steps: np.ndarray  # global steps
    prototype_second_moment: np.ndarray  # P_t of V's (pre-activation) output
    input_norm_sq: np.ndarray  # tau_t (CN) or m_t (no CN): mean over classes of ||input of V||^2
    sigma_max: np.ndarray  # largest singular value of V_t
    sigma_min: np.ndarray  # d_L-th singular value of V_t (0 if d_z < d_L)
    input_dim: int  # d_L
    feature_dim: int  # d_z
    standardized: bool  # the input of V is a class standardization

    def band(self, input_norm_sq: float | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(L_t, U_t)`` of the CN band: ``sigma_min^2 tau_t / d_z`` and ``sigma_max^2 d_L / d_z``.

        ``input_norm_sq`` replaces ``tau_t`` in the lower end (``d_L``: the band CN would give).
        """
        tau = self.input_norm_sq if input_norm_sq is None else input_norm_sq
        return self.sigma_min**2 * tau / self.feature_dim, self.sigma_max**2 * self.input_dim / self.feature_dim

    def worst_band_ratio(self, input_norm_sq: float | np.ndarray | None = None) -> float:
        """``max_t max(P_t / U_t, L_t / P_t)``: at most 1 inside the band."""
        lower, upper = self.band(input_norm_sq)
        p = self.prototype_second_moment
        return float(np.max(np.maximum(p / upper, lower / p)))


def _last_layer(model: nn.Module) -> tuple[str, str, nn.Linear]:
    """``(name of V's input module, name of V, V)`` in ``model.embedder``."""
    embedder = getattr(model, "embedder", None)
    if not isinstance(embedder, nn.Sequential):
        raise ValueError(f"expected a model with an nn.Sequential embedder (AttributeEmbedderModel), "
                         f"got {type(model).__name__}")
    linear = [i for i, m in enumerate(embedder) if isinstance(m, nn.Linear)]
    if len(linear) < 2:
        raise ValueError("the embedder needs at least one hidden layer before V (hidden_dims non-empty)")
    v = linear[-1]
    return f"embedder.{v - 1}", f"embedder.{v}", embedder[v]


class LastLayerTrace:
    """Training callback: a :class:`VarianceRecorder` on ``V``'s input and output plus the
    extreme singular values of ``V``, every ``every`` steps (module docstring).

    Raises:
        ValueError: as :class:`VarianceRecorder`, or a model without hidden layers.
    """

    def __init__(self, model: nn.Module, every: int = 1) -> None:
        self.input_name, self.output_name, self._v = _last_layer(model)
        self.standardized = isinstance(dict(model.named_modules())[self.input_name], ClassStandardization)
        self.recorder = VarianceRecorder(every, layers=[self.input_name, self.output_name], use_features=False)
        self.sigmas: list[tuple[float, float]] = []

    def __call__(self, info: StepInfo) -> None:
        if info.step % self.recorder.every:
            return
        self.recorder(info)
        weight = self._v.weight.detach().double()  # [d_z, d_L]
        s = torch.linalg.svdvals(weight)  # descending, min(d_z, d_L) values
        d_z, d_l = weight.shape
        self.sigmas.append((float(s[0]), float(s[-1]) if d_z >= d_l else 0.0))

    def trace(self) -> TrainingTrace:
        """The recorded run as a :class:`TrainingTrace`."""
        arrays = self.recorder.as_arrays()
        sig = np.array(self.sigmas, dtype=np.float64).reshape(-1, 2)
        d_z, d_l = self._v.weight.shape
        return TrainingTrace(self.recorder.steps, arrays[self.output_name]["second_moment"],
                             arrays[self.input_name]["norm_sq"], sig[:, 0], sig[:, 1], d_l, d_z, self.standardized)


def trace_last_layer(config: EmbedderConfig, data: ZSLData, train_config: TrainConfig, *, every: int = 1) -> TrainingTrace:
    """Train ``build_model(config, train_config.seed)`` on ``data`` with the recipe and trace it.

    Raises:
        ValueError: ``config`` has biases (the band is for ``p = V s``), or as :class:`LastLayerTrace`.
    """
    if config.bias:
        raise ValueError("the V4 band is derived for a bias-free last layer; pass EmbedderConfig(bias=False)")
    model = build_model(config, train_config.seed)
    tracer = LastLayerTrace(model, every)
    train(model, data, train_config, on_step=tracer)
    return tracer.trace()


def check_v4_training(
    cn_traces: Sequence[TrainingTrace],
    plain_traces: Sequence[TrainingTrace],
    *,
    setting: str = "",
) -> list[tuple[Check, str]]:
    """V4 along training from traced runs of a CN model and the same model without CN.

    Rows, with their kinds:

    1. ``identity``: CN, the band holds at every recorded step of every seed;
    2. ``expected-failure``: without CN, the CN band (``tau = d_L``) at the same steps;
    3. ``observation`` (two rows): the drift ``P_T / P_0`` over the run, CN and without CN,
       mean and standard error over the seeds (no prediction: the paper gives none).

    Raises:
        ValueError: fewer than 2 traces of either model (a standard error needs 2 seeds), or a
            CN trace whose input of V is not a class standardization.
    """
    if len(cn_traces) < 2 or len(plain_traces) < 2:
        raise ValueError(f"need at least 2 traces of each model (seeds), got {len(cn_traces)} and "
                         f"{len(plain_traces)}")
    if not all(t.standardized for t in cn_traces):
        raise ValueError("a CN trace's last layer V is not preceded by class standardization: the band "
                         "needs S directly before V (cn_layers=(-1,), cn_placement 'both' or 'post')")
    steps = int(cn_traces[0].steps[-1])
    where = f"{setting}, {len(cn_traces)} seeds, steps 0..{steps}" if setting else f"steps 0..{steps}"
    d_l = cn_traces[0].input_dim
    cn_worst = max(t.worst_band_ratio() for t in cn_traces)
    plain_worst = max(t.worst_band_ratio(float(d_l)) for t in plain_traces)
    band = "sigma_min(V)^2 tau <= d_z P_t <= sigma_max(V)^2 d_L"

    def drift(traces: Sequence[TrainingTrace]) -> Estimate:
        ratios = torch.tensor([t.prototype_second_moment[-1] / t.prototype_second_moment[0] for t in traces],
                              dtype=torch.float64)
        return mean_estimate(ratios)

    return [
        (bound_check("V4", f"CN band along training, {band}: worst ratio, {where}", 1.0, cn_worst,
                     rtol=BAND_RTOL), "identity"),
        (bound_check("V4", f"no CN vs the CN band (tau = d_L = {d_l}): worst ratio, {where}", 1.0, plain_worst,
                     rtol=BAND_RTOL), "expected-failure"),
        (observation("V4", f"CN: drift P_T/P_0 of Var[p] over training, {where}", drift(cn_traces), 1.0),
         "observation"),
        (observation("V4", f"no CN: drift P_T/P_0 of Var[p] over training, {where}", drift(plain_traces), 1.0),
         "observation"),
    ]
