"""Loss-surface probes (docs/science.md section 5): exact, pure and model-agnostic.

Every probe takes a model of the protocol ``model(features, attributes) -> logits`` (or any
``nn.Module`` through :class:`Objective`), works on CPU and CUDA, draws its random numbers
from an explicit generator and leaves the model bitwise unchanged.  Every probe also runs
sharded over ``torch.distributed`` processes, each holding a shard of the data, through one
object: :class:`ShardedObjective` (``landscape/distributed.py``; ``cnzsl spectrum`` under
``torchrun``).  Imports only from ``analysis/``.
"""

from landscape.budget import (
    DEFAULT_BUDGET,
    FAST_BUDGET,
    LandscapeEstimate,
    UnitCosts,
    WorkCounts,
    expected_seconds,
    measure_unit_costs,
    work_counts,
)
from landscape.comparison import MODEL_KINDS, LandscapeRun, TrajectoryProbe, model_config, run_landscape
from analysis.estimate import Estimate
from landscape.distributed import Session, SetupFailed, ShardFailure, ShardedObjective, distributed_session
from landscape.hutchinson import hutchinson_trace, hutchpp_trace
from landscape.hvp import HessianOperator, gradient_norm, gradient_norms_by_layer, hessian_vector_product
from landscape.lanczos import lanczos_tridiagonal
from landscape.power_iteration import power_iteration
from landscape.top_eigenvalues import EigenResult, lanczos_top_eigenvalues
from landscape.objective import Batch, Objective, parameter_groups, parameter_names, zsl_batches
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
    plot_slice_panels,
)
from landscape.spectral_density import SpectralDensity, plot_spectral_density, spectral_density
from landscape.spectrum import SpectrumRun, run_spectrum
from landscape.xtrace import xtrace

__all__ = [
    "DEFAULT_BUDGET", "FAST_BUDGET", "LandscapeEstimate", "UnitCosts", "WorkCounts", "expected_seconds",
    "measure_unit_costs", "work_counts",
    "MODEL_KINDS", "Batch", "EigenResult", "HessianOperator", "LandscapeRun", "Objective",
    "SanturkarMeasurement", "SanturkarProbe", "Session", "SetupFailed", "ShardFailure", "ShardedObjective",
    "Slice1D", "Slice2D", "SpectralDensity", "SpectrumRun", "Estimate", "distributed_session",
    "TrajectoryProbe", "effective_smoothness", "filter_normalized_direction", "gradient_norm",
    "gradient_norms_by_layer", "gradient_predictiveness", "hessian_vector_product", "hutchinson_trace",
    "hutchpp_trace", "lanczos_top_eigenvalues", "lanczos_tridiagonal", "loss_slice_1d", "loss_slice_2d",
    "loss_variation", "model_config", "parameter_groups", "parameter_names", "plot_slice_1d", "plot_slice_2d",
    "plot_slice_panels", "plot_spectral_density", "power_iteration", "run_landscape", "run_spectrum", "santurkar_measure",
    "spectral_density", "xtrace", "zsl_batches",
]
