"""Forward-pass variance claims V1-V5 of Class Normalization (docs/science.md section 4).

Each claim has ``predicted_*`` functions next to a Monte Carlo estimator that returns the
estimate and its standard error, and a ``check_*`` that compares them.  Imports only from
``analysis/``.
"""

from variance.attribute_statistics import AttributeStatistics, attribute_statistics, format_attribute_table
from variance.batched_embedder import EmbedderDraw, EmbedderPass, batched_embedder_forward, draw_embedder, iter_draws
from variance.class_variance_share import (
    arccos_kernel_gram,
    check_v3_share,
    iid_attributes,
    measure_class_variance_share,
    predicted_class_variance_share,
)
from variance.estimate import Check, Estimate, bound_check, check, mean_estimate, observation, variance_estimate
from variance.normalize_scale import (
    CosineStatistics,
    check_v1,
    check_v1_discriminating,
    estimate_cosine_variance,
    estimate_cosine_variance_of,
    estimate_logit_variance,
    exact_isotropic_cosine_variance,
    num_pairs_to_resolve,
    predicted_cosine_variance,
    predicted_logit_variance,
    unit_variance_gamma,
)
from variance.profiler import LayerStatistics, VarianceRecorder, profile_at_init, profile_layers, prototypes_entry
from variance.prototype_variance import (
    PrototypeMoments,
    check_v2,
    check_v3,
    check_v4,
    final_layer_variances,
    measure_prototype_moments,
    predicted_hidden_norm_sq,
    predicted_prototype_variance,
    predicted_raw_logit_variance,
)
from variance.report import (
    KINDS,
    ClaimRow,
    format_summary,
    format_variance_table,
    summarize_kinds,
    training_rows,
    variance_report,
)
from variance.standardization_jacobian import (
    autograd_standardization_gradient,
    check_v5,
    predicted_gradient_norm_sq,
    predicted_standardization_gradient,
)
from variance.training_variance import LastLayerTrace, TrainingTrace, check_v4_training, trace_last_layer

__all__ = [
    "KINDS", "AttributeStatistics", "Check", "ClaimRow", "CosineStatistics", "EmbedderDraw", "EmbedderPass",
    "Estimate", "LastLayerTrace", "LayerStatistics", "PrototypeMoments", "TrainingTrace", "VarianceRecorder",
    "arccos_kernel_gram", "bound_check", "check_v1_discriminating", "check_v3_share", "check_v4_training",
    "format_summary", "iid_attributes", "measure_class_variance_share", "num_pairs_to_resolve", "observation",
    "predicted_class_variance_share", "summarize_kinds", "trace_last_layer", "training_rows",
    "attribute_statistics", "autograd_standardization_gradient", "batched_embedder_forward", "check",
    "check_v1", "check_v2", "check_v3", "check_v4", "check_v5", "draw_embedder",
    "estimate_cosine_variance", "estimate_cosine_variance_of", "estimate_logit_variance",
    "exact_isotropic_cosine_variance", "final_layer_variances", "format_attribute_table",
    "format_variance_table", "iter_draws", "mean_estimate", "measure_prototype_moments",
    "predicted_cosine_variance", "predicted_gradient_norm_sq", "predicted_hidden_norm_sq", "predicted_logit_variance",
    "predicted_prototype_variance", "predicted_raw_logit_variance", "predicted_standardization_gradient", "profile_at_init",
    "profile_layers", "prototypes_entry", "unit_variance_gamma", "variance_estimate", "variance_report",
]
