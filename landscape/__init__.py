"""Loss-surface probes (docs/science.md section 5): exact, pure and model-agnostic.

Every probe takes a model of the protocol ``model(features, attributes) -> logits`` (or any
``nn.Module`` through :class:`Objective`), works on CPU and CUDA, draws its random numbers
from an explicit generator and leaves the model bitwise unchanged.  Imports only from
``analysis/``.
"""

from landscape.comparison import MODEL_KINDS, LandscapeRun, TrajectoryProbe, model_config, run_landscape
from analysis.estimate import Estimate
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from landscape.hvp import HessianOperator, gradient_norm, gradient_norms_by_layer, hessian_vector_product
from landscape.lanczos import lanczos_tridiagonal
from landscape.power_iteration import power_iteration
from landscape.top_eigenvalues import EigenResult, lanczos_top_eigenvalues
from landscape.objective import Batch, Objective, parameter_names, zsl_batches
from landscape.santurkar import (
    SanturkarMeasurement,
    SanturkarProbe,
    effective_smoothness,
    gradient_predictiveness,
    loss_variation,
    santurkar_measure,
)
from landscape.slices import (
    Slice1D,
    Slice2D,
    filter_normalized_direction,
    loss_slice_1d,
    loss_slice_2d,
    plot_slice_1d,
    plot_slice_2d,
)
from landscape.spectral_density import SpectralDensity, plot_spectral_density, spectral_density
from landscape.xtrace import xtrace

__all__ = [
    "MODEL_KINDS", "Batch", "EigenResult", "HessianOperator", "LandscapeRun", "Objective",
    "SanturkarMeasurement", "SanturkarProbe", "Slice1D", "Slice2D", "SpectralDensity", "Estimate",
    "TrajectoryProbe", "effective_smoothness", "filter_normalized_direction", "gradient_norm",
    "gradient_norms_by_layer", "gradient_predictiveness", "hessian_vector_product", "hutchinson_trace",
    "hutchpp_trace", "lanczos_top_eigenvalues", "lanczos_tridiagonal", "loss_slice_1d", "loss_slice_2d",
    "loss_variation", "model_config", "parameter_names", "plot_slice_1d", "plot_slice_2d", "plot_spectral_density",
    "power_iteration", "run_landscape", "santurkar_measure", "spectral_density", "xtrace", "zsl_batches",
]
